"""The fault suite runs the same stacks as the integration tests."""

from tests.integration.conftest import stack  # noqa: F401  (the worker-process fixture)

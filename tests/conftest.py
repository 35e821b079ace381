"""Session fixtures: a real Kafka and a real Redis, started once (or reused from the environment).

Set SKIPWATCH_TEST_KAFKA_BOOTSTRAP / SKIPWATCH_TEST_REDIS_URL to reuse running servers (what
.ci/run does); otherwise the first test that needs one starts it on a free port in a temp folder.
Each test is isolated by a unique topic prefix and Redis key prefix, never by a fresh server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import infra

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("SKIPWATCH_TEST_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    data = tmp_path_factory.mktemp("infra")
    port, controller = infra.free_port(), infra.free_port()
    infra.kafka_up(data, port, controller)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        infra.kafka_down(data)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("SKIPWATCH_TEST_REDIS_URL")
    if given:
        yield given
        return
    yield from _redis_server(tmp_path_factory.mktemp("infra-redis"))


def _redis_server(folder: Path) -> Iterator[str]:
    """A redis-server of its own on a free port, data in `folder`, stopped afterwards."""
    port = infra.free_port()
    infra.redis_up(folder, port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        infra.redis_down(folder)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    """A Redis of the test's own, for tests that wipe or stop it (never the shared one)."""
    yield from _redis_server(tmp_path)


@pytest.fixture
def topic_prefix() -> str:
    """A unique topic prefix per test: tests share the broker, never topics."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def redis_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


SUITE_MARKERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test carries exactly one suite marker, so `make unit` and `-m integration` select
    the whole suite between them; an unmarked test fails collection instead of being skipped."""
    unmarked = [
        item.nodeid
        for item in items
        if not any(item.get_closest_marker(name) for name in SUITE_MARKERS)
    ]
    if unmarked:
        listing = "\n  ".join(unmarked)
        raise pytest.UsageError(
            f"{len(unmarked)} test(s) carry none of the suite markers {SUITE_MARKERS} "
            f"(add `pytestmark = pytest.mark.unit` or the right one to the module):\n  {listing}"
        )

"""The worker's fail-stop: a failure it cannot handle ends the process with the restart code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.settings import EXIT_RESTART

pytestmark = pytest.mark.unit

FAILING_BATCH = """
from services.logs import configure_logging
from streams.app import exit_for_restart
configure_logging()  # as `skipwatch worker` does
try:
    raise ConnectionError("send not acknowledged")
except ConnectionError:
    exit_for_restart("a batch failed before its input was acknowledged", agent="evaluate")
"""


def test_a_failed_batch_exits_with_the_restart_code_and_logs_why() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FAILING_BATCH], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == EXIT_RESTART
    assert "a batch failed before its input was acknowledged; exiting for a restart" in done.stderr
    assert "send not acknowledged" in done.stderr  # the failure's traceback is in the log

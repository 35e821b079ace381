from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from services.logs import configure_logging

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _keep_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_json_log_line_carries_the_traceback_as_text() -> None:
    configure_logging("INFO", "json")
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        raise KeyError("partition 2")
    except KeyError:
        logging.getLogger("skipwatch.test").exception("a batch failed", extra={"step": "evaluate"})
    line = orjson.loads(stream.getvalue().splitlines()[-1])
    assert line["event"] == "a batch failed"
    assert line["step"] == "evaluate"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "KeyError: 'partition 2'" in line["exception"]
    assert "exc_info" not in line

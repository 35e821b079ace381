"""`skipwatch simulate --kafka` waits for a broker that is still starting, then gives up with an
error that names it (it used to exit with a traceback at topic creation)."""

from __future__ import annotations

import socket
import time

import pytest
from typer.testing import CliRunner

from services.cli import app
from services.settings import get_settings

pytestmark = pytest.mark.unit


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_kafka_retries_then_exits_naming_the_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS", bootstrap)
    get_settings.cache_clear()
    try:
        began = time.monotonic()
        result = CliRunner().invoke(
            app,
            ["simulate", "--loans", "1", "--days", "1", "--kafka", "--kafka-wait", "2"],
        )
        took = time.monotonic() - began
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert f"waiting for Kafka at {bootstrap}" in result.output
    assert f"Kafka at {bootstrap} not reachable for 2 s" in result.output
    assert "SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS" in result.output
    assert "Traceback" not in result.output
    assert 1.0 <= took < 30.0

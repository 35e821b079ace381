"""The operations port: metrics, liveness and readiness over real HTTP on loopback."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from services.ops import Check, Heartbeat, ops_app, serve_ops

pytestmark = pytest.mark.unit


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


class Probes:
    """A heartbeat on a hand-moved clock, and a readiness answer set by the test."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.heartbeat = Heartbeat(60, lambda: self.now)
        self.ready = Check(False, "recovering table state")


@pytest.fixture
def served() -> Iterator[tuple[int, Probes, CollectorRegistry]]:
    probes = Probes()
    registry = CollectorRegistry()
    app = ops_app(probes.heartbeat, lambda: probes.ready, registry=registry)
    server = serve_ops("127.0.0.1", 0, app)
    try:
        yield server.server_port, probes, registry
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_are_served_from_the_given_registry(served: Any) -> None:
    port, _, registry = served
    Counter("skipwatch_test_things_total", "Things.", registry=registry).inc(3)
    status, content_type, body = get(port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert b"skipwatch_test_things_total 3.0" in body


def test_probes_answer_200_or_503_with_the_reason(served: Any) -> None:
    port, probes, _ = served
    status, content_type, body = get(port, "/healthz")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {"status": "ok", "detail": "starting"}

    probes.heartbeat.beat()
    probes.now += 0.2
    assert json.loads(get(port, "/healthz")[2])["detail"] == "event loop heartbeat 0.2 s ago"
    status, _, body = get(port, "/readyz")
    assert status == 503
    assert json.loads(body) == {"status": "unavailable", "detail": "recovering table state"}

    probes.ready = Check(True, "processing")
    assert get(port, "/readyz")[0] == 200
    # a stuck event loop is neither live nor ready, whatever the readiness check would say
    probes.now += 75
    stalled = {"status": "unavailable", "detail": "event loop stalled: no heartbeat for 75 s"}
    for path in ("/healthz", "/readyz"):
        status, _, body = get(port, path)
        assert (status, json.loads(body)) == (503, stalled)


def test_a_probe_that_raises_reports_unavailable_with_the_error(served: Any) -> None:
    _, _, registry = served

    def broken() -> Check:
        raise RuntimeError("no consumer yet")

    app = ops_app(Heartbeat(60), ready=broken, registry=registry)
    server = serve_ops("127.0.0.1", 0, app)
    try:
        status, _, body = get(server.server_port, "/readyz")
    finally:
        server.shutdown()
        server.server_close()
    assert status == 503
    assert "no consumer yet" in json.loads(body)["detail"]


def test_unknown_paths_and_methods_are_refused(served: Any) -> None:
    port, _, _ = served
    status, _, body = get(port, "/admin")
    assert status == 404
    assert json.loads(body) == {"detail": "no route /admin"}
    assert get(port, "/healthz", method="POST")[0] == 405

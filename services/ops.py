"""The operations port of a process without an HTTP API of its own (the worker, the JT/T 808
gateway): Prometheus metrics at `/metrics`, liveness at `/healthz`, readiness at `/readyz`.

It runs in a thread of its own (prometheus-client's threaded WSGI server), so metrics can still
be scraped while the process's event loop is stuck; liveness is therefore judged by the
process (its checks), not by whether this thread answers. `/healthz` and `/readyz` answer
200 or 503 with a JSON body that says why: `{"status": "ok" | "unavailable", "detail": ...}`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


class Heartbeat:
    """Liveness from an event loop's heartbeat: a task of the loop calls `beat` every fraction
    of a second; no beat for `stall_s` means the loop is stuck (a callback that never returns,
    a blocking call) and the process should be restarted. Before the first beat the process is
    starting and counts as live."""

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.clock = clock
        self.last_beat: float | None = None

    def beat(self) -> None:
        self.last_beat = self.clock()

    def check(self) -> Check:
        if self.last_beat is None:
            return Check(True, "starting")
        age = self.clock() - self.last_beat
        if age > self.stall_s:
            return Check(False, f"event loop stalled: no heartbeat for {age:.0f} s")
        return Check(True, f"event loop heartbeat {age:.1f} s ago")


StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def ops_app(
    heartbeat: Heartbeat,
    ready: Callable[[], Check],
    registry: CollectorRegistry = REGISTRY,
) -> WsgiApp:
    """`/healthz` is the heartbeat's check; `/readyz` is that too when it fails (a stuck process
    is not ready either), else `ready()`."""
    metrics = make_wsgi_app(registry)

    def readiness() -> Check:
        live = heartbeat.check()
        return ready() if live.ok else live

    probes = {"/healthz": heartbeat.check, "/readyz": readiness}

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        probe = probes.get(path)
        if probe is None:
            return _json(start_response, "404 Not Found", {"detail": f"no route {path}"})
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return _json(start_response, "405 Method Not Allowed", {"detail": "use GET"})
        try:
            check = probe()
        except Exception as exc:  # a probe that fails says so instead of dropping the request
            check = Check(False, f"check failed: {exc!r}")
        status = "200 OK" if check.ok else "503 Service Unavailable"
        body = {"status": "ok" if check.ok else "unavailable", "detail": check.detail}
        return _json(start_response, status, body)

    return app


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no log
        pass


def serve_ops(host: str, port: int, app: WsgiApp) -> ThreadingWSGIServer:
    """Serve `app` on host:port from a daemon thread; port 0 picks a free one
    (`server.server_port`)."""

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, port, app, Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="ops-http", daemon=True).start()
    return server

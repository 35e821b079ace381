"""A real HTTP receiver on 127.0.0.1 for notification tests, answering from a script."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# A Fernet key for the webhook secrets the tests store (notify.secret_keys).
SECRET_KEY = "nY-Y88DlGJQvEKHZBN49iAQqcHgJZW1jVcfxLhVr-_g="


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = 0.0  # time.monotonic() when it arrived


@dataclass
class LocalReceiver:
    """`answer(n, request)` gives the status of the n-th request (0-based) to a path."""

    answer: Callable[[int, Received], int] = lambda n, r: 200
    received: list[Received] = field(default_factory=list)
    port: int = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def accepted(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        item = Received(request.url.path, dict(request.headers), body, 0, time.monotonic())
        count = sum(1 for r in self.received if r.path == item.path)
        item.status = self.answer(count, item)
        self.received.append(item)
        return Response(status_code=item.status, content=b'{"errcode":0,"errmsg":"ok"}')

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LocalReceiver]:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.02)
        try:
            yield self
        finally:
            server.should_exit = True
            await task
            sock.close()


async def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)

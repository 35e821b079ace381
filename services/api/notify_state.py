"""The notification state (services/notify/state.py) as an API dependency.

Started on the first request that needs it (replaying the compacted notification topics) and
stopped with the app, so routes that never touch notifications cost nothing."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from services.api.errors import ServiceUnavailable
from services.notify.ssrf import AllowList, SsrfGuard
from services.notify.state import NotifyState
from services.settings import Settings

START_TIMEOUT_S = 30.0


class NotifyContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.guard = SsrfGuard(AllowList.parse(settings.notify.allow_list))
        self._state: NotifyState | None = None
        self._lock = asyncio.Lock()

    async def state(self) -> NotifyState:
        async with self._lock:
            if self._state is None:
                state = NotifyState(self.settings)
                try:
                    await asyncio.wait_for(state.start(), START_TIMEOUT_S)
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        await state.stop()
                    raise ServiceUnavailable(
                        f"notification state not readable from Kafka: {exc!r}"
                    ) from None
                self._state = state
            return self._state

    async def close(self) -> None:
        if self._state is not None:
            await self._state.stop()
            self._state = None


def install_notify(app: FastAPI, settings: Settings) -> None:
    app.state.notify = NotifyContext(settings)


async def close_notify(app: FastAPI) -> None:
    context: NotifyContext | None = getattr(app.state, "notify", None)
    if context is not None:
        await context.close()


def notify_context(request: Request) -> NotifyContext:
    context: NotifyContext = request.app.state.notify
    return context


async def notify_state(request: Request) -> NotifyState:
    return await notify_context(request).state()


NotifyContextDep = Annotated[NotifyContext, Depends(notify_context)]
NotifyStateDep = Annotated[NotifyState, Depends(notify_state)]

"""Which notification silences mute an alert now, for `GET /v1/alerts` and `/v1/alerts/{id}`.

The silences live in the compacted `<prefix>notify.silences` topic (services/notify). The API
reads that topic alone here, in the background, from the first alert request on (so that listing
alerts never waits for Kafka): until it has been read to its end, alerts carry `silenced: null`
(not known yet), then `silenced: true|false` and the ids of the active silences whose matchers
match the alert's labels (the same matching the dispatcher applies).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from rules.events import AlertEvent
from services.notify.records import SilenceRecord
from services.notify.routing import alert_labels
from services.notify.state import SILENCES, Table
from services.settings import Settings

log = logging.getLogger(__name__)
RETRY_S = 5.0


class SilenceWatch:
    def __init__(self, settings: Settings, fixed: dict[str, SilenceRecord] | None = None) -> None:
        """`fixed`: these silences, no Kafka (unit tests)."""
        self._settings = settings
        self._fixed = fixed
        self._table: Table[SilenceRecord] | None = None
        self._task: asyncio.Task[None] | None = None

    def ensure_started(self) -> None:
        if self._fixed is None and self._task is None:
            self._task = asyncio.create_task(self._follow(), name="silence-watch")

    async def _follow(self) -> None:
        while True:
            table = Table(self._settings, SILENCES, SilenceRecord)
            try:
                await table.start()
            except Exception as exc:
                log.warning("silences not readable yet; retrying",
                            extra={"error": repr(exc)[:300]})  # fmt: skip
                with contextlib.suppress(Exception):
                    await table.stop()
                await asyncio.sleep(RETRY_S)
                continue
            self._table = table
            return

    def items(self) -> dict[str, SilenceRecord] | None:
        if self._fixed is not None:
            return self._fixed
        return self._table.items if self._table is not None else None

    def muting(self, alert: AlertEvent, now: dt.datetime) -> list[str] | None:
        """Ids of the active silences muting the alert (its effective state), oldest first;
        None while the silences were not read yet."""
        items = self.items()
        if items is None:
            return None
        labels = alert_labels(alert)
        found = [r for r in items.values() if r.mutes(labels, now)]
        return [r.id for r in sorted(found, key=lambda r: (r.starts_at, r.id))]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._table is not None:
            await self._table.stop()


def install_silence_watch(app: FastAPI, settings: Settings, watch: SilenceWatch | None) -> None:
    app.state.silence_watch = watch or SilenceWatch(settings)


async def close_silence_watch(app: FastAPI) -> None:
    watch: SilenceWatch | None = getattr(app.state, "silence_watch", None)
    if watch is not None:
        await watch.close()


async def silence_watch(request: Request) -> SilenceWatch:
    watch: SilenceWatch = request.app.state.silence_watch
    watch.ensure_started()
    return watch


SilenceWatchDep = Annotated[SilenceWatch, Depends(silence_watch)]

"""`GET /v1/overview/failures`: records dead-lettered and notification deliveries that failed.

- **Dead letters**: every record in `<prefix>deadletter` (the workers' and the ingest API's
  rejects; the reason is the `skipwatch-reason` header, a bounded code), counted in total and
  over the last 24 h (by the Kafka record timestamp, i.e. when it was dead-lettered), per
  reason. A reader started on the first request replays the topic from the beginning and then
  tails it, like the notification tables (services/notify/state.py): Kafka is the truth, so the
  figures are exact for whatever the topic retains (its retention bounds "total").
- **Deliveries**: the dispatcher's delivery records (`<prefix>notify.deliveries`, compacted, read
  through the shared notification state): `dead` (retries exhausted) and `failed` (a permanent
  refusal), in total and with their last attempt in the last 24 h, per receiver kind, plus
  those still `pending`.

Kept apart from `GET /v1/overview` (figures over the Redis view) so the overview never waits on
Kafka; the dashboard's overview page asks both.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import Counter
from typing import Annotated

from aiokafka import ConsumerRecord
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field

from services.api.alerts import utcnow
from services.api.deps import ViewerPrincipal
from services.api.errors import ServiceUnavailable
from services.api.notify_state import NotifyContextDep
from services.api.schemas import ErrorBody
from services.notify.state import TopicFollower
from services.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["alerts"])

START_TIMEOUT_S = 30.0
WINDOW = dt.timedelta(hours=24)
# Reasons written by the workers (streams/records.py, streams/quarantine.py) and the ingest API
# (services/api/pipeline.py); anything else (a foreign producer) counts as "other".
REASONS = frozenset(
    {
        "undecodable", "invalid", "future_timestamp", "processing_error", "state_undecodable",
        "unencodable_state", "invalid_event", "too_deep", "vendor_mismatch", "loan_id_mismatch",
    }
)  # fmt: skip
REASON_HEADER = "skipwatch-reason"


def reason_of(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...] | None) -> str:
    """The record's bounded reason code: a known one, `other`, or `unknown` without a header."""
    for key, value in headers or ():
        if key == REASON_HEADER:
            reason = value.decode(errors="replace")
            return reason if reason in REASONS else "other"
    return "unknown"


class DeadLetterTally(TopicFollower):
    """Counts of `<prefix>deadletter` by reason: all of them, and their timestamps (ms) for the
    sliding 24 h (only those of the last 24 h are kept)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.topic("deadletter"), "deadletter-tally")
        self.total: Counter[str] = Counter()
        self._recent: list[tuple[int, str]] = []

    def add(self, timestamp_ms: int, reason: str, now: dt.datetime) -> None:
        self.total[reason] += 1
        if timestamp_ms >= _ms(now - WINDOW):
            self._recent.append((timestamp_ms, reason))
        if len(self._recent) > 10_000:
            self.recent(now)  # prune

    def recent(self, now: dt.datetime) -> Counter[str]:
        cutoff = _ms(now - WINDOW)
        self._recent = [(ts, reason) for ts, reason in self._recent if ts >= cutoff]
        return Counter(reason for _, reason in self._recent)

    def handle(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        now = utcnow()
        for record in records:
            self.add(record.timestamp, reason_of(record.headers), now)


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


class FailuresContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tally: DeadLetterTally | None = None
        self._lock = asyncio.Lock()

    async def tally(self) -> DeadLetterTally:
        async with self._lock:
            if self._tally is None:
                tally = DeadLetterTally(self.settings)
                try:
                    await asyncio.wait_for(tally.start(), START_TIMEOUT_S)
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        await tally.stop()
                    raise ServiceUnavailable(
                        f"dead-letter topic not readable from Kafka: {exc!r}"
                    ) from None
                self._tally = tally
            return self._tally

    async def close(self) -> None:
        if self._tally is not None:
            await self._tally.stop()
            self._tally = None


def install_failures(app: FastAPI, settings: Settings) -> None:
    app.state.failures = FailuresContext(settings)


async def close_failures(app: FastAPI) -> None:
    context: FailuresContext | None = getattr(app.state, "failures", None)
    if context is not None:
        await context.close()


async def _tally(request: Request) -> DeadLetterTally:
    context: FailuresContext = request.app.state.failures
    return await context.tally()


TallyDep = Annotated[DeadLetterTally, Depends(_tally)]


class Counts(BaseModel):
    total: int
    last_24h: int


class DeadLetters(Counts):
    by_reason: dict[str, Counts] = Field(
        description="Per reason code (see docs/dashboard.md); reasons never seen are left out."
    )


class DeliveryFailures(BaseModel):
    dead: Counts = Field(description="Retries exhausted (`state: dead`).")
    failed: Counts = Field(description="Refused for good, e.g. 4xx or gone (`state: failed`).")
    pending: int = Field(description="Deliveries still being attempted.")
    by_receiver_kind: dict[str, Counts] = Field(description="dead + failed, per receiver kind.")


class FailuresOut(BaseModel):
    generated_at: dt.datetime
    dead_letters: DeadLetters
    deliveries: DeliveryFailures


def _counts(total: Counter[str], recent: Counter[str], key: str) -> Counts:
    return Counts(total=total[key], last_24h=recent[key])


@router.get(
    "/overview/failures",
    summary="Dead-lettered records and failed notification deliveries, in total and last 24 h",
    response_model=FailuresOut,
    responses={
        401: {"model": ErrorBody, "description": "No credential or an unknown one."},
        403: {"model": ErrorBody, "description": "Vendor ingest keys may not read alerts."},
        503: {"model": ErrorBody, "description": "Kafka not readable."},
    },
)
async def failures(who: ViewerPrincipal, tally: TallyDep, notify: NotifyContextDep) -> FailuresOut:
    """See the module notes: dead letters by reason; dead and failed deliveries."""
    now = utcnow()
    state = await notify.state()
    recent = tally.recent(now)
    dead_letters = DeadLetters(
        total=sum(tally.total.values()),
        last_24h=sum(recent.values()),
        by_reason={r: _counts(tally.total, recent, r) for r in sorted(tally.total)},
    )
    totals: Counter[str] = Counter()
    last: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    kinds_last: Counter[str] = Counter()
    for record in state.deliveries.items.values():
        totals[record.state] += 1
        if record.state not in ("dead", "failed"):
            continue
        kinds[record.receiver_kind] += 1
        at = record.attempts[-1].at if record.attempts else record.created_at
        if at >= now - WINDOW:
            last[record.state] += 1
            kinds_last[record.receiver_kind] += 1
    return FailuresOut(
        generated_at=now,
        dead_letters=dead_letters,
        deliveries=DeliveryFailures(
            dead=_counts(totals, last, "dead"),
            failed=_counts(totals, last, "failed"),
            pending=totals["pending"],
            by_receiver_kind={k: _counts(kinds, kinds_last, k) for k in sorted(kinds)},
        ),
    )

"""The ingest pipeline: validate each item, dead-letter rejects, skip repeats, write, wait for acks.

No web framework here: routes hand in decoded JSON and a principal's vendor; this returns counts
and per-item rejects, or raises `ServiceUnavailable` when Kafka did not acknowledge everything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from rules.events import (
    ContactAttempt,
    GpsPing,
    Loan,
    PaymentEvent,
    describe_validation_error,
    error_items,
)
from rules.events.bounds import MAX_JSON_DEPTH, clip_depth, depth_problem
from services.api.dedup import DedupStore, DedupUnavailable
from services.api.errors import ServiceUnavailable
from services.api.metrics import ApiMetrics
from services.api.publisher import OutRecord, Publisher
from services.api.traccar import DEFAULT_VENDOR, TraccarForward, map_forward
from services.kafka import deadletter_headers
from services.settings import Settings

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5

# Bounded reject reasons (also the `reason` metric label and the dead-letter header).
REASON_INVALID = "invalid_event"
REASON_TOO_DEEP = "too_deep"


def too_deep_errors(value: Any) -> list[dict[str, Any]] | None:
    """The per-item error for a value nesting deeper than the bound, or None."""
    path = depth_problem(value)
    if path is None:
        return None
    return [
        {
            "field": path,
            "message": f"nested deeper than {MAX_JSON_DEPTH} levels",
            "type": REASON_TOO_DEEP,
        }
    ]


def deadletter_value(original: Any) -> bytes:
    """The JSON a dead letter carries: the item as sent, or, when it cannot be written (orjson
    writes at most 254 levels), the item with its too-deep parts replaced by a marker."""
    try:
        return orjson.dumps(original)
    except (orjson.JSONEncodeError, TypeError):
        return orjson.dumps(clip_depth(original))


@dataclass(frozen=True)
class Source:
    """One ingest route's target: metric label, topic (unprefixed), event model and Kafka key."""

    name: str
    topic: str
    model: type[BaseModel]
    key_field: str
    dedup: bool = True


GPS = Source("gps", "gps.raw", GpsPing, "device_id")
TRACCAR = Source("traccar", "gps.raw", GpsPing, "device_id")
PAYMENTS = Source("payments", "payments", PaymentEvent, "loan_id")
CONTACTS = Source("contacts", "contacts", ContactAttempt, "loan_id")
# Loans have no event_id: a PUT is idempotent by itself (compacted topic, the latest value wins).
LOANS = Source("loans", "loans", Loan, "loan_id", dedup=False)


@dataclass
class IngestOutcome:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    ignored: int = 0

    def body(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "ignored": self.ignored,
        }


@dataclass(slots=True)
class _Batch:
    """What one request will write."""

    records: list[OutRecord] = field(default_factory=list)
    dead: list[OutRecord] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    reject_reasons: list[str] = field(default_factory=list)
    principal: str = ""  # who sent it, for the dead-letter headers (a role or vendor:<name>)


def _fill_errors(item: dict[str, Any], fill: dict[str, str]) -> tuple[dict[str, Any], str | None]:
    """Apply values the credential or the URL dictates: absent → filled, different → rejected."""
    for name, value in fill.items():
        given = item.get(name)
        if given is None:
            item = {**item, name: value}
        elif given != value:
            return item, name
    return item, None


class IngestPipeline:
    def __init__(
        self,
        *,
        settings: Settings,
        publisher: Publisher,
        dedup: DedupStore,
        metrics: ApiMetrics,
    ) -> None:
        self._settings = settings
        self._publisher = publisher
        self._dedup = dedup
        self._metrics = metrics
        self._deadletter_topic = settings.topic("deadletter")
        self._window = settings.bounds.window()

    async def ingest(
        self,
        source: Source,
        items: Sequence[Any],
        *,
        fill: dict[str, str] | None = None,
        principal: str = "",
        originals: Sequence[Any] | None = None,
    ) -> IngestOutcome:
        """Validate and write `items` (decoded JSON values) for `source`.

        `originals` (same length) are what a rejected item's dead letter carries instead of the
        item, for adapters that converted the sender's format first (Traccar).
        """
        batch = _Batch(principal=principal)
        topic = self._settings.topic(source.topic)
        # model_validate without its Python wrapper (same validator, same defaults); event times
        # are checked against this request's arrival.
        validate = partial(
            source.model.__pydantic_validator__.validate_python,
            context=self._window.context(time.time()),
        )
        to_json = source.model.__pydantic_serializer__.to_json
        key_field = source.key_field
        for index, item in enumerate(items):
            original = item if originals is None else originals[index]
            deep = too_deep_errors(item)
            if deep is not None:
                detail = f"{deep[0]['field']}: {deep[0]['message']}"
                self._reject(batch, source, index, item, original, REASON_TOO_DEEP, deep, detail)
                continue
            if fill and isinstance(item, dict):
                item, mismatch = _fill_errors(item, fill)
                if mismatch is not None:
                    errors = [
                        {
                            "field": mismatch,
                            "message": f"must be {fill[mismatch]!r} for this request",
                            "type": "value_mismatch",
                        }
                    ]
                    detail = f"{mismatch}: must be {fill[mismatch]!r}"
                    self._reject(
                        batch, source, index, item, original, f"{mismatch}_mismatch", errors, detail
                    )
                    continue
            try:
                event = validate(item)
            except ValidationError as exc:
                errors = [{**e, "field": e["field"] or "(item)"} for e in error_items(exc)]
                detail = describe_validation_error(exc)
                self._reject(batch, source, index, item, original, REASON_INVALID, errors, detail)
                continue
            batch.records.append(
                OutRecord(
                    topic=topic,
                    key=getattr(event, key_field).encode(),
                    value=to_json(event),
                    dedup_id=getattr(event, "event_id", None) if source.dedup else None,
                )
            )
        outcome = IngestOutcome(rejected=batch.rejected)
        await self._commit(source, batch, outcome)
        return outcome

    async def ingest_traccar(
        self, payload: Any, *, vendor: str | None, principal: str = ""
    ) -> IngestOutcome:
        """One Traccar forward message: map it to a GpsPing, then ingest like any other ping."""
        source = TRACCAR
        deep = too_deep_errors(payload)
        if deep is not None:
            detail = f"{deep[0]['field']}: {deep[0]['message']}"
            return await self._reject_one(source, payload, principal, REASON_TOO_DEEP, deep, detail)
        try:
            forward = TraccarForward.model_validate(payload)
        except ValidationError as exc:
            errors = [{**e, "field": e["field"] or "(body)"} for e in error_items(exc)]
            detail = describe_validation_error(exc)
            return await self._reject_one(
                source, payload, principal, REASON_INVALID, errors, detail
            )
        mapping = map_forward(forward, vendor=vendor or DEFAULT_VENDOR)
        if mapping.unmapped_alarms:
            log.debug("unmapped Traccar alarms", extra={"alarms": list(mapping.unmapped_alarms)})
        if mapping.ping is None:
            self._metrics.ignored.labels(source.name, mapping.ignored or "unknown").inc()
            return IngestOutcome(ignored=1)
        return await self.ingest(source, [mapping.ping], originals=[payload], principal=principal)

    async def _reject_one(
        self,
        source: Source,
        payload: Any,
        principal: str,
        reason: str,
        errors: list[dict[str, Any]],
        detail: str,
    ) -> IngestOutcome:
        batch = _Batch(principal=principal)
        self._reject(batch, source, 0, payload, payload, reason, errors, detail)
        outcome = IngestOutcome(rejected=batch.rejected)
        await self._commit(source, batch, outcome)
        return outcome

    def _reject(
        self,
        batch: _Batch,
        source: Source,
        index: int,
        item: Any,
        original: Any,
        reason: str,
        errors: list[dict[str, Any]],
        detail: str,
    ) -> None:
        event_id = item.get("event_id") if isinstance(item, dict) else None
        raw_key = item.get(source.key_field) if isinstance(item, dict) else None
        batch.rejected.append(
            {
                "index": index,
                "event_id": event_id if isinstance(event_id, str) else None,
                "reason": reason,
                "errors": errors,
            }
        )
        batch.reject_reasons.append(reason)
        headers = deadletter_headers(reason, self._settings.topic(source.topic), detail)
        headers.append(("skipwatch-ingest-source", f"http:{source.name}".encode()))
        if batch.principal:
            headers.append(("skipwatch-principal", batch.principal.encode()))
        batch.dead.append(
            OutRecord(
                topic=self._deadletter_topic,
                key=raw_key.encode() if isinstance(raw_key, str) else None,
                value=deadletter_value(original),
                headers=headers,
            )
        )

    async def _commit(self, source: Source, batch: _Batch, outcome: IngestOutcome) -> None:
        to_write = await self._skip_duplicates(source, batch.records, outcome)
        started = time.perf_counter()
        result = await self._publisher.publish([*to_write, *batch.dead])
        self._metrics.produce_seconds.labels(source.name).observe(time.perf_counter() - started)

        acked_ids = [r.dedup_id for r in result.acked if r.dedup_id is not None]
        if acked_ids:
            try:
                await self._dedup.mark(source.topic, acked_ids)
            except DedupUnavailable:
                self._metrics.dedup_errors.inc()
        acked_events = sum(1 for r in result.acked if r.topic != self._deadletter_topic)
        if acked_events:
            self._metrics.accepted.labels(source.name).inc(acked_events)
        if result.error is not None:
            self._metrics.unavailable.labels(source.name).inc()
            log.warning(
                "Kafka did not acknowledge an ingest request",
                extra={
                    "source": source.name,
                    "records": len(to_write) + len(batch.dead),
                    "acked": len(result.acked),
                    "error": repr(result.error),
                },
            )
            raise ServiceUnavailable(
                "Kafka did not acknowledge the write in time; retry the whole request "
                "(items already written are recognised by event_id)",
                retry_after_s=RETRY_AFTER_S,
            )
        for reason in batch.reject_reasons:
            self._metrics.rejected.labels(source.name, reason).inc()
        if outcome.duplicates:
            self._metrics.duplicates.labels(source.name).inc(outcome.duplicates)
        outcome.accepted = len(to_write)

    async def _skip_duplicates(
        self, source: Source, records: list[OutRecord], outcome: IngestOutcome
    ) -> list[OutRecord]:
        if not source.dedup or not records:
            return records
        unique: list[OutRecord] = []
        in_request: set[str] = set()
        for record in records:
            assert record.dedup_id is not None
            if record.dedup_id in in_request:
                continue
            in_request.add(record.dedup_id)
            unique.append(record)
        try:
            known = await self._dedup.seen(source.topic, list(in_request))
        except DedupUnavailable:
            self._metrics.dedup_errors.inc()
            known = set()
        fresh = [r for r in unique if r.dedup_id not in known] if known else unique
        outcome.duplicates = len(records) - len(fresh)
        return fresh

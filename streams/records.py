"""Decoding input records: one place that turns raw bytes into events or a dead-letter reason."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import orjson
from pydantic import TypeAdapter, ValidationError

from rules.events import EVENT_TYPE_BY_TOPIC, GpsPing, InputEvent, describe_validation_error
from rules.events.bounds import TimeWindow


@dataclass(frozen=True)
class Rejected:
    # bounded, a metric label: "undecodable" | "invalid" | "future_timestamp" (the worker's time
    # bound) | "ahead_of_clock" (the engine's: FutureEventError) | "processing_error" |
    # "state_undecodable" | "unencodable_state" (quarantine.py)
    reason: str
    detail: str


def decode(
    topic: str,
    value: bytes | None,
    *,
    window: TimeWindow | None = None,
    received_at: float | None = None,
) -> InputEvent | Rejected:
    """Validate one record of an (unprefixed) input topic against the front-door bounds
    (rules/events/bounds.py); with `window` and `received_at` (the record's timestamp) also
    its event time against the window around its arrival."""
    if not value:
        return Rejected("undecodable", "empty record value")
    context = window.context(received_at) if window and received_at is not None else None
    try:
        return EVENT_TYPE_BY_TOPIC[topic].model_validate_json(value, context=context)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors(include_url=False)):
            return Rejected("undecodable", describe_validation_error(exc))
        return Rejected("invalid", describe_validation_error(exc))


BOUND_RECORD_MAX_BYTES = 512 * 1024  # well under Kafka's 1 MiB default message limit


Bound = tuple[str, bytes, int]  # (loan id, the ping's validated JSON, its arrival in ms)


def encode_bound(entries: list[Bound]) -> bytes:
    """One gps.bound record for many pings of one partition: ``[[loan_id, ping, arrival], ...]``.

    The pings are the validated raw JSON as received, spliced in without re-encoding. Batching
    them costs one produce and one consumed record per partition and batch instead of one per
    ping. Each keeps the Kafka timestamp of the gps.raw record it came in (ms): re-keying must
    not change when a ping arrived (rules/clock.py).
    """
    return (
        b"["
        + b",".join(
            b"[" + orjson.dumps(loan) + b"," + raw + b"," + str(arrival).encode() + b"]"
            for loan, raw, arrival in entries
        )
        + b"]"
    )


def bound_records(entries: list[Bound], max_bytes: int = BOUND_RECORD_MAX_BYTES) -> Iterator[bytes]:
    """`entries` as gps.bound records of at most about `max_bytes` each, in order.

    A batch that releases many pending pings at once (a backlog replayed before the loans'
    devices were bound) would otherwise make one record larger than the producer and the broker
    accept, and the batch would fail again on every restart.
    """
    chunk: list[Bound] = []
    size = 0
    for entry in entries:
        cost = len(entry[1]) + len(entry[0]) + 24
        if chunk and size + cost > max_bytes:
            yield encode_bound(chunk)
            chunk, size = [], 0
        chunk.append(entry)
        size += cost
    if chunk:
        yield encode_bound(chunk)


_BOUND = TypeAdapter(list[tuple[str, GpsPing, int]])


def decode_bound(value: bytes) -> list[tuple[str, GpsPing | Rejected, float | None]]:
    """The (loan id, ping, arrival in epoch seconds) entries of a gps.bound record: parsed and
    validated in one pass (the pings were validated when bound); a record that fails as a whole
    is taken apart ping by ping so only the bad ones are rejected. Entries without an arrival
    (written before arrivals were carried) get None: the record's own timestamp stands in."""
    try:
        return [(loan, ping, ms / 1000.0) for loan, ping, ms in _BOUND.validate_json(value)]
    except ValidationError:
        pass
    items: list[tuple[str, GpsPing | Rejected, float | None]] = []
    for entry in orjson.loads(value):
        loan_id, ping = entry[0], entry[1]
        arrival = entry[2] / 1000.0 if len(entry) > 2 and isinstance(entry[2], int) else None
        try:
            items.append((str(loan_id), GpsPing.model_validate(ping), arrival))
        except ValidationError as exc:
            items.append(
                (str(loan_id), Rejected("invalid", describe_validation_error(exc)), arrival)
            )
    return items


# A watermark mark on gps.bound (rules/clock.py, `Mark`): a record with this header and no pings.
MARK_HEADER = "skipwatch-mark"
SourceMark = tuple[int, float | None, int | None]  # (gps.raw partition, watermark, through)


def encode_marks(marks: list[SourceMark]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """(value, headers) of one mark record: ``{"marks": [[partition, watermark, through]]}``
    (watermark in epoch seconds, None when nothing was forwarded yet)."""
    value = orjson.dumps({"marks": [list(mark) for mark in marks]})
    return value, [(MARK_HEADER, b"1")]


def is_mark(headers: object) -> bool:
    """Whether a gps.bound record is a mark (its headers as the consumer gives them: a
    sequence of (key, value) pairs or a mapping)."""
    if not headers:
        return False
    if isinstance(headers, dict):
        return MARK_HEADER in headers
    return any(isinstance(h, tuple) and h and h[0] == MARK_HEADER for h in headers)  # type: ignore[attr-defined]


def decode_marks(value: bytes) -> list[SourceMark]:
    """The marks of a mark record; ValueError naming the problem when it is not one."""
    try:
        body = orjson.loads(value)
        marks = body["marks"]
        out: list[SourceMark] = []
        for partition, watermark, through in marks:
            if not isinstance(partition, int) or partition < 0:
                raise ValueError(f"partition {partition!r} is not a partition number")
            if watermark is not None and not isinstance(watermark, int | float):
                raise ValueError(f"watermark {watermark!r} is not a number")
            if through is not None and (not isinstance(through, int) or through < 0):
                raise ValueError(f"through {through!r} is not an offset")
            out.append((partition, None if watermark is None else float(watermark), through))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a gps.bound mark: {exc}") from exc
    return out

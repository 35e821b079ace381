"""Decoding input records: one place that turns raw bytes into events or a dead-letter reason."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
from pydantic import TypeAdapter, ValidationError

from rules.events import EVENT_TYPE_BY_TOPIC, GpsPing, InputEvent, describe_validation_error


@dataclass(frozen=True)
class Rejected:
    # bounded, a metric label: "undecodable" | "invalid" | "future_timestamp" (the worker's time
    # bound) | "processing_error" | "state_undecodable" | "unencodable_state" (quarantine.py)
    reason: str
    detail: str


def decode(topic: str, value: bytes | None) -> InputEvent | Rejected:
    """Validate one record of an (unprefixed) input topic."""
    if not value:
        return Rejected("undecodable", "empty record value")
    try:
        return EVENT_TYPE_BY_TOPIC[topic].model_validate_json(value)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors(include_url=False)):
            return Rejected("undecodable", describe_validation_error(exc))
        return Rejected("invalid", describe_validation_error(exc))


@dataclass(frozen=True)
class Binding:
    """A device bound to (or released by) a loan, as of the loan record's Kafka timestamp.

    Loans live on different partitions, so their records are processed in no particular
    order: the newest loan record naming a device wins, whatever order they arrive in.
    """

    loan_id: str
    bound: bool
    version: int  # the loan record's timestamp, ms

    def to_bytes(self) -> bytes:
        return orjson.dumps({"loan_id": self.loan_id, "bound": self.bound, "version": self.version})

    @classmethod
    def from_bytes(cls, value: bytes) -> Binding:
        data = orjson.loads(value)
        return cls(str(data["loan_id"]), bool(data["bound"]), int(data["version"]))

    def supersedes(self, current: Binding | None) -> bool:
        """Whether this change applies on top of the binding held now."""
        if current is None:
            return self.bound
        if self.bound:
            return self.version >= current.version
        # a release only undoes the releasing loan's own binding, never a newer one
        return current.loan_id == self.loan_id and self.version >= current.version


BOUND_RECORD_MAX_BYTES = 512 * 1024  # well under Kafka's 1 MiB default message limit


def encode_bound(entries: list[tuple[str, bytes]]) -> bytes:
    """One gps.bound record for many pings of one partition: ``[[loan_id, ping], ...]``.

    The pings are the validated raw JSON as received, spliced in without re-encoding. Batching
    them costs one produce and one consumed record per partition and batch instead of one per
    ping.
    """
    return (
        b"["
        + b",".join(b"[" + orjson.dumps(loan) + b"," + raw + b"]" for loan, raw in entries)
        + b"]"
    )


def bound_records(
    entries: list[tuple[str, bytes]], max_bytes: int = BOUND_RECORD_MAX_BYTES
) -> Iterator[bytes]:
    """`entries` as gps.bound records of at most about `max_bytes` each, in order.

    A batch that releases many pending pings at once (a backlog replayed before the loans'
    devices were bound) would otherwise make one record larger than the producer and the broker
    accept, and the batch would fail again on every restart.
    """
    chunk: list[tuple[str, bytes]] = []
    size = 0
    for loan_id, raw in entries:
        cost = len(raw) + len(loan_id) + 8
        if chunk and size + cost > max_bytes:
            yield encode_bound(chunk)
            chunk, size = [], 0
        chunk.append((loan_id, raw))
        size += cost
    if chunk:
        yield encode_bound(chunk)


_BOUND = TypeAdapter(list[tuple[str, GpsPing]])


def decode_bound(value: bytes) -> list[tuple[str, GpsPing | Rejected]]:
    """The (loan id, ping) pairs of a gps.bound record: parsed and validated in one pass (the
    pings were validated when bound); a record that fails as a whole is taken apart ping by
    ping so only the bad ones are rejected."""
    try:
        return _BOUND.validate_json(value)  # type: ignore[return-value]
    except ValidationError:
        pass
    items: list[tuple[str, GpsPing | Rejected]] = []
    for loan_id, ping in orjson.loads(value):
        try:
            items.append((str(loan_id), GpsPing.model_validate(ping)))
        except ValidationError as exc:
            items.append((str(loan_id), Rejected("invalid", describe_validation_error(exc))))
    return items


@dataclass(frozen=True)
class PlaceMove:
    """A loan's vehicle entered or left a risk place (keyed by place id on `place-moves`)."""

    loan_id: str
    entered: bool
    at: float

    def to_bytes(self) -> bytes:
        return orjson.dumps({"loan_id": self.loan_id, "entered": self.entered, "at": self.at})

    @classmethod
    def from_bytes(cls, value: bytes) -> PlaceMove:
        data = orjson.loads(value)
        at = float(data["at"])
        if not math.isfinite(at):
            raise ValueError(f"place move time is {at}")
        return cls(str(data["loan_id"]), bool(data["entered"]), at)


@dataclass(frozen=True)
class PlaceCount:
    """How many financed cars are at a place now (keyed by loan id on `place-counts`)."""

    place_id: str
    count: int

    def to_bytes(self) -> bytes:
        return orjson.dumps({"place_id": self.place_id, "count": self.count})

    @classmethod
    def from_bytes(cls, value: bytes) -> PlaceCount:
        data = orjson.loads(value)
        return cls(str(data["place_id"]), int(data["count"]))

"""The records the pipeline sends itself: device bindings, place moves and place counts.

Kafka records in the worker (`device-bindings`, `place-moves`, `place-counts`), values in a
dict in the backtest; encoded the same way in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson


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

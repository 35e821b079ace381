"""Per-loan state: what events leave behind, stored compactly.

Times are float epoch seconds (cheap arithmetic; float round-trips exactly through orjson).
``to_bytes``/``from_bytes`` use short keys and omit defaults so a typical active loan stays well
under 2 KiB. Only ``dirty`` and the region object are transient: both are recomputed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, ClassVar

import orjson

_NO_DEADLINE = float("inf")  # cached "nothing scheduled": not stored (JSON has no infinity)


class StateEncodingError(ValueError):
    """A state that cannot be stored so that it reads back the same: a NaN or an infinite number
    (JSON has neither; orjson would write `null`), or an integer beyond 64 bits. Raised when the
    state is written, so the record that made it is refused, instead of when it is read back."""


class StateDecodingError(ValueError):
    """Stored state bytes that are not a loan state this code wrote (corrupt, or written by a
    version that stored `null` for a non-finite number)."""


# Fix quality: what a position can be trusted for.
FIX_GPS, FIX_WIFI, FIX_LBS = 0, 1, 2


@dataclass(slots=True)
class DeviceState:
    kind: str  # "wired" | "wireless"
    bound_at: float | None = None  # when the loan first listed it (offline counts from here)
    last_seen: float | None = None  # newest ping of any kind
    last_event: str = ""
    # newest accepted position: [ts, lat, lon, quality, speed km/h (-1: not reported)]
    fix: list[float] | None = None
    jump: list[float] | None = None  # last fix rejected as an impossible jump: [ts, lat, lon]
    alarms: dict[str, float] = field(default_factory=dict)  # active alarm -> last raised at
    alarm_event: str = ""
    # longest regular parked reporting interval (EngineConfig.cadence_*): [seconds, gaps learned,
    # learned at, then the same three before the last gap, that gap's start]
    cadence: list[float] | None = None
    # A wireless tracker's report schedule (EngineConfig.wireless_slot_*): [[second of the day
    # (UTC), decayed count of reports there, last one], ...]
    slots: list[list[float]] | None = None

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.kind}
        if self.bound_at:
            out["b"] = self.bound_at
        if self.last_seen:
            out["s"] = self.last_seen
        if self.last_event:
            out["e"] = self.last_event
        if self.fix:
            out["f"] = self.fix
        if self.jump:
            out["j"] = self.jump
        if self.alarms:
            out["a"] = self.alarms
        if self.alarm_event:
            out["ae"] = self.alarm_event
        if self.cadence:
            out["c"] = self.cadence
        if self.slots:
            out["sl"] = self.slots
        return out

    @classmethod
    def load(cls, raw: dict[str, Any]) -> DeviceState:
        return cls(
            kind=raw["k"],
            bound_at=raw.get("b"),
            last_seen=raw.get("s"),
            last_event=raw.get("e", ""),
            fix=raw.get("f"),
            jump=raw.get("j"),
            alarms=raw.get("a", {}),
            alarm_event=raw.get("ae", ""),
            cadence=raw.get("c"),
            slots=raw.get("sl"),
        )


@dataclass(slots=True)
class InstallmentState:
    number: int
    due: int  # date.toordinal() of the due date (loan time zone)
    amount: float
    paid: float = 0.0
    # Hashes of the money events applied to it: exact dedupe, so order never matters.
    events: list[int] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        return self.paid >= self.amount - 0.005

    def dump(self) -> list[Any]:
        out: list[Any] = [self.number, self.due, self.amount]
        if self.paid or self.events:
            out.append(self.paid)
        if self.events:
            out.append(self.events)
        return out

    @classmethod
    def load(cls, raw: list[Any]) -> InstallmentState:
        if len(raw) < 3:
            raise StateDecodingError(f"instalment row too short: {raw!r}")
        if len(raw) == 3:  # the usual row: nothing paid yet
            return cls(raw[0], raw[1], raw[2])
        return cls(raw[0], raw[1], raw[2], raw[3] if len(raw) > 3 else 0.0, *raw[4:5])


@dataclass(slots=True)
class AlertState:
    """One rule's episode on this loan."""

    status: str  # "pending" (condition holds, waiting for `for`) | "firing" | "inhibited"
    active_since: float  # condition true since (evaluation instant)
    started_at: float | None = None  # began firing (the episode id)
    severity: str = ""  # current severity while firing (escalations)
    cleared_since: float | None = None  # firing, condition no longer holds (keep_firing_for)

    def dump(self) -> list[Any]:
        out = [self.status, self.active_since, self.started_at, self.severity]
        if self.cleared_since is not None:
            out.append(self.cleared_since)
        return out

    @classmethod
    def load(cls, raw: list[Any]) -> AlertState:
        return cls(*raw)


@dataclass(slots=True)
class LoanState:
    loan_id: str
    status: str = "active"
    timezone: str = "Asia/Shanghai"
    region: list[Any] | None = None  # compact home region, see geo.compact_region
    devices: dict[str, DeviceState] = field(default_factory=dict)

    # payments
    installments: list[InstallmentState] = field(default_factory=list)
    settled_through: int = 0  # instalments 1..n settled long ago and dropped from the state
    cured: int = 0  # delinquencies cured so far (0 => the current one is the first)
    last_received: float | None = None
    failed_debits: list[list[float]] = field(default_factory=list)  # [ts, event hash]
    payment_event: str = ""

    # contacts: recent attempts sorted by time, [ts, code] (see signals.contact)
    attempts: list[list[float]] = field(default_factory=list)
    last_reached: float | None = None
    contact_event: str = ""
    reach_event: str = ""

    # vehicle (fused from the trackers)
    position: list[float] | None = None  # [ts, lat, lon, quality]
    position_event: str = ""
    inside: bool | None = None
    outside_since: float | None = None
    region_check: list[float] | None = None  # [lat, lon, clearance_m]
    region_event: str = ""
    place_id: str = ""
    place_kind: str = ""
    place_since: float | None = None
    place_check: list[float] | None = None  # [lat, lon, clearance_m]
    place_gen: int = 0  # PlaceIndex.generation place_check was computed with
    place_event: str = ""
    cars_at_place: int = 0
    place_left: list[Any] | None = None  # [place_id, kind, stay began, left at] (re-entry grace)
    anchor: list[float] | None = None  # [lat, lon, stationary since]
    # resident points (常驻点): [lat, lon, seconds parked, of which at night, last stay ended]
    usual: list[list[float]] = field(default_factory=list)
    resident_seen: float | None = None  # when the car last left a resident point
    visits: list[list[Any]] = field(default_factory=list)  # [place_id, kind, first, last]
    # alarms carried by buffered (backfill) data, fired or not: [ts, alarm], newest 3
    alarm_history: list[list[Any]] = field(default_factory=list)
    # where a wired tracker's buffered (backfill) uploads came from: [lat, lon, newest ts]
    buffer_spots: list[list[float]] = field(default_factory=list)
    separated_m: float = 0.0  # confirmed wired/wireless separation (lower bound), see config
    # current streak of pairs: [mode (1 apart, -1 together), count, first pair at,
    # wired fix ts, wireless fix ts of the last counted pair, smallest bound of the streak]
    sep: list[float] | None = None

    labels: dict[str, str] = field(default_factory=dict)  # the loan's (copied onto its alerts)

    # evaluation
    clock: float | None = None
    pending_eval: float | None = None  # evaluate at this time (after a backfill settles)
    alerts: dict[str, AlertState] = field(default_factory=dict)
    seen: list[int] = field(default_factory=list)  # hashes of the latest event ids

    # Saved too, so a worker that restores the state for every event keeps the evaluation
    # gating: whether a signal changed since the last evaluation, and a lower bound of the next
    # deadline (None: unknown, recompute).
    dirty: bool = False
    deadline: float | None = None
    # transient: rebuilt on demand
    region_obj: Any = None
    # [lat, lon, metres]: every position closer than this to (lat, lon) passes the region, place
    # and stationary checks unchanged (see Tracking._move_vehicle). None: unknown.
    clear_zone: list[float] | None = None

    # ------------------------------------------------------------------ serialisation

    _FIELDS: ClassVar[tuple[tuple[str, str, Any], ...]] = (
        ("st", "status", "active"),
        ("tz", "timezone", "Asia/Shanghai"),
        ("lb", "labels", {}),
        ("rg", "region", None),
        ("sth", "settled_through", 0),
        ("cu", "cured", 0),
        ("lr", "last_received", None),
        ("fd", "failed_debits", []),
        ("pe", "payment_event", ""),
        ("at", "attempts", []),
        ("re", "last_reached", None),
        ("ce", "contact_event", ""),
        ("rce", "reach_event", ""),
        ("po", "position", None),
        ("poe", "position_event", ""),
        ("in", "inside", None),
        ("os", "outside_since", None),
        ("rc", "region_check", None),
        ("rge", "region_event", ""),
        ("pl", "place_id", ""),
        ("pk", "place_kind", ""),
        ("ps", "place_since", None),
        ("pc", "place_check", None),
        ("pg", "place_gen", 0),
        ("ple", "place_event", ""),
        ("cp", "cars_at_place", 0),
        ("plf", "place_left", None),
        ("an", "anchor", None),
        ("us", "usual", []),
        ("rs", "resident_seen", None),
        ("vi", "visits", []),
        ("ah", "alarm_history", []),
        ("bs", "buffer_spots", []),
        ("sp", "separated_m", 0.0),
        ("sq", "sep", None),
        ("ck", "clock", None),
        ("pv", "pending_eval", None),
        ("sn", "seen", []),
        ("dt", "dirty", False),
        ("dl", "deadline", None),
    )

    def to_bytes(self) -> bytes:
        out: dict[str, Any] = {"id": self.loan_id}
        for (key, _, default), value in zip(self._FIELDS, _field_values(self), strict=True):
            # `deadline` caches "nothing scheduled" as infinity: not stored; an infinite value
            # anywhere else is one the encoding check below refuses
            if value != default and (
                value.__class__ is not float or value != _NO_DEADLINE or key != "dl"
            ):
                out[key] = value
        if self.devices:
            out["dv"] = {k: d.dump() for k, d in self.devices.items()}
        if self.installments:
            out["in_"] = [i.dump() for i in self.installments]
        if self.alerts:
            out["al"] = {k: a.dump() for k, a in self.alerts.items()}
        try:
            data = orjson.dumps(out)
        except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
            raise StateEncodingError(f"loan {self.loan_id}: {exc}") from None
        # orjson writes NaN and ±infinity as `null`. The only `null` a state holds by design is
        # a pending alert's start: as many `null`s as those (the common case: one count over
        # the bytes) means none is anything else; otherwise the fields are checked one by one.
        # A `null` the reader would refuse (a None where a number belongs) is refused here too.
        if data.count(b"null") != _pending_starts(out.get("al")):
            for path, value in _walk(out, ""):
                if (value.__class__ is float and not math.isfinite(value)) or (
                    value is None and not _NULLABLE.fullmatch(path)
                ):
                    raise StateEncodingError(f"loan {self.loan_id}: {path} is {value}")
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> LoanState:
        """The state `to_bytes` wrote; StateDecodingError for anything else."""
        try:
            raw = orjson.loads(data)
            if data.count(b"null") != _pending_starts(raw.get("al")):
                _check_nulls(raw)  # (a loan id or event id holding "null" comes here too)
            return cls._from_raw(raw)
        except StateDecodingError:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateDecodingError(f"{type(exc).__name__}: {exc}") from None

    @classmethod
    def _from_raw(cls, raw: dict[str, Any]) -> LoanState:
        names = _FIELD_NAMES
        state = cls(loan_id=raw["id"], **{names[k]: v for k, v in raw.items() if k in names})
        devices = raw.get("dv")
        if devices:
            state.devices = {k: DeviceState.load(v) for k, v in devices.items()}
        installments = raw.get("in_")
        if installments:
            state.installments = [InstallmentState.load(i) for i in installments]
        alerts = raw.get("al")
        if alerts:
            state.alerts = {k: AlertState.load(v) for k, v in alerts.items()}
        return state


def _pending_starts(alerts: Any) -> int:
    """How many `null`s a state's alerts hold by design: pending alerts have no start yet."""
    if not alerts:
        return 0
    return sum(1 for alert in alerts.values() if alert[2] is None)


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every leaf of a decoded JSON value with its path (`in_.0.3`)."""
    if value.__class__ is dict:
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}" if path else str(key))
    elif value.__class__ is list:
        for n, item in enumerate(value):
            yield from _walk(item, f"{path}.{n}")
    else:
        yield path, value


def _check_nulls(raw: Any) -> None:
    """`to_bytes` omits every field that is None, so a stored `null` is a non-finite number an
    older version wrote, except an alert's `started_at` (a pending alert has none)."""
    if raw.__class__ is not dict:
        raise StateDecodingError("a stored state is a JSON object")
    for path, value in _walk(raw, ""):
        if value is None and not _NULLABLE.fullmatch(path):
            raise StateDecodingError(f"{path} is null (a number that could not be stored)")


_NULLABLE = re.compile(r"al\.[^.]+\.2")
# Stored key -> field name, and all the stored fields' values in one call (to_bytes/from_bytes
# run once per loan per worker batch).
_FIELD_NAMES = {key: name for key, name, _ in LoanState._FIELDS}
_field_values = attrgetter(*(name for _, name, _ in LoanState._FIELDS))

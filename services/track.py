"""A loan's recent track in the Redis view: fixes dense enough to replay a drive, kept bounded.

The projector (services/projector.py) reads every ping on `<prefix>gps.raw`, decides with a
`TrackThinner` which fixes to keep, and writes them here next to the rest of the view, so an
emptied Redis gets its tracks back when the projector rebuilds the view from Kafka.

What is kept per device (the thinning):

- every **moving** fix: speed at or above `MOVING_KMH`, or at least `MOVED_M` from the last
  kept fix (trackers that report no speed), or a different fix type;
- every fix carrying an **alarm** (power cut, removal, ...);
- while **parked**, one fix per `parked_interval_s` (default 15 min).

Bounds per loan (DESIGN: the view is a cache of Kafka; these bound Redis, not Kafka):

- `retention_s` (default 7 days) behind the loan's newest fix, by event time;
- `max_fixes` (default 5000) newest fixes.

Keys (under `<redis.key_prefix>view:`):

    track:<loan_id>        ZSET fix JSON -> event time (epoch s); members are deterministic,
                           so a replay writes the same member again (idempotent)
    track:last:<loan_id>   HASH device_id -> fix JSON of the device's newest ping (every ping
                           counts here, thinned or not): "last known position" per tracker
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis

from rules.events import Alarm, DeviceKind, Fix, GpsPing
from rules.geo import distance_m

UTC = dt.UTC
MOVING_KMH = 5.0
MOVED_M = 100.0
DEFAULT_PARKED_INTERVAL_S = 900.0
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
DEFAULT_MAX_FIXES = 5000
# Devices whose last kept fix the thinner remembers; past this it forgets them all (the next
# fix of each is then kept: only density suffers, never correctness).
_MAX_DEVICES = 200_000
_FIX_VALUES = frozenset(f.value for f in Fix)
_KIND_VALUES = frozenset(k.value for k in DeviceKind)
_ALARM_VALUES = frozenset(a.value for a in Alarm)


@dataclass(frozen=True, slots=True)
class TrackFix:
    """One position of one tracker, as the track keeps it."""

    event_id: str
    device_id: str
    device_kind: str
    ts: dt.datetime
    lat: float
    lon: float
    speed_kmh: float | None
    heading: float | None
    fix: str
    acc_on: bool | None
    alarms: tuple[str, ...]

    def member(self) -> bytes:
        return orjson.dumps(self.as_json(), option=orjson.OPT_SORT_KEYS)

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "device_id": self.device_id,
            "device_kind": self.device_kind,
            "ts": self.ts.isoformat(),
            "lat": self.lat,
            "lon": self.lon,
            "speed_kmh": self.speed_kmh,
            "heading": self.heading,
            "fix": self.fix,
            "acc_on": self.acc_on,
            "alarms": list(self.alarms),
        }

    @classmethod
    def from_json(cls, raw: bytes | str) -> TrackFix:
        d = orjson.loads(raw)
        return cls(
            event_id=d["event_id"],
            device_id=d["device_id"],
            device_kind=d["device_kind"],
            ts=dt.datetime.fromisoformat(d["ts"]),
            lat=d["lat"],
            lon=d["lon"],
            speed_kmh=d["speed_kmh"],
            heading=d["heading"],
            fix=d["fix"],
            acc_on=d["acc_on"],
            alarms=tuple(d["alarms"]),
        )

    @classmethod
    def from_ping(cls, ping: GpsPing) -> TrackFix:
        return cls(
            event_id=ping.event_id,
            device_id=ping.device_id,
            device_kind=ping.device_kind.value,
            ts=ping.ts,
            lat=ping.lat,
            lon=ping.lon,
            speed_kmh=ping.speed_kmh,
            heading=ping.heading,
            fix=ping.fix.value,
            acc_on=ping.acc_on,
            alarms=tuple(a.value for a in ping.alarms),
        )


def _number(value: object, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and low <= number <= high else None


def parse_fix(value: bytes | None) -> TrackFix | None:
    """The fix in a gps.raw record, or None when it is not a valid GpsPing.

    Plainly shaped pings (what the writers, which validate, produce) are read field by field
    without building the pydantic model; anything else goes through `GpsPing` validation, so a
    record is accepted here exactly when it is a valid ping."""
    if value is None:
        return None
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    fast = _fast_fix(raw) if isinstance(raw, dict) else None
    if fast is not None:
        return fast
    try:
        return TrackFix.from_ping(GpsPing.model_validate_json(value))
    except ValidationError:
        return None


_PING_FIELDS = frozenset(GpsPing.model_fields)


def _fast_fix(raw: dict[str, Any]) -> TrackFix | None:
    if not _PING_FIELDS.issuperset(raw):
        return None
    event_id, device_id, ts = raw.get("event_id"), raw.get("device_id"), raw.get("ts")
    kind, fix = raw.get("device_kind"), raw.get("fix", "gps")
    alarms, vendor = raw.get("alarms", []), raw.get("vendor")
    lat, lon = _number(raw.get("lat"), -90, 90), _number(raw.get("lon"), -180, 180)
    if not (
        isinstance(event_id, str)
        and isinstance(device_id, str)
        and isinstance(vendor, str)
        and 0 < len(event_id) <= 128
        and 0 < len(device_id) <= 128
        and event_id == event_id.strip()
        and device_id == device_id.strip()
        and isinstance(ts, str)
        and kind in _KIND_VALUES
        and fix in _FIX_VALUES
        and isinstance(alarms, list)
        and all(a in _ALARM_VALUES for a in alarms)
        and lat is not None
        and lon is not None
    ):
        return None
    speed = raw.get("speed_kmh")
    heading = raw.get("heading")
    acc_on = raw.get("acc_on")
    speed_kmh = None if speed is None else _number(speed, 0, 1000)
    heading_deg = None if heading is None else _number(heading, 0, 360)
    if (speed is not None and speed_kmh is None) or (heading is not None and heading_deg is None):
        return None
    if acc_on is not None and not isinstance(acc_on, bool):
        return None
    try:
        moment = dt.datetime.fromisoformat(ts)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return TrackFix(
        event_id=event_id,
        device_id=device_id,
        device_kind=str(kind),
        ts=moment,
        lat=lat,
        lon=lon,
        speed_kmh=speed_kmh,
        heading=heading_deg,
        fix=str(fix),
        acc_on=acc_on,
        alarms=tuple(alarms),
    )


class TrackThinner:
    """Per device, decides which fixes the track keeps (see the module docstring), comparing
    each fix with the device's last kept fix in reading order. A device it does not know yet is
    seeded from the stored track (`TrackStore.kept_before`), so re-reading a topic from stored
    offsets after a restart makes the same choices as the first reading did."""

    def __init__(self, parked_interval_s: float = DEFAULT_PARKED_INTERVAL_S) -> None:
        self.parked_interval_s = parked_interval_s
        self._last: OrderedDict[str, TrackFix] = OrderedDict()

    def knows(self, device_id: str) -> bool:
        return device_id in self._last

    def seed(self, fix: TrackFix) -> None:
        """Remember `fix` as the device's last kept fix (read back from the stored track)."""
        if len(self._last) >= _MAX_DEVICES:
            self._last.clear()
        self._last[fix.device_id] = fix

    def keep(self, fix: TrackFix) -> bool:
        last = self._last.get(fix.device_id)
        keep = (
            last is None
            or bool(fix.alarms)
            or (fix.speed_kmh is not None and fix.speed_kmh >= MOVING_KMH)
            or fix.fix != last.fix
            or abs((fix.ts - last.ts).total_seconds()) >= self.parked_interval_s
            or distance_m(fix.lat, fix.lon, last.lat, last.lon) >= MOVED_M
        )
        if keep:
            if last is None and len(self._last) >= _MAX_DEVICES:
                self._last.clear()
            # The last kept fix in reading order, also when it is older (a backfilled series is
            # then thinned within itself, not kept whole for being far from the live position).
            self._last[fix.device_id] = fix
        return keep


@dataclass(frozen=True)
class Track:
    fixes: list[TrackFix]  # oldest first
    latest: list[TrackFix]  # newest ping per device, whatever the window
    truncated: bool  # more fixes in the window than `limit`: the newest `limit` are given


class TrackView(Protocol):
    """What the track route needs (tests give a fake)."""

    async def newest(self, loan_id: str) -> dt.datetime | None: ...

    async def track(
        self, loan_id: str, start: dt.datetime, end: dt.datetime, *, limit: int
    ) -> Track: ...


class TrackStore:
    def __init__(
        self,
        redis: Redis,
        key_prefix: str,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        max_fixes: int = DEFAULT_MAX_FIXES,
    ) -> None:
        self.redis = redis
        self.prefix = f"{key_prefix}view:"
        self.retention_s = retention_s
        self.max_fixes = max_fixes

    def _key(self, loan_id: str) -> str:
        return f"{self.prefix}track:{loan_id}"

    def _last_key(self, loan_id: str) -> str:
        return f"{self.prefix}track:last:{loan_id}"

    async def add(
        self,
        kept: Mapping[str, Sequence[TrackFix]],
        seen: Mapping[str, Sequence[TrackFix]],
    ) -> None:
        """Write the kept fixes of each loan (then trim it to the bounds), and update each
        device's newest position from every fix seen (kept or not)."""
        newest: dict[str, dict[str, TrackFix]] = {}
        for loan_id, fixes in seen.items():
            per_device = newest.setdefault(loan_id, {})
            for fix in fixes:
                current = per_device.get(fix.device_id)
                if current is None or fix.ts > current.ts:
                    per_device[fix.device_id] = fix
        loans = list(newest)
        stored: list[list[bytes | None]] = []
        if loans:
            async with self.redis.pipeline(transaction=False) as pipe:
                for loan_id in loans:
                    pipe.hmget(self._last_key(loan_id), list(newest[loan_id]))
                stored = await pipe.execute()
        # One MULTI/EXEC: a reader sees a batch's fixes and last positions together or not at all.
        async with self.redis.pipeline(transaction=True) as pipe:
            for loan_id, fixes in kept.items():
                if not fixes:
                    continue
                key = self._key(loan_id)
                pipe.zadd(key, {f.member(): f.ts.timestamp() for f in fixes})
                horizon = max(f.ts.timestamp() for f in fixes) - self.retention_s
                pipe.zremrangebyscore(key, "-inf", f"({horizon!r}")
                pipe.zremrangebyrank(key, 0, -(self.max_fixes + 1))
            for loan_id, raws in zip(loans, stored, strict=True):
                update: dict[str, bytes] = {}
                for (device_id, fix), raw in zip(newest[loan_id].items(), raws, strict=True):
                    if raw is None or TrackFix.from_json(raw).ts < fix.ts:
                        update[device_id] = fix.member()
                if update:
                    pipe.hset(self._last_key(loan_id), mapping=update)  # type: ignore[arg-type]
            await pipe.execute()

    async def kept_before(
        self, wanted: Sequence[tuple[str, str, dt.datetime]]
    ) -> dict[str, TrackFix]:
        """For each (loan_id, device_id, ts): the device's newest stored fix older than ts (when
        one is among the loan's 200 fixes before ts)."""
        if not wanted:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for loan_id, _, ts in wanted:
                pipe.zrevrangebyscore(
                    self._key(loan_id), f"({ts.timestamp()!r}", "-inf", start=0, num=200
                )
            answers: list[list[bytes]] = await pipe.execute()
        found: dict[str, TrackFix] = {}
        for (_, device_id, _), raws in zip(wanted, answers, strict=True):
            for raw in raws:
                fix = TrackFix.from_json(raw)
                if fix.device_id == device_id:
                    found[device_id] = fix
                    break
        return found

    async def newest(self, loan_id: str) -> dt.datetime | None:
        last: list[tuple[bytes, float]] = await self.redis.zrevrange(  # type: ignore[assignment]
            self._key(loan_id), 0, 0, withscores=True
        )
        latest = await self.redis.hvals(self._last_key(loan_id))
        times = [TrackFix.from_json(r).ts for r in latest]
        if last:
            times.append(dt.datetime.fromtimestamp(last[0][1], UTC))
        return max(times) if times else None

    async def track(
        self, loan_id: str, start: dt.datetime, end: dt.datetime, *, limit: int
    ) -> Track:
        # One MULTI/EXEC, so the fixes and the last positions come from the same moment.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrevrangebyscore(
                self._key(loan_id),
                repr(end.timestamp()),
                repr(start.timestamp()),
                start=0,
                num=limit + 1,
            )
            pipe.hvals(self._last_key(loan_id))
            raws, latest_raw = await pipe.execute()
        truncated = len(raws) > limit
        fixes = [TrackFix.from_json(r) for r in raws[:limit]]
        fixes.reverse()
        latest = sorted((TrackFix.from_json(r) for r in latest_raw), key=lambda f: f.device_id)
        return Track(fixes=fixes, latest=latest, truncated=truncated)

"""A loan's recent track in the Redis view: fixes dense enough to replay a drive, kept bounded.

The projector (services/projector.py) reads every ping on `<prefix>gps.raw` and hands them to
`TrackStore.add`, which keeps them here next to the rest of the view, so an emptied Redis gets
its tracks back when the projector rebuilds the view from Kafka.

What is kept per tracker (the thinning):

- every **moving** fix: speed at or above `MOVING_KMH`, or ignition on without a speed;
- every fix carrying an **alarm** (power cut, removal, ...);
- of the other (**parked**) fixes, the earliest of each `parked_interval_s` (default 15 min)
  bucket of event time.

The choice depends only on *which* pings were read, not on their order or on where reading
resumed: re-reading a topic after a restart, a rebalance or a rebuild, and backfilled (late)
pings, all give the same track. (The stored track is the state: a parked fix replaces the one
kept for its bucket only when it is earlier.)

Bounds per loan (DESIGN: the view is a cache of Kafka; these bound Redis, not Kafka):

- `retention_s` (default 7 days) behind the loan's newest fix, by event time;
- `max_fixes` (default 5000) newest fixes.

Keys (under `<redis.key_prefix>view:`):

    track:<loan_id>        ZSET fix -> event time (epoch s); members are deterministic JSON
                           arrays, so a replay writes the same member again (idempotent)
    track:last:<loan_id>   HASH device_id -> the device's newest fix (every ping counts here,
                           kept or not): "last known position" per tracker
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis

from rules.events import GpsPing

UTC = dt.UTC
MOVING_KMH = 5.0
DEFAULT_PARKED_INTERVAL_S = 900.0
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
DEFAULT_MAX_FIXES = 5000


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
        """The stored form: a positional JSON array (half the bytes of an object), deterministic
        so that writing the same fix again is a no-op."""
        return orjson.dumps(
            [
                self.ts.isoformat(),
                self.lat,
                self.lon,
                self.speed_kmh,
                self.heading,
                self.fix,
                self.acc_on,
                self.device_id,
                self.device_kind,
                list(self.alarms),
                self.event_id,
            ]
        )

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
    def from_member(cls, raw: bytes | str) -> TrackFix:
        ts, lat, lon, speed, heading, fix, acc_on, device_id, kind, alarms, event_id = orjson.loads(
            raw
        )
        return cls(
            event_id=event_id,
            device_id=device_id,
            device_kind=kind,
            ts=dt.datetime.fromisoformat(ts),
            lat=lat,
            lon=lon,
            speed_kmh=speed,
            heading=heading,
            fix=fix,
            acc_on=acc_on,
            alarms=tuple(alarms),
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


def parse_fix(value: bytes | None) -> TrackFix | None:
    """The fix in a gps.raw record, or None when it is not a valid GpsPing."""
    if value is None:
        return None
    try:
        return TrackFix.from_ping(GpsPing.model_validate_json(value))
    except ValidationError:
        return None


def is_moving(fix: TrackFix) -> bool:
    """Kept whatever else is kept: a moving car, or an alarm."""
    return (
        bool(fix.alarms)
        or (fix.speed_kmh is not None and fix.speed_kmh >= MOVING_KMH)
        or (fix.speed_kmh is None and fix.acc_on is True)
    )


def bucket_of(fix: TrackFix, interval_s: float) -> int:
    return int(fix.ts.timestamp() // interval_s) if interval_s > 0 else 0


def _order(fix: TrackFix) -> tuple[float, str]:
    return (fix.ts.timestamp(), fix.event_id)


def choose_parked(
    batch: list[TrackFix], stored: list[TrackFix]
) -> tuple[TrackFix | None, list[TrackFix]]:
    """For one tracker and one bucket: the parked fix to keep (the earliest of the batch's and
    the stored ones) and the stored ones to drop. None when the stored one stays."""
    everyone = batch + stored
    if not everyone:
        return None, []
    best = min(everyone, key=_order)
    drop = [f for f in stored if f != best]
    return (None if best in stored else best), drop


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
        parked_interval_s: float = DEFAULT_PARKED_INTERVAL_S,
    ) -> None:
        self.redis = redis
        self.parked_interval_s = parked_interval_s
        self.prefix = f"{key_prefix}view:"
        self.retention_s = retention_s
        self.max_fixes = max_fixes

    def _key(self, loan_id: str) -> str:
        return f"{self.prefix}track:{loan_id}"

    def _last_key(self, loan_id: str) -> str:
        return f"{self.prefix}track:last:{loan_id}"

    async def add(self, fixes: Mapping[str, Sequence[TrackFix]]) -> tuple[int, int]:
        """Keep what the thinning keeps of each loan's fixes (then trim to the bounds) and update
        each tracker's newest position from all of them. Returns (kept, thinned) counts.

        One writer per tracker is assumed (pings are keyed by device, so one projector reads a
        tracker's pings); trackers of one loan may be written by different projectors."""
        interval = self.parked_interval_s
        moving: dict[str, list[TrackFix]] = {}
        parked: dict[tuple[str, str, int], list[TrackFix]] = {}
        newest: dict[str, dict[str, TrackFix]] = {}
        for loan_id, items in fixes.items():
            for fix in items:
                if interval <= 0 or is_moving(fix):  # interval 0: no thinning
                    moving.setdefault(loan_id, []).append(fix)
                else:
                    slot = (loan_id, fix.device_id, bucket_of(fix, interval))
                    parked.setdefault(slot, []).append(fix)
                current = newest.setdefault(loan_id, {}).get(fix.device_id)
                if current is None or fix.ts > current.ts:
                    newest[loan_id][fix.device_id] = fix
        loans = list(newest)
        async with self.redis.pipeline(transaction=False) as pipe:
            for loan_id in loans:
                pipe.hmget(self._last_key(loan_id), list(newest[loan_id]))
            for loan_id, _, bucket in parked:
                pipe.zrangebyscore(
                    self._key(loan_id),
                    repr(bucket * interval),
                    f"({(bucket + 1) * interval!r}" if interval > 0 else "+inf",
                )
            answers = await pipe.execute()
        stored_last, stored_buckets = answers[: len(loans)], answers[len(loans) :]

        add: dict[str, list[TrackFix]] = {loan: list(items) for loan, items in moving.items()}
        drop: dict[str, list[TrackFix]] = {}
        thinned = 0
        for (loan_id, device_id, bucket), raws in zip(parked, stored_buckets, strict=True):
            batch = parked[(loan_id, device_id, bucket)]
            stored = [
                f
                for f in (TrackFix.from_member(r) for r in raws)
                if f.device_id == device_id and not is_moving(f)
            ]
            keep, losers = choose_parked(batch, stored)
            if keep is not None:
                add.setdefault(loan_id, []).append(keep)
            drop.setdefault(loan_id, []).extend(losers)
            thinned += len(batch) - (1 if keep is not None else 0)

        # One MULTI/EXEC: a reader sees a batch's fixes and last positions together or not at all.
        async with self.redis.pipeline(transaction=True) as pipe:
            for loan_id, losers in drop.items():
                if losers:
                    pipe.zrem(self._key(loan_id), *(f.member() for f in losers))
            for loan_id, kept in add.items():
                if not kept:
                    continue
                key = self._key(loan_id)
                pipe.zadd(key, {f.member(): f.ts.timestamp() for f in kept})
                horizon = max(f.ts.timestamp() for f in kept) - self.retention_s
                pipe.zremrangebyscore(key, "-inf", f"({horizon!r}")
                pipe.zremrangebyrank(key, 0, -(self.max_fixes + 1))
            for loan_id, raws in zip(loans, stored_last, strict=True):
                update: dict[str, bytes] = {}
                for (device_id, fix), raw in zip(newest[loan_id].items(), raws, strict=True):
                    if raw is None or TrackFix.from_member(raw).ts < fix.ts:
                        update[device_id] = fix.member()
                if update:
                    pipe.hset(self._last_key(loan_id), mapping=update)  # type: ignore[arg-type]
            await pipe.execute()
        total = sum(len(items) for items in fixes.values())
        return total - thinned, thinned

    async def newest(self, loan_id: str) -> dt.datetime | None:
        last: list[tuple[bytes, float]] = await self.redis.zrevrange(  # type: ignore[assignment]
            self._key(loan_id), 0, 0, withscores=True
        )
        latest = await self.redis.hvals(self._last_key(loan_id))
        times = [TrackFix.from_member(r).ts for r in latest]
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
        fixes = [TrackFix.from_member(r) for r in raws[:limit]]
        fixes.reverse()
        latest = sorted((TrackFix.from_member(r) for r in latest_raw), key=lambda f: f.device_id)
        return Track(fixes=fixes, latest=latest, truncated=truncated)

"""Loan-track figures: pings validated per second, pings thinned and written per second, Redis
bytes per kept fix, read time of a full track. Uses its own key prefix in the Redis it is given and deletes it.

    .venv/bin/python benchmarks/bench_track.py --redis redis://127.0.0.1:16379/0
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
import uuid
from pathlib import Path

import orjson
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.track import TrackFix, TrackStore, parse_fix

T0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def ping(i: int) -> bytes:
    value = {
        "event_id": f"ev-{i:08d}", "device_id": "dev-000123", "vendor": "v",
        "ts": (T0 + dt.timedelta(seconds=30 * i)).isoformat(),
        "lat": 30.6 + i * 1e-5, "lon": 104.0, "speed_kmh": 42.0 if i // 120 % 4 == 0 else 0.0,
        "heading": 90.0,
        "fix": "gps", "acc_on": True, "battery_pct": 80.0, "device_kind": "wired", "alarms": [],
    }  # fmt: skip
    return orjson.dumps(value)


def pings(n: int) -> list[bytes]:
    return [ping(i) for i in range(n)]


async def redis_figures(url: str, fixes: list[TrackFix], cap: int) -> None:
    redis = Redis.from_url(url)
    prefix = f"bench-track-{uuid.uuid4().hex[:8]}:"
    store = TrackStore(redis, prefix, max_fixes=cap)
    try:
        started = time.perf_counter()
        kept = thinned = 0
        for i in range(0, len(fixes), 500):
            k, t = await store.add({"L1": fixes[i : i + 500]})
            kept, thinned = kept + k, thinned + t
        wrote = time.perf_counter() - started
        print(f"store: {len(fixes) / wrote:,.0f} pings/s thinned and written (batches of 500;")
        print(f"       a quarter moving, the rest parked): {kept} kept, {thinned} thinned")
        key = f"{prefix}view:track:L1"
        size = await redis.memory_usage(key) or 0
        count = await redis.zcard(key)
        started = time.perf_counter()
        track = await store.track("L1", T0, T0 + dt.timedelta(days=31), limit=cap)
        read = time.perf_counter() - started
        print(f"redis: {count} fixes in {size:,} bytes ({size / count:.0f} B/fix)")
        print(f"read:  {len(track.fixes)} fixes in {read * 1000:.0f} ms")
    finally:
        await redis.delete(f"{prefix}view:track:L1", f"{prefix}view:track:last:L1")
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:16379/0")
    parser.add_argument("--pings", type=int, default=50_000)
    parser.add_argument("--cap", type=int, default=5000, help="fixes per loan (max_fixes)")
    args = parser.parse_args()
    raw = pings(args.pings)
    started = time.perf_counter()
    fixes = [f for f in (parse_fix(r) for r in raw) if f is not None]
    parsed = time.perf_counter() - started
    print(f"parse: {len(raw) / parsed:,.0f} pings/s (GpsPing validation)")
    asyncio.run(redis_figures(args.redis, fixes, args.cap))


if __name__ == "__main__":
    main()

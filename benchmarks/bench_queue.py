"""Alert queue figures: time of `list_alerts` (a page of 100, with filters and sorts) and of
`facets` on the Redis view (services/store.py) at N alerts, as the API calls them. Fills its own
key prefix in the Redis it is given through `AlertStore.apply` (as the projector does) and
deletes it afterwards.

    .venv/bin/python benchmarks/bench_queue.py --redis redis://127.0.0.1:16379/0 --alerts 10000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules.events import AlertEvent, AlertStatus, Severity
from services.alert_index import AlertQuery, Sort
from services.store import AlertStore

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
OPEN = frozenset({AlertStatus.FIRING, AlertStatus.ACKNOWLEDGED, AlertStatus.SILENCED})


def event(i: int, rng: random.Random, resolved_share: float) -> AlertEvent:
    return AlertEvent(
        alert_id=f"a-{i:07d}",
        fingerprint=f"fp-{i:07d}",
        rule_id=rng.choice(["tracker-cut", "long-dwell", "offline-7d", "overdue", "risk-place"]),
        loan_id=f"L{i % 5000:05d}",
        severity=rng.choice(list(Severity)),
        status=AlertStatus.RESOLVED if rng.random() < resolved_share else AlertStatus.FIRING,
        title="失联预警",
        summary="s",
        evidence=({"kind": "state", "name": "payment.days_past_due", "value": 4},),
        risk_score=rng.randrange(101),
        started_at=T0 + dt.timedelta(seconds=37 * i),
        updated_at=T0 + dt.timedelta(seconds=37 * i),
        event_time=T0 + dt.timedelta(seconds=37 * i),
        labels={"team": rng.choice(["recovery", "collections"]), "pattern": "x"},
    )


async def timed(call: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, float, float]:
    """p50 wall ms, max wall ms, p50 CPU ms of this process (the API's share; on a loaded
    machine the wall time mostly measures waiting for a core)."""
    walls, cpus = [], []
    for _ in range(runs):
        started, cpu = time.perf_counter(), time.process_time()
        await call()
        walls.append((time.perf_counter() - started) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return statistics.median(walls), max(walls), statistics.median(cpus)


async def main(url: str, alerts: int, resolved_share: float, runs: int) -> None:
    redis = Redis.from_url(url)
    prefix = f"bench-queue-{uuid.uuid4().hex[:8]}:"
    store = AlertStore(url, prefix, redis=redis)
    rng = random.Random(1)
    try:
        started = time.perf_counter()
        events = [event(i, rng, resolved_share) for i in range(alerts)]
        for i in range(0, alerts, 16):
            await asyncio.gather(*(store.apply(e) for e in events[i : i + 16]))
        wrote = time.perf_counter() - started
        open_count = sum(e.status is AlertStatus.FIRING for e in events)
        print(f"{alerts:,} alerts ({open_count:,} open) applied in {wrote:.1f} s")
        index = await redis.memory_usage(f"{prefix}view:meta:open") or 0
        print(f"search index of the open alerts: {index / max(open_count, 1):.0f} bytes/alert")
        now = dt.datetime.now(dt.UTC)
        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            (
                "list open, -severity, 100",
                lambda: store.list_alerts(
                    AlertQuery(statuses=OPEN), now=now, sort=Sort.SEVERITY_DESC, limit=100
                ),
            ),
            (
                "list open, rule+team+unassigned, -risk",
                lambda: store.list_alerts(
                    AlertQuery(
                        statuses=OPEN,
                        rules=frozenset({"long-dwell"}),
                        labels={"team": frozenset({"recovery"})},
                        assignees=frozenset({"unassigned"}),
                    ),
                    now=now,
                    sort=Sort.RISK_DESC,
                    limit=100,
                ),
            ),
            ("facets open", lambda: store.facets(AlertQuery(statuses=OPEN), now=now)),
            ("list all statuses, newest, 100", lambda: store.list_alerts(AlertQuery(), now=now)),
            ("facets all statuses", lambda: store.facets(AlertQuery(), now=now)),
            ("list one loan", lambda: store.list_alerts(AlertQuery(loan_id="L00007"), now=now)),
        ]
        for name, call in cases:
            p50, worst, cpu = await timed(call, runs)
            print(f"{name:<40} wall p50 {p50:6.1f} ms, max {worst:6.1f} ms; CPU p50 {cpu:6.1f} ms")
        print(
            f"({runs} runs each; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
        )
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await redis.delete(*keys[i : i + 1000])
        await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--resolved-share", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.alerts, args.resolved_share, args.runs))

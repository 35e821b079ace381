"""Fault suite — Redis wiped (FLUSHALL) mid-run under load, then again while idle: the view
(alerts, loans) rebuilds from Kafka by itself and nothing is lost — every alert in the alerts
topic is listed by the API, every registered loan answers, `/readyz` says `rebuilding` until
the view caught up. The whole stack runs as processes (worker on the wall clock, API with its
projector); the feed goes through HTTP ingest. Its own Redis on a free port: FLUSHALL on the
shared one would wipe every session's keys.

`SKIPWATCH_FAULTS_WIPE_S` (default 40) is the length of the run under load; the wipe comes
halfway. Run: `.venv/bin/pytest -q -s -m faults tests/faults/test_redis_wipe.py`."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.kafka import ensure_topics
from tests.faults.harness import (
    FaultStack,
    HttpDoor,
    call,
    client,
    env_float,
    home_ping,
    item,
    make_loan,
    now,
)
from tests.integration.test_pipeline import group_lag

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RUN_S = env_float("SKIPWATCH_FAULTS_WIPE_S", 40)
RATE = 200
LOANS = 100
PROBE_EVERY_S = 2.0


@pytest.fixture
async def stack(
    kafka_bootstrap: str, topic_prefix: str, redis_prefix: str, own_redis: str, tmp_path: Path
) -> AsyncIterator[FaultStack]:
    await ensure_topics(kafka_bootstrap, topic_prefix, 4)
    stack = FaultStack(
        kafka_bootstrap, topic_prefix, 4, tmp_path,
        redis_url=own_redis, redis_prefix=redis_prefix, clock="wall",
    )  # fmt: skip
    try:
        yield stack
    finally:
        stack.stop_all()


async def listed_alerts(api: httpx.AsyncClient) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/alerts", params=params)).json()
        ids |= {a["id"] for a in page["items"]}
        cursor = page["next_cursor"]
        if not cursor:
            return ids


async def loans_answering(api: httpx.AsyncClient, loan_ids: list[str]) -> int:
    answers = await asyncio.gather(*(api.get(f"/v1/loans/{x}") for x in loan_ids))
    return sum(a.status_code == 200 for a in answers)


async def wipe(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()


async def test_redis_wiped_under_load_and_while_idle_loses_nothing(
    stack: FaultStack, own_redis: str
) -> None:
    rng = random.Random(3)
    today = now().date()
    stack.start("worker")
    stack.start("api")
    await stack.wait_ready("api")
    http = HttpDoor(f"http://127.0.0.1:{stack.api_port}")
    api = client(f"http://127.0.0.1:{stack.api_port}")
    loan_ids = [f"LW{n:03d}" for n in range(LOANS)]
    probe_ids: list[str] = []
    states: list[str] = []
    caught_up: list[float] = []
    try:
        for first in range(0, LOANS, 20):
            await asyncio.gather(*(
                http.put_loan(make_loan(x, f"{x}-w", today + dt.timedelta(days=20)))
                for x in loan_ids[first : first + 20]))  # fmt: skip
        started = time.monotonic()
        end = started + RUN_S

        async def feed() -> None:
            tick, n = time.monotonic(), 0
            while tick < end:
                pings = [item(home_ping(f"{loan_ids[(n + i) % LOANS]}-w", n + i, rng))
                         for i in range(RATE)]  # fmt: skip
                n += RATE
                await http.send("gps", pings)
                tick += 1.0
                await asyncio.sleep(max(tick - time.monotonic(), 0))

        async def probe(k: int) -> None:
            loan_id = f"LP{k:03d}"
            probe_ids.append(loan_id)
            await http.put_loan(make_loan(loan_id, f"{loan_id}-w", today - dt.timedelta(days=10)))
            await asyncio.sleep(1)
            await http.send("contacts", [item(call(loan_id, f"{loan_id}-c{i}", outcome))
                                         for i, outcome in enumerate(
                                             ("powered_off", "powered_off", "suspended"))])  # fmt: skip

        async def prober() -> None:
            probes = []
            k = 0
            while time.monotonic() < end:
                probes.append(asyncio.create_task(probe(k)))
                k += 1
                await asyncio.sleep(PROBE_EVERY_S)
            await asyncio.gather(*probes)

        async def wipe_midway() -> float:
            await asyncio.sleep(RUN_S / 2)
            await wipe(own_redis)
            wiped = time.monotonic()
            states.append((await api.get("/readyz")).json()["view"])
            async with asyncio.timeout(60):  # the projector caught up again, load going on
                while (await api.get("/readyz")).json()["view"] != "ok":
                    await asyncio.sleep(0.2)
            caught_up.append(time.monotonic() - wiped)
            return wiped

        _, _, wiped_at = await asyncio.gather(feed(), prober(), wipe_midway())
        fed_s = time.monotonic() - started
        # every alert the worker emitted, read from Kafka once the worker caught up
        async with asyncio.timeout(120):
            while await group_lag(stack):
                stack.supervise()
                await asyncio.sleep(1)
        alerts = await stack.alerts(until=lambda a: len(a) >= len(probe_ids), timeout_s=60)
        emitted = {a.alert_id for a in alerts}
        all_loans = loan_ids + probe_ids

        async def complete() -> bool:
            states.append((await api.get("/readyz")).json()["view"])
            return await listed_alerts(api) >= emitted and await loans_answering(
                api, all_loans
            ) == len(all_loans)

        async with asyncio.timeout(120):
            while not await complete():
                await asyncio.sleep(0.5)
        under_load_s = time.monotonic() - wiped_at
        async with asyncio.timeout(60):
            while (await api.get("/readyz")).json()["view"] != "ok":
                await asyncio.sleep(0.5)

        # the same, idle: nothing flows any more
        await wipe(own_redis)
        idle_wiped = time.monotonic()
        idle_states = [(await api.get("/readyz")).json()["view"]]
        async with asyncio.timeout(120):
            while not await complete():
                idle_states.append(states[-1])
                await asyncio.sleep(0.2)
        idle_s = time.monotonic() - idle_wiped
        listed = await listed_alerts(api)
        metrics = (await api.get("/metrics")).text
    finally:
        await http.close()
        await api.aclose()
    wiped_restarts = [line for line in metrics.splitlines()
                      if line.startswith('skipwatch_projector_restarts_total{reason="wiped"}')]  # fmt: skip
    print(
        f"\n[faults] Redis FLUSHALL under load ({RATE} pings/s over HTTP, a probe loan every "
        f"{PROBE_EVERY_S:g} s; run {fed_s:.0f} s, wiped after {RUN_S / 2:g} s): readyz view "
        f"'ok' again {caught_up[0]:.1f} s after the wipe, the load going on; every alert and "
        f"loan back {under_load_s:.1f} s after the wipe (the feed's tail included); "
        f"readyz view right after the wipe {states[0]!r}; {len(emitted)} alerts in Kafka, "
        f"{len(listed & emitted)} listed by the API, {len(emitted - listed)} missing; "
        f"{len(loan_ids) + len(probe_ids)} loans, all answering; HTTP answers {http.statuses}\n"
        f"[faults] Redis FLUSHALL while idle: view complete again in {idle_s:.1f} s; readyz "
        f"view {idle_states[0]!r} right after; projector {wiped_restarts}"
    )
    assert len(emitted) >= len(probe_ids)  # each probe loan fired
    assert emitted <= listed
    assert states[0] == "rebuilding" and idle_states[0] == "rebuilding"
    assert set(http.statuses) == {200}, http.statuses
    assert wiped_restarts and float(wiped_restarts[0].split()[-1]) >= 2

"""Fault suite — load: the whole stack (worker on the wall clock, API with its projector, JT/T 808
gateway, each its own process) at a sustained rate through both front doors, for
`SKIPWATCH_FAULTS_LOAD_S` seconds (default 600: the recorded figure is a 10-minute run; a
quick look: 60). Prints:

- the rate held: events acknowledged by the front doors per second, and the worker group's lag
  sampled every 15 s (the machine holds the rate when the lag stays bounded);
- end-to-end latency p50/p99: a probe loan every 5 s gets its third dead-line call; from that
  contact's POST to its `phone-dead-overdue` alert listed by `GET /v1/alerts`;
- each process's memory (RSS) every 5 s, and the least-squares slope over the run after its
  first third (warm-up: caches and pools filling); the test fails when a slope exceeds
  `SKIPWATCH_FAULTS_RSS_SLOPE` MiB/min (default 2) on a run of 5 minutes or more.

`SKIPWATCH_FAULTS_LOAD_RATE` (default 1,000 events/s, a quarter through JT/T 808) and
`SKIPWATCH_FAULTS_LOAD_LOANS` (default 400 background loans) size it. Shared broker and Redis
(own topic and key prefixes): nothing is restarted or wiped.

Run: `.venv/bin/pytest -q -s -m faults tests/faults/test_load.py`."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.kafka import ensure_topics
from tests.faults.harness import (
    HOME_LAT,
    HOME_LON,
    FaultStack,
    HttpDoor,
    Location,
    Terminal,
    alert_in_api,
    call,
    client,
    env_float,
    home_ping,
    item,
    jt808_device,
    make_loan,
    now,
    percentile,
    slope_mib_per_min,
)
from tests.integration.test_pipeline import group_lag

pytestmark = [pytest.mark.integration, pytest.mark.faults]

DURATION_S = env_float("SKIPWATCH_FAULTS_LOAD_S", 600)
RATE = env_float("SKIPWATCH_FAULTS_LOAD_RATE", 1000)
LOANS = int(env_float("SKIPWATCH_FAULTS_LOAD_LOANS", 400))
RSS_SLOPE_LIMIT = env_float("SKIPWATCH_FAULTS_RSS_SLOPE", 2.0)
JT808_SHARE = 0.25
PROBE_EVERY_S = 5.0
PROBE_RULE = "phone-dead-overdue"


@pytest.fixture
async def stack(
    kafka_bootstrap: str, topic_prefix: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[FaultStack]:
    await ensure_topics(kafka_bootstrap, topic_prefix, 4)
    stack = FaultStack(
        kafka_bootstrap, topic_prefix, 4, tmp_path,
        redis_url=redis_url, redis_prefix=redis_prefix, clock="wall",
    )  # fmt: skip
    try:
        yield stack
    finally:
        stack.stop_all()


async def test_whole_stack_at_a_sustained_rate(stack: FaultStack) -> None:
    rng = random.Random(7)
    today = now().date()
    terminals_n = LOANS // 2
    http_devices = [f"LD{n:04d}-w" for n in range(terminals_n, LOANS)]
    stack.start("worker")
    stack.start("api")
    stack.start("gateway")
    await stack.wait_ready("api")
    await stack.wait_ready("gateway")
    http = HttpDoor(f"http://127.0.0.1:{stack.api_port}")
    api = client(f"http://127.0.0.1:{stack.api_port}")
    terminals = [Terminal(stack.gateway_port, n) for n in range(terminals_n)]
    try:
        # background loans, not overdue: their pings and calls raise nothing
        loans = [
            make_loan(f"LD{n:04d}", jt808_device(n) if n < terminals_n else f"LD{n:04d}-w",
                      today + dt.timedelta(days=20))
            for n in range(LOANS)
        ]  # fmt: skip
        for first in range(0, len(loans), 20):
            await asyncio.gather(*(http.put_loan(loan) for loan in loans[first : first + 20]))
        await asyncio.gather(*(t.connect() for t in terminals))

        started = time.monotonic()
        end = started + DURATION_S
        latencies: list[float] = []
        probes: list[asyncio.Task[None]] = []
        rss: dict[str, list[tuple[float, float]]] = {name: [] for name in stack.services}
        lags: list[tuple[float, int]] = []
        sent_http = 0

        async def probe(k: int) -> None:
            loan_id = f"LP{k:04d}"
            await http.put_loan(make_loan(loan_id, f"{loan_id}-w", today - dt.timedelta(days=10)))
            await asyncio.sleep(2)
            await http.send("contacts", [item(call(loan_id, f"{loan_id}-c{i}", "powered_off"))
                                         for i in (1, 2)])  # fmt: skip
            await asyncio.sleep(2)
            sent = time.monotonic()
            await http.send("contacts", [item(call(loan_id, f"{loan_id}-c3", "suspended"))])
            latencies.append(await alert_in_api(api, loan_id, PROBE_RULE) - sent)

        async def http_feed() -> None:
            nonlocal sent_http
            per_s = RATE * (1 - JT808_SHARE)
            tick, n = time.monotonic(), 0
            while tick < end:
                pings = [item(home_ping(http_devices[(n + i) % len(http_devices)], n + i, rng))
                         for i in range(int(per_s * 0.95))]  # fmt: skip
                calls = [item(call(f"LD{rng.randrange(LOANS):04d}", f"lc-{n + i}", "reached"))
                         for i in range(int(per_s) - len(pings))]  # fmt: skip
                n += len(pings) + len(calls)
                await asyncio.gather(http.send("gps", pings), http.send("contacts", calls))
                sent_http += len(pings) + len(calls)
                tick += 1.0
                await asyncio.sleep(max(tick - time.monotonic(), 0))

        async def terminal_feed(terminal: Terminal) -> None:
            every = terminals_n / (RATE * JT808_SHARE)
            tick = time.monotonic() + rng.uniform(0, every)
            while tick < end:
                await asyncio.sleep(max(tick - time.monotonic(), 0))
                lat = HOME_LAT + rng.uniform(-0.002, 0.002)
                await terminal.send(Location(lat, HOME_LON, now().replace(microsecond=0)))
                tick += every

        async def sampler() -> None:
            next_lag = time.monotonic()
            while time.monotonic() < end:
                at = time.monotonic() - started
                for name, mib in stack.rss().items():
                    if mib is not None:
                        rss[name].append((at, mib))
                if time.monotonic() >= next_lag:
                    lags.append((at, sum((await group_lag(stack)).values())))
                    next_lag += 15
                stack.supervise()
                await asyncio.sleep(5)

        async def prober() -> None:
            for k in itertools.count():
                if time.monotonic() >= end:
                    return
                probes.append(asyncio.create_task(probe(k)))
                await asyncio.sleep(PROBE_EVERY_S)

        await asyncio.gather(http_feed(), sampler(), prober(),
                             *(terminal_feed(t) for t in terminals))  # fmt: skip
        fed_s = time.monotonic() - started
        await asyncio.gather(*probes)
        async with asyncio.timeout(180):  # every accepted event consumed and committed
            while await group_lag(stack):
                stack.supervise()
                await asyncio.sleep(2)
        drained_s = time.monotonic() - started - fed_s
    finally:
        for terminal in terminals:
            await terminal.close()
        await http.close()
        await api.aclose()

    jt808 = sum(t.accepted for t in terminals)
    accepted = len(http.accepted) + jt808
    rate = accepted / fed_s
    half = [lag for at, lag in lags if at >= DURATION_S / 3]
    slopes = {
        name: slope_mib_per_min([(t, m) for t, m in samples if t >= DURATION_S / 3])
        for name, samples in rss.items()
    }
    memory = "; ".join(
        f"{name} {samples[0][1]:.0f} -> {samples[-1][1]:.0f} MiB (max "
        f"{max(m for _, m in samples):.0f}, slope after warm-up {slopes[name]:+.2f} MiB/min, "
        f"{len(samples)} samples)"
        for name, samples in rss.items()
        if samples
    )
    restarts = {name: (s.restarts, s.kills) for name, s in stack.services.items()}
    print(
        f"\n[faults] load: {fed_s:.0f} s at a target of {RATE:g} events/s: {accepted} events "
        f"acknowledged by the front doors ({len(http.accepted)} HTTP, {jt808} JT/T 808 from "
        f"{len(terminals)} terminals, {LOANS} loans + {len(latencies)} probe loans) = "
        f"{rate:.1f} events/s; HTTP answers {http.statuses}, JT/T 808 resends "
        f"{sum(t.resent for t in terminals)}; worker lag (records) sampled every 15 s: max "
        f"{max(lag for _, lag in lags)}, after the first third max {max(half, default=0)}, "
        f"last {lags[-1][1]}; drained {drained_s:.1f} s after the feed stopped\n"
        f"[faults] load: end-to-end latency (third dead-line call POSTed -> alert listed by "
        f"the API), {len(latencies)} probes: p50 {percentile(latencies, 50):.2f} s, p99 "
        f"{percentile(latencies, 99):.2f} s, max {max(latencies):.2f} s\n"
        f"[faults] load: RSS {memory}; restarts/kills {restarts}"
    )
    assert set(http.statuses) == {200}, http.statuses
    assert len(latencies) == len(probes) and latencies
    # the rate was held: the lag after warm-up stays within 30 s of input
    assert max(half, default=0) <= 30 * RATE, lags
    assert all(restarted == 0 for restarted, _ in restarts.values()), restarts
    if DURATION_S >= 300:
        growing = {name: s for name, s in slopes.items() if s > RSS_SLOPE_LIMIT}
        assert not growing, f"RSS grows by more than {RSS_SLOPE_LIMIT} MiB/min: {growing}"

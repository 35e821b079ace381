"""Fault suite — crash: the worker SIGKILLed at random points of a run while the feed keeps
going; every expected alert exists exactly once and every accepted record is accounted for
(processed + dead-lettered = accepted). Prints its figures; `SKIPWATCH_FAULTS_SEED` picks the
kill points (default 14), `SKIPWATCH_FAULTS_LOANS` the size (default 100 seed cases).

Run: `.venv/bin/pytest -q -s -m faults tests/faults/` (the shared broker or its own)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from rules.events import AlertEvent, AlertStatus, InputEvent
from services.kafka import ensure_topics
from tests.integration.conftest import Stack
from tests.integration.test_pipeline import SEED_RULE, episodes, group_lag
from tests.scenarios import at, contact, loan, payment, ping, seed_case

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SEED = int(os.environ.get("SKIPWATCH_FAULTS_SEED", "14"))
LOANS = int(os.environ.get("SKIPWATCH_FAULTS_LOANS", "100"))
KILLS = 3
INPUTS = ("loans", "payments", "contacts", "gps.raw")


@pytest.fixture
async def stack(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> AsyncIterator[Stack]:
    await ensure_topics(kafka_bootstrap, topic_prefix, 4)
    stack = Stack(kafka_bootstrap, topic_prefix, 4, tmp_path)
    try:
        yield stack
    finally:
        for worker in stack.workers:
            worker.stop()


def bad_records(stack: Stack) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) the worker must dead-letter, one of each kind a few times."""
    out: list[tuple[str, bytes, bytes]] = []
    for n in range(5):
        out.append(("payments", b"L-bad", b'{"event_id": "bad-%d", not json' % n))
        out.append(("gps.raw", b"dev-bad", orjson.dumps({"event_id": f"g{n}", "device_id": "x"})))
        far = contact(f"L{n:03d}", at(2, 9), "reached", 900 + n).model_dump(mode="json")
        far["ts"] = "9999-12-31T23:59:59-14:00"
        out.append(("contacts", f"L{n:03d}".encode(), orjson.dumps(far)))
    return out


async def test_worker_sigkilled_at_random_points_loses_and_repeats_nothing(stack: Stack) -> None:
    rng = random.Random(SEED)
    first: list[InputEvent] = []
    rest: list[InputEvent] = []
    for n in range(LOANS):
        registration, events = seed_case(f"L{n:03d}")
        first += [registration, *events[:5]]
        rest += events[5:]
    rest.append(ping("L000-w", at(2, 13), 130.0, 99))  # moves event time past every `for`
    huge = [payment("L-huge", at(1, 9 + n)).model_dump(mode="json") for n in (1, 2)]
    for n, huge_payment in enumerate(huge):
        huge_payment.update(event_id=f"huge-{n}", amount=1e308)
    bad = bad_records(stack)
    bad += [("payments", b"L-huge", orjson.dumps(v)) for v in huge]
    first.append(loan("L-huge"))

    stack.start_worker("w", instance="w")
    chunks = [first[i : i + 100] for i in range(0, len(first), 100)]
    chunks += [rest[i : i + 100] for i in range(0, len(rest), 100)]
    accepted = len(first) + len(rest) + len(bad)
    started = time.monotonic()
    # after random chunks (at least three apart, so each restart is done before the next kill)
    spaced = range(1, len(chunks) - 1, 3)
    kill_after = sorted(rng.sample(spaced, KILLS))
    kills_at: list[float] = []
    down: list[float] = []

    async def restart_after(pause: float) -> None:
        await asyncio.sleep(pause)
        stack.start_worker(f"w{len(down)}", instance="w")

    restarts: list[asyncio.Task[None]] = []
    for n, chunk in enumerate(chunks):
        await stack.produce(chunk)
        if n == len(chunks) // 2:
            for topic, key, value in bad:
                await stack.produce_raw(topic, key, value)
        if n in kill_after:
            await asyncio.gather(*restarts)
            stack.workers[-1].kill(signal.SIGKILL)
            kills_at.append(time.monotonic() - started)
            down.append(rng.uniform(1.0, 3.0))  # the feed goes on meanwhile
            restarts.append(asyncio.create_task(restart_after(down[-1])))
        await asyncio.sleep(0.25)
    await asyncio.gather(*restarts)
    produced_s = time.monotonic() - started

    def all_fired(alerts: list[AlertEvent]) -> bool:
        return len(episodes(alerts, SEED_RULE)) >= LOANS

    alerts = await stack.alerts(until=all_fired, timeout_s=300)
    async with asyncio.timeout(120):
        while {k: v for k, v in (await group_lag(stack)).items()
               if k.split("[")[0].removeprefix(stack.prefix) in INPUTS}:  # fmt: skip
            stack.check_workers()
            await asyncio.sleep(1)
    settled_s = time.monotonic() - started
    dead = await stack.read_topic("deadletter", lambda r: False, timeout_s=5)

    per_loan = episodes(alerts, SEED_RULE)
    seed_records = Counter(a.loan_id for a in alerts if a.rule_id == SEED_RULE)
    dead_values = Counter(r.value for r in dead)
    expected_dead = {value for _, _, value in bad if value != orjson.dumps(huge[0])}
    watchdog_restarts = sum(w.restarts for w in stack.workers)
    print(
        f"\n[faults] crash: {accepted} records accepted ({LOANS} seed loans + noise + "
        f"{len(bad)} bad), {KILLS} SIGKILLs at {[round(k, 1) for k in kills_at]} s, down "
        f"{[round(d, 1) for d in down]} s while the feed went on; fed in {produced_s:.1f} s, "
        f"settled in {settled_s:.1f} s; seed episodes {len(per_loan)}/{LOANS}, alert records "
        f"{sum(seed_records.values())} (repeats of an identical change: "
        f"{sum(seed_records.values()) - LOANS}); dead letters {len(dead)} "
        f"({len(dead_values)} distinct, expected {len(expected_dead)}); processed = "
        f"{accepted - len(expected_dead)}; watchdog restarts {watchdog_restarts}"
    )
    assert set(per_loan) == {f"L{n:03d}" for n in range(LOANS)}
    for loan_id, changes in per_loan.items():
        assert len({alert_id for alert_id, _ in changes}) == 1, (loan_id, changes)
        assert {status for _, status in changes} == {AlertStatus.FIRING}, (loan_id, changes)
    # every accepted record was consumed and committed (lag 0 above); the bad ones, and only
    # they, are dead-lettered (a replay after a kill may send one twice)
    assert set(dead_values) == expected_dead

"""Fault suite — crash: the worker SIGKILLed at random points of a run while the feed keeps
going; every expected alert exists exactly once and every accepted record is accounted for
(processed + dead-lettered = accepted). Prints its figures; `SKIPWATCH_FAULTS_SEED` picks the
kill points (default 14), `SKIPWATCH_FAULTS_LOANS` the size (default 100 seed cases).

Run: `.venv/bin/pytest -q -s -m faults tests/faults/` (the shared broker or its own)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from rules.events import AlertEvent, AlertStatus, GpsPing, InputEvent, Loan
from services.kafka import ensure_topics
from tests.faults.harness import (
    HOME_LAT,
    HOME_LON,
    FaultStack,
    HttpDoor,
    Location,
    Terminal,
    client,
    item,
    jt808_device,
    make_loan,
)
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
    # every bad record, the two 1e308 payments included (the amount bound refuses them)
    expected_dead = {value for _, _, value in bad}
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


# ---------------------------------------------------------------- the whole stack, front doors

EVENTS = int(os.environ.get("SKIPWATCH_FAULTS_CRASH_EVENTS", "200000"))
CHUNK = 2000


@dataclass
class Feed:
    """The run's events in event-time order, each with the door it goes through."""

    loans: list[Loan]
    events: list[tuple[float, str, Any]]  # (event time, "http" | "jt808:<n>", event)
    seed_loans: set[str]


def crash_feed(total: int, seed_loans: int) -> Feed:
    """`seed_loans` seed cases (half with JT/T 808 trackers, half reporting over HTTP), and
    loans not overdue whose cars stay parked at home, pinging until `total` events: they must
    raise nothing."""
    loans: list[Loan] = []
    events: list[tuple[float, str, Any]] = []
    for n in range(seed_loans):
        loan_id = f"L{n:03d}"
        device = jt808_device(n) if n % 2 == 0 else f"{loan_id}-w"
        registration, seed = seed_case(loan_id)
        loans.append(
            registration.model_copy(
                update={
                    "devices": (registration.devices[0].model_copy(update={"device_id": device}),)
                }
            )
        )
        for event in seed:
            if isinstance(event, GpsPing) and n % 2 == 0:
                location = Location(event.lat, event.lon, event.ts, event.speed_kmh or 0.0)
                events.append((event.ts.timestamp(), f"jt808:{n}", location))
                continue
            if isinstance(event, GpsPing):
                event = event.model_copy(update={"device_id": device})
            events.append((event.ts.timestamp(), "http", event))
    quiet = max((total - len(events) - seed_loans) // 200, 1)
    start, end = at(1, 10).timestamp(), at(2, 13).timestamp()
    per_loan = (total - len(events) - seed_loans - quiet) // quiet
    rng = random.Random(SEED)
    for q in range(quiet):
        n = 1000 + q
        loan_id = f"Q{q:04d}"
        over_jt808 = q % 2 == 0
        device = jt808_device(n) if over_jt808 else f"{loan_id}-w"
        loans.append(make_loan(loan_id, device, dt.date(2026, 4, 15)))
        step = (end - start) / per_loan
        offset = rng.uniform(0, step)
        for k in range(per_loan):
            ts = int(start + offset + k * step)
            lat = HOME_LAT + rng.uniform(-0.001, 0.001)
            if over_jt808:
                events.append((ts, f"jt808:{n}", Location(lat, HOME_LON, at_ts(ts))))
            else:
                events.append((ts, "http", GpsPing.model_validate(
                    {"event_id": f"{device}-n{k}", "device_id": device, "vendor": "test",
                     "ts": at_ts(ts), "lat": lat, "lon": HOME_LON, "speed_kmh": 0.0,
                     "device_kind": "wired", "acc_on": False})))  # fmt: skip
    events.sort(key=lambda e: e[0])
    return Feed(loans, events, {f"L{n:03d}" for n in range(seed_loans)})


def at_ts(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


@pytest.fixture
async def whole_stack(
    kafka_bootstrap: str, topic_prefix: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[FaultStack]:
    await ensure_topics(kafka_bootstrap, topic_prefix, 4)
    stack = FaultStack(
        kafka_bootstrap, topic_prefix, 4, tmp_path, redis_url=redis_url, redis_prefix=redis_prefix
    )
    try:
        yield stack
    finally:
        stack.stop_all()


async def test_whole_stack_sigkilled_loses_and_repeats_nothing(whole_stack: FaultStack) -> None:
    """The worker SIGKILLed three times at random points of a run of `EVENTS` events fed through
    HTTP ingest and JT/T 808 terminals, the gateway and the API once each (each restarted 1-3 s
    later while the feed goes on). Every seed loan's alert exists exactly once (in Kafka: one
    alert id, firing only; in the API: one listed alert), no quiet loan has any alert, every
    event a front door acknowledged is in Kafka, and the worker consumed and committed every
    input record (processed + dead-lettered = accepted)."""
    stack = whole_stack
    rng = random.Random(SEED)
    feed = crash_feed(EVENTS, LOANS)
    stack.start("worker")
    stack.start("api")
    stack.start("gateway")
    await stack.wait_ready("api")
    await stack.wait_ready("gateway")
    http = HttpDoor(f"http://127.0.0.1:{stack.api_port}")
    api = client(f"http://127.0.0.1:{stack.api_port}")
    terminals: dict[str, Terminal] = {}
    for _, door, _ in feed.events:
        if door != "http" and door not in terminals:
            terminals[door] = Terminal(stack.gateway_port, int(door.split(":")[1]))
    size = min(max(len(feed.events) // 40, 100), CHUNK)  # at least 40 chunks: room for 5 kills
    chunks = [feed.events[i : i + size] for i in range(0, len(feed.events), size)]
    # the kill points: three for the worker, one each for the gateway and the API, at distinct
    # random chunks at least two apart, so that each restart is done before the next kill
    points = sorted(rng.sample(range(1, len(chunks) - 1, 2), KILLS + 2))
    victims = ["worker"] * KILLS + ["gateway", "api"]
    rng.shuffle(victims)
    plan = dict(zip(points, victims, strict=True))
    kills: list[tuple[str, float, float]] = []  # (service, at s, down s)
    restarts: list[asyncio.Task[None]] = []
    started = time.monotonic()

    async def restart_after(name: str, pause: float) -> None:
        await asyncio.sleep(pause)
        stack.services[name].start()

    async def send_jt808(terminal: Terminal, locations: list[Location]) -> None:
        for location in locations:
            await terminal.send(location)

    try:
        for first in range(0, len(feed.loans), 50):
            await asyncio.gather(*(http.put_loan(x) for x in feed.loans[first : first + 50]))
        await asyncio.gather(*(t.connect() for t in terminals.values()))
        for n, chunk in enumerate(chunks):
            pings = [item(e) for _, door, e in chunk if door == "http" and isinstance(e, GpsPing)]
            others = [item(e) for _, door, e in chunk
                      if door == "http" and not isinstance(e, GpsPing)]  # fmt: skip
            by_terminal: dict[str, list[Location]] = {}
            for _, door, e in chunk:
                if door != "http":
                    by_terminal.setdefault(door, []).append(e)
            sends = [http.send("gps", pings[i : i + 500]) for i in range(0, len(pings), 500)]
            sends += [http.send("contacts", others)] if others else []
            sends += [send_jt808(terminals[d], locs) for d, locs in by_terminal.items()]
            victim = plan.get(n)
            if victim is not None:
                await asyncio.gather(*restarts)
                # SIGKILL while this chunk is in flight
                task = asyncio.gather(*sends)
                await asyncio.sleep(rng.uniform(0.05, 0.5))
                stack.services[victim].kill()
                down = rng.uniform(1.0, 3.0)
                kills.append((victim, time.monotonic() - started, down))
                restarts.append(asyncio.create_task(restart_after(victim, down)))
                await task
            else:
                await asyncio.gather(*sends)
            stack.supervise()
        await asyncio.gather(*restarts)
        fed_s = time.monotonic() - started

        def all_fired(alerts: list[AlertEvent]) -> bool:
            return len(episodes(alerts, SEED_RULE)) >= len(feed.seed_loans)

        alerts = await stack.alerts(until=all_fired, timeout_s=600)
        async with asyncio.timeout(300):
            while {k: v for k, v in (await group_lag(stack)).items()
                   if k.split("[")[0].removeprefix(stack.prefix) in INPUTS}:  # fmt: skip
                stack.supervise()
                await asyncio.sleep(1)
        settled_s = time.monotonic() - started
        listed: list[dict[str, Any]] = []

        async def api_lists_all() -> bool:
            listed.clear()
            cursor = None
            while True:
                params = {"rule": SEED_RULE, "limit": 200, **({"cursor": cursor} if cursor else {})}
                try:
                    page = (await api.get("/v1/alerts", params=params)).json()
                except httpx.TransportError:
                    return False
                listed.extend(page["items"])
                cursor = page["next_cursor"]
                if not cursor:
                    return len(listed) >= len(feed.seed_loans)

        async with asyncio.timeout(120):
            while not await api_lists_all():
                await asyncio.sleep(1)
    finally:
        for terminal in terminals.values():
            await terminal.close()
        await http.close()
        await api.aclose()

    stored: dict[str, int] = {}
    for topic in INPUTS:
        records = await stack.read_topic(topic, lambda r: False, timeout_s=8)
        stored[topic] = len({orjson.loads(r.value).get("event_id", r.key) for r in records})
    gps = await stack.read_topic("gps.raw", lambda r: False, timeout_s=8)
    stored_ids = {orjson.loads(r.value)["event_id"] for r in gps}
    contacts = await stack.read_topic("contacts", lambda r: False, timeout_s=5)
    stored_ids |= {orjson.loads(r.value)["event_id"] for r in contacts}
    loans_stored = {r.key.decode() for r in await stack.read_topic("loans", lambda r: False, 5)}
    jt808_stored = len({orjson.loads(r.value)["event_id"] for r in gps
                        if orjson.loads(r.value)["device_id"].startswith("jt808:")})  # fmt: skip
    jt808_locations = sum(1 for _, door, _ in feed.events if door != "http")
    jt808_accepted = sum(t.accepted for t in terminals.values())
    http_events = {i for i in http.accepted if not i.startswith("loan:")}
    accepted = len(http_events) + jt808_accepted + len(feed.loans)
    dead = await stack.read_topic("deadletter", lambda r: False, timeout_s=5)
    worker_dead = [r for r in dead if dict(r.headers).get("skipwatch-ingest-source") is None]
    per_loan = episodes(alerts, SEED_RULE)
    seed_records = Counter(a.loan_id for a in alerts if a.rule_id == SEED_RULE)
    others = {a.loan_id for a in alerts} - feed.seed_loans
    in_api = Counter(a["loan_id"] for a in listed)
    print(
        f"\n[faults] crash (whole stack): {len(feed.events) + len(feed.loans)} events fed "
        f"through the front doors ({len(feed.seed_loans)} seed loans, "
        f"{len(feed.loans) - len(feed.seed_loans)} quiet loans; {jt808_locations} JT/T 808 "
        f"locations from {len(terminals)} terminals, the rest HTTP) in {fed_s:.1f} s, settled "
        f"{settled_s:.1f} s after the start; SIGKILLs "
        f"{[(name, round(t, 1), round(d, 1)) for name, t, d in kills]} (service, at s, down s); "
        f"HTTP answers {http.statuses} (0: connection refused or cut), resent batches "
        f"{http.retries}; JT/T 808 reconnects {sum(t.reconnects for t in terminals.values())}, "
        f"locations resent {sum(t.resent for t in terminals.values())}\n"
        f"[faults] crash (whole stack): accepted {accepted} (HTTP {len(http_events)} events + "
        f"{len(feed.loans)} loans, JT/T 808 {jt808_accepted}); in Kafka: distinct ids {stored}, "
        f"JT/T 808 pings {jt808_stored}; accepted but not in Kafka "
        f"{len(http_events - stored_ids)} HTTP, {jt808_accepted - jt808_stored} JT/T 808, "
        f"{len(feed.loans) - len(loans_stored)} loans; worker dead letters {len(worker_dead)}; "
        f"processed = {accepted - len(worker_dead)}, lag 0; seed episodes "
        f"{len(per_loan)}/{len(feed.seed_loans)}, alert records {sum(seed_records.values())}, "
        f"listed by the API {len(listed)} ({len(in_api)} loans); alerts of quiet loans "
        f"{len(others)}; worker restarts asked (exit 75) {stack.services['worker'].restarts}"
    )
    assert http_events <= stored_ids, "a 2xx for an event that is not in Kafka"
    assert jt808_accepted == jt808_locations == jt808_stored
    assert loans_stored == {x.loan_id for x in feed.loans}
    assert not worker_dead, [(dict(r.headers), r.value[:200]) for r in worker_dead[:5]]
    assert set(per_loan) == feed.seed_loans
    for loan_id, changes in per_loan.items():
        assert len({alert_id for alert_id, _ in changes}) == 1, (loan_id, changes)
        assert {status for _, status in changes} == {AlertStatus.FIRING}, (loan_id, changes)
    assert not others, sorted(others)[:10]
    assert len(listed) == len(feed.seed_loans) and set(in_api) == feed.seed_loans

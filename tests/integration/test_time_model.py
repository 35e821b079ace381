"""The time model on the real broker (docs/streaming.md, "Time model"): the alerts are a
function of the data, not of when the worker read it.

- A whole recording produced as a backlog before the worker starts gives the alert episodes
  `skipwatch backtest` gives on the same recording (event clock).
- Live (wall clock), a worker stopped for longer than the allowed lateness while a tracker is
  cut gives, once restarted, the alerts a worker that never stopped would have given, at their
  original times: the episodes `skipwatch backtest` gives on the same records.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from rules.backtest import run_backtest
from rules.config import EngineConfig
from rules.engine import Engine
from rules.events import AlertEvent, AlertStatus, InputEvent, Loan
from rules.events.recording import EVENT_TYPE_BY_TOPIC
from rules.places import load_places
from rules.spec import CATALOG_DIR, load_rules
from services.simulator import Simulation, SimulationConfig, produce_records
from tests.integration.conftest import Stack
from tests.integration.modes import compare, describe, episodes, wait_all_read
from tests.integration.test_pipeline import diagnosis
from tests.scenarios import CST, contact, loan, ping

pytestmark = pytest.mark.integration


async def test_a_backlog_gives_the_alert_episodes_of_the_backtest(stack: Stack) -> None:
    """30 loans × 10 days (seed 11, half of them skips, late and repeated records), produced
    whole before the worker starts: the worker reads the small topics (payments, contacts) far
    ahead of the pings; the episodes must still be the backtest's.

    The simulator's noise behaviours are left out (`noise_fraction=0`): they include trackers'
    buffered uploads after a dead zone, which a recording holds at their upload but whose arrival
    it does not carry, so an event-clock replay releases them at their event time while the
    backtest takes them where they stand. An alert such an upload ends (the tracker's silence)
    then differs; docs/streaming.md, "Known gaps", has it.
    """
    lateness_s = 0.0
    config = SimulationConfig(loans=30, days=10, seed=11, skip_fraction=0.5, noise_fraction=0.0)
    records = list(Simulation(config).records())
    events: list[InputEvent] = [
        EVENT_TYPE_BY_TOPIC[r.topic].model_validate(r.value) for r in records
    ]
    want = episodes(run_backtest(events, Engine.default(), lateness_s=lateness_s).alerts)
    assert len(want) > 25, "the recording must exercise the rules"
    assert any(AlertStatus.RESOLVED in s for s in want.values()), "episodes that also end"

    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = await produce_records(records, producer, topic_prefix=stack.prefix)
    finally:
        await producer.stop()
    assert sent == len(records)
    produced: dict[str, int] = defaultdict(int)
    for record in records:
        produced[record.topic] += 1

    started = time.monotonic()
    stack.start_worker(SKIPWATCH_WORKER__ALLOWED_LATENESS_S=str(lateness_s))
    try:
        await wait_all_read(stack, produced, timeout_s=150)
    except TimeoutError:
        pytest.fail(f"the worker did not read the backlog:\n{await diagnosis(stack)}")
    took = time.monotonic() - started

    def same(alerts: list[AlertEvent]) -> bool:
        return episodes(alerts) == want

    got = episodes(await stack.alerts(until=same, timeout_s=20))
    missing, extra, differ = compare(got, want)
    print(
        f"backlog of {len(records):,} records read in {took:.0f} s: {len(want)} episodes in the "
        f"backtest, {len(got)} from the worker; missing {len(missing)}, extra {len(extra)}, "
        f"ended differently {len(differ)}"
    )
    assert (missing, extra, differ) == ([], [], []), describe(missing, extra, differ, got, want)


def rules_with_power_cut_for(tmp: Path, for_: str) -> Path:
    """The shipped catalog with tracker-power-cut's `for` shortened (15m in the catalog)."""
    target = tmp / "rules"
    target.mkdir()
    for path in CATALOG_DIR.glob("*.yaml"):
        shutil.copy(path, target / path.name)
    trackers = target / "trackers.yaml"
    text = trackers.read_text()
    old = "condition: \"'power_cut' in device.alarms\"\n    for: 15m"
    assert old in text
    trackers.write_text(text.replace(old, old.replace("15m", for_)))
    return target


async def test_wall_clock_outage_longer_than_the_allowed_lateness_loses_no_tracker_cut(
    stack: Stack,
) -> None:
    """The wired tracker reports a power cut; the worker is killed; during the outage the
    wireless tracker reports a removal alarm. The worker comes back after longer than the allowed
    lateness (and after the power cut's `for` ran out): both alerts fire, at their original
    instants.

    The power cut's `for` (65 s) ends in the outage. Judging lateness by the time the worker
    reads a record (the old model: `now` = the wall clock when read) advances the loan past that
    deadline first, and the removal, more than 60 s older than it, becomes history: never
    alerted (checked in-process with the engine: only tracker-power-cut fires that way).
    """
    rules = rules_with_power_cut_for(stack.tmp, "65s")
    env = {
        "SKIPWATCH_WORKER__CLOCK": "wall",
        "SKIPWATCH_WORKER__ALLOWED_LATENESS_S": "30",
        "SKIPWATCH_WORKER__RULES_DIR": str(rules),
    }
    worker = stack.start_worker(**env)
    wired, wireless = "L-cut-w", "L-cut-x"
    # Nothing overdue: a loan has no time of its own; the backtest applies it at the first
    # event's time, the live worker at its arrival, so an overdue rule would start 30 s apart
    # (the pings below are dated before the loan's arrival; a recording has no arrivals).
    fields = loan("L-cut", [(wired, "wired"), (wireless, "wireless")]).model_dump(mode="json")
    fields["schedule"] = [{"installment_no": 1, "due_date": "2027-12-01", "amount": 3200}]
    loan_event = Loan.model_validate(fields)
    await stack.produce([loan_event])
    # The pings' times are taken once the loan is in Kafka: a loan has no time of its own and is
    # applied at its arrival, so a power cut dated before that arrival would start at it.
    now = dt.datetime.now(CST).replace(microsecond=0) + dt.timedelta(seconds=1)
    pings: list[InputEvent] = []
    for n in range(3):
        when = now - dt.timedelta(seconds=30 - 10 * n)
        pings.append(ping(wired, when, 1.0, n))
        pings.append(ping(wireless, when, 1.0, n, device_kind="wireless"))
    cut_at = now + dt.timedelta(seconds=1)
    pings.append(ping(wired, cut_at, 1.0, 10, alarms=["power_cut"]))
    await asyncio.sleep(max((cut_at - dt.datetime.now(CST)).total_seconds(), 0.0))
    await stack.produce(pings)
    try:
        await wait_all_read(stack, {"loans": 1, "gps.raw": len(pings)}, timeout_s=60)
    except TimeoutError:
        pytest.fail(f"the worker did not read the pings:\n{await diagnosis(stack)}")
    worker.kill(signal.SIGKILL)

    # the outage: the wireless tracker is found and removed two seconds after the power cut
    removed_at = cut_at + dt.timedelta(seconds=2)
    await asyncio.sleep(max((removed_at - dt.datetime.now(CST)).total_seconds(), 0.0))
    removal = ping(wireless, removed_at, 1.0, 11, alarms=["removal"], device_kind="wireless")
    await stack.produce([removal])
    power_cut_due = cut_at + dt.timedelta(seconds=65)
    back_at = power_cut_due + dt.timedelta(seconds=5)
    await asyncio.sleep((back_at - dt.datetime.now(CST)).total_seconds())
    outage_s = (dt.datetime.now(CST) - removed_at).total_seconds() + 2
    assert outage_s > 30, "stopped for longer than the allowed lateness"
    stack.start_worker("w1-restarted", instance="w1", **env)

    wanted = {"tracker-removed": removed_at, "tracker-power-cut": power_cut_due}

    def fired(alerts: list[AlertEvent]) -> bool:
        return wanted.keys() <= {a.rule_id for a in alerts if a.status == AlertStatus.FIRING}

    alerts = await stack.alerts(until=fired, timeout_s=90)
    started = {
        a.rule_id: a.started_at
        for a in alerts
        if a.rule_id in wanted and a.status == AlertStatus.FIRING
    }
    print(f"outage {outage_s:.0f} s; fired: {sorted(started.items())}")
    assert started == wanted, await diagnosis(stack)

    # The same recording through the backtest (with the same rules): the same episodes. A
    # contact once the worker is back moves the backtest's watermark past the power cut's
    # deadline, as the wall clock moved the worker's.
    later = contact("L-cut", dt.datetime.now(CST).replace(microsecond=0), "reached", 1)
    await stack.produce([later])
    recorded: list[InputEvent] = [loan_event, *pings, removal, later]
    engine = Engine(
        load_rules(rules), load_places(CATALOG_DIR / "places"),
        EngineConfig(allowed_lateness_s=30),
    )  # fmt: skip
    want = episodes(run_backtest(recorded, engine).alerts)
    assert {rule for rule, *_ in want} >= wanted.keys(), "the backtest fires both too"

    def same(alerts: list[AlertEvent]) -> bool:
        return episodes(alerts) == want

    got = episodes(await stack.alerts(until=same, timeout_s=30))
    missing, extra, differ = compare(got, want)
    print(
        f"wall-clock outage: backtest {len(want)} episodes, worker {len(got)}; missing "
        f"{len(missing)}, extra {len(extra)}, ended differently {len(differ)}"
    )
    assert (missing, extra, differ) == ([], [], []), describe(missing, extra, differ, got, want)

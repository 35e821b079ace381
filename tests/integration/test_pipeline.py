"""The Faust worker on the real broker: seed case, timer-driven absence, crash and takeover."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
from collections import Counter, defaultdict
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError
from rocksdict import AccessType, Rdict

from rules.events import AlertEvent, AlertStatus, InputEvent
from services.infra import free_port
from streams.app import key_partition
from tests.integration.conftest import Stack
from tests.scenarios import at, cure, loan, ping, seed_case

pytestmark = pytest.mark.integration
SEED_RULE = "seed-missed-unreachable-out-of-region"


def episodes(alerts: list[AlertEvent], rule: str) -> dict[str, set[tuple[str, AlertStatus]]]:
    """Distinct (alert_id, status) per loan for one rule; a re-sent identical change is one."""
    seen: dict[str, set[tuple[str, AlertStatus]]] = defaultdict(set)
    for alert in alerts:
        if alert.rule_id == rule:
            seen[alert.loan_id].add((alert.alert_id, alert.status))
    return seen


async def group_offsets(stack: Stack) -> dict[Any, int]:
    """The worker group's committed offset per topic-partition (none before the group formed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(f"{stack.prefix}worker")
    except GroupCoordinatorNotAvailableError:  # the group has not formed yet
        return {}
    finally:
        await admin.close()
    return {tp: o.offset for tp, o in offsets.items()}


async def committed_through(stack: Stack, topic: str, minimum: int) -> bool:
    """True when the worker's group has committed at least `minimum` records of a topic."""
    offsets = await group_offsets(stack)
    return sum(n for tp, n in offsets.items() if tp.topic == stack.prefix + topic) >= minimum


async def group_lag(stack: Stack) -> dict[str, int]:
    """Records not yet committed by the worker group, per input topic-partition that lags."""
    committed = await group_offsets(stack)
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(committed))
    finally:
        try:
            await consumer.stop()
        except asyncio.CancelledError:
            # aiokafka#647: a consumer stopped soon after its start raises its own task's
            # cancellation; a cancellation of this task is passed on
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
    lag = {f"{tp.topic}[{tp.partition}]": ends[tp] - n for tp, n in committed.items()}
    return {name: n for name, n in sorted(lag.items()) if n}


async def diagnosis(stack: Stack) -> str:
    """What the group has not committed, and the last worker's log with its task stacks."""
    worker = stack.workers[-1]
    if worker.proc and worker.proc.poll() is None:
        worker.proc.send_signal(signal.SIGUSR1)  # streams/runner.py prints every task's stack
        await asyncio.sleep(1)
    restarts = [w.restarts for w in stack.workers]
    return f"lag: {await group_lag(stack)}; restarts: {restarts}\n{worker.log_tail(400)}"


async def wait_committed(stack: Stack, topic: str, minimum: int, timeout_s: float = 120) -> None:
    async with asyncio.timeout(timeout_s):
        while not await committed_through(stack, topic, minimum):
            await asyncio.sleep(0.5)


async def test_seed_case_fires_one_critical_alert_with_evidence_and_cure_resolves(
    stack: Stack,
) -> None:
    worker = stack.start_worker()
    loan_record, events = seed_case("L-seed")
    await stack.produce([loan_record, *events])

    def fired(alerts: list[AlertEvent]) -> bool:
        return any(a.rule_id == SEED_RULE for a in alerts)

    alerts = await stack.alerts(until=fired)
    assert fired(alerts), worker.log_tail()
    critical = [a for a in alerts if a.severity == "critical"]
    assert {(a.rule_id, a.status) for a in critical} == {(SEED_RULE, AlertStatus.FIRING)}
    assert len({a.alert_id for a in critical}) == 1
    alert = critical[0]
    assert alert.loan_id == "L-seed"
    assert alert.location is not None
    evidence = {item.get("name") or item.get("signal"): item for item in alert.evidence}
    assert evidence, "an alert carries the values that made it true"
    text = str(alert.evidence)
    for signal_name in ("payment.days_past_due", "vehicle.outside_home_region"):
        assert signal_name in text

    await stack.produce(cure("L-seed"))

    def resolved(alerts: list[AlertEvent]) -> bool:
        return any(a.rule_id == SEED_RULE and a.status == AlertStatus.RESOLVED for a in alerts)

    alerts = await stack.alerts(until=resolved)
    seed = [a for a in alerts if a.rule_id == SEED_RULE]
    assert [a.status for a in seed] == [AlertStatus.FIRING, AlertStatus.RESOLVED], worker.log_tail()
    assert {a.alert_id for a in seed} == {alert.alert_id}

    # the loan's state is in the changelog under its own key, on its input partition, so the
    # worker that owns that partition after a rebalance is the one that recovers it
    state_records = await stack.read_topic(
        "worker-loan-state-changelog", lambda records: len(records) > 0, timeout_s=10
    )
    assert {(r.key, r.partition) for r in state_records} == {
        (b"L-seed", stack.partition_of(b"L-seed"))
    }


async def test_due_date_passing_without_any_event_fires_by_timer(stack: Stack) -> None:
    """Loan L-silent gets no event after registration; only another loan's pings move event
    time. Thirty days after its due date the sweep must raise overdue-30-days for it."""
    stack.start_worker()
    silent = loan("L-silent", due="2026-03-01")
    busy = loan("L-busy", due="2026-05-01")
    await stack.produce([silent, busy])
    device = "L-busy-w"
    start = at(1, 8)
    pings: list[InputEvent] = [
        ping(device, start + dt.timedelta(days=d), 1.0 + (d % 3), d) for d in range(0, 34)
    ]
    await stack.produce(pings)

    def overdue(alerts: list[AlertEvent]) -> bool:
        return any(a.rule_id == "overdue-30-days" for a in alerts)

    alerts = await stack.alerts(until=overdue)
    overdue_alerts = [a for a in alerts if a.rule_id == "overdue-30-days"]
    assert {a.loan_id for a in overdue_alerts} == {"L-silent"}
    # fired at the deadline (end of 31 March in Shanghai), not at some later event's time
    assert overdue_alerts[0].event_time == dt.datetime(2026, 3, 31, 0, 0, tzinfo=at(1, 0).tzinfo)


def split_seed_cases(count: int) -> tuple[list[InputEvent], list[InputEvent]]:
    """Registrations, contacts and the first pings; then the rest of the pings, and last a
    ping at 13:00 that moves event time past every loan's 30-minute `for`.

    Without it a loan could be left pending: with the event clock the watermark is the newest
    event time of all partitions, so when other partitions' 12:00 pings are evaluated first,
    the sweep advances a loan to its deadline before its own 10:40-11:50 pings arrive, they
    count as late (history, not live), its rule holds only from its 12:00 ping, and nothing
    later would reach 12:30. Seen once in a loop of this test.
    """
    first: list[InputEvent] = []
    second: list[InputEvent] = []
    for n in range(count):
        loan_record, events = seed_case(f"L{n:03d}")
        first.append(loan_record)
        first.extend(events[:5])
        second.extend(events[5:])
    second.append(ping("L000-w", at(2, 13), 130.0, 99))
    return first, second


async def test_worker_killed_mid_stream_recovers_state_and_alerts_once(stack: Stack) -> None:
    loans = 40
    first, second = split_seed_cases(loans)
    worker = stack.start_worker()
    await stack.produce(first)
    # the contacts (state the alert needs) are processed and committed: they live only in state
    await wait_committed(stack, "contacts", 2 * loans)
    worker.kill(signal.SIGKILL)

    await stack.produce(second)
    # the same member comes back (a restarted pod keeps its name: static group membership)
    stack.start_worker("w1-restarted", instance="w1")

    def all_fired(alerts: list[AlertEvent]) -> bool:
        return len(episodes(alerts, SEED_RULE)) == loans

    alerts = await stack.alerts(until=all_fired, timeout_s=150)
    per_loan = episodes(alerts, SEED_RULE)
    assert len(per_loan) == loans, await diagnosis(stack)
    for loan_id, changes in per_loan.items():
        assert len({alert_id for alert_id, _ in changes}) == 1, loan_id
        assert changes == {(next(iter(changes))[0], AlertStatus.FIRING)}, loan_id


async def test_rocksdb_worker_killed_restarts_from_its_local_state_keys_in_their_partitions(
    stack: Stack,
) -> None:
    """The large-portfolio store: tables written from mixed-partition batches and the sweep
    land in their key's partition database, and a worker killed and restarted on the same
    disk recovers from it (plus the changelog tail)."""
    loans = 20
    first, second = split_seed_cases(loans)
    rocksdb = {"SKIPWATCH_WORKER__STORE": "rocksdb://"}
    worker = stack.start_worker("w1", **rocksdb)
    await stack.produce(first)
    await wait_committed(stack, "contacts", 2 * loans)
    worker.kill(signal.SIGKILL)
    await stack.produce(second)
    restarted = stack.start_worker("w1", **rocksdb)  # same name: same data directory

    def all_fired(alerts: list[AlertEvent]) -> bool:
        return len(episodes(alerts, SEED_RULE)) == loans

    alerts = await stack.alerts(until=all_fired, timeout_s=150)
    per_loan = episodes(alerts, SEED_RULE)
    assert len(per_loan) == loans, await diagnosis(stack)
    assert all(len(changes) == 1 for changes in per_loan.values())
    restarted.stop()

    databases = sorted((stack.tmp / "w1").rglob("loan-state-*.db"))
    assert databases, "no RocksDB state on disk"
    held: dict[str, int] = {}
    for path in databases:
        partition = int(path.stem.rsplit("-", 1)[1])
        db = Rdict(str(path), access_type=AccessType.read_only())
        try:
            # besides the loans, Faust's own key: the changelog offset the database holds
            held.update((k.decode(), partition) for k in db.keys() if not k.startswith(b"__faust"))  # noqa: SIM118
        finally:
            db.close()
    assert sorted(held) == sorted(f"L{n:03d}" for n in range(loans))
    assert all(key_partition(key, stack.partitions) == p for key, p in held.items()), held


async def test_two_workers_share_partitions_and_one_takes_over(stack: Stack) -> None:
    loans = 40
    first, second = split_seed_cases(loans)
    w1 = stack.start_worker("w1")
    stack.start_worker("w2")
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(90):
            while True:
                try:
                    [response] = await admin.describe_consumer_groups([f"{stack.prefix}worker"])
                except GroupCoordinatorNotAvailableError:  # the group has not formed yet
                    await asyncio.sleep(0.5)
                    continue
                _error, _group, state, _ptype, _protocol, members, *_ = response.groups[0]
                if len(members) == 2 and state == "Stable":
                    break
                await asyncio.sleep(0.5)
    finally:
        await admin.close()

    await stack.produce(first)
    await wait_committed(stack, "contacts", 2 * loans)
    w1.kill(signal.SIGKILL)
    await stack.produce(second)

    def all_fired(alerts: list[AlertEvent]) -> bool:
        return len(episodes(alerts, SEED_RULE)) == loans

    alerts = await stack.alerts(until=all_fired, timeout_s=150)
    per_loan = episodes(alerts, SEED_RULE)
    assert len(per_loan) == loans, await diagnosis(stack)
    ids = Counter(alert_id for changes in per_loan.values() for alert_id, _ in changes)
    assert all(count == 1 for count in ids.values())
    assert all(len(changes) == 1 for changes in per_loan.values())


async def test_transaction_markers_between_records_are_not_taken_for_skipped_records(
    stack: Stack,
) -> None:
    """A loan system writing with a transactional producer leaves a commit marker (an offset
    without a record) after every transaction. The worker's gap guard must go on past them,
    not send the partition back for ever."""
    stack.start_worker()
    loan_record, events = seed_case("L-txn")
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.bootstrap, transactional_id=f"{stack.prefix}loan-system"
    )
    await producer.start()
    try:
        for event in [loan_record, *events]:
            async with producer.transaction():
                await producer.send(*stack.record(event))
    finally:
        await producer.stop()

    def fired(alerts: list[AlertEvent]) -> bool:
        return any(a.rule_id == SEED_RULE for a in alerts)

    alerts = await stack.alerts(until=fired)
    assert {a.loan_id for a in alerts if a.rule_id == SEED_RULE} == {"L-txn"}, await diagnosis(
        stack
    )


async def test_pings_before_binding_are_kept_and_evaluated_when_the_loan_arrives(
    stack: Stack,
) -> None:
    """Trackers are installed before funding: the seed case's pings and contacts come first,
    the loan (which binds the device) last. The alert must still fire."""
    stack.start_worker()
    loan_record, events = seed_case("L-late-bind")
    await stack.produce(events)
    await asyncio.sleep(2)
    await stack.produce([loan_record])

    def fired(alerts: list[AlertEvent]) -> bool:
        return any(a.rule_id == SEED_RULE for a in alerts)

    alerts = await stack.alerts(until=fired)
    assert {a.loan_id for a in alerts if a.rule_id == SEED_RULE} == {"L-late-bind"}


async def test_rebinding_a_device_moves_its_pings_to_the_new_loan(stack: Stack) -> None:
    stack.start_worker()
    old_loan, events = seed_case("L-old")
    # the device is moved to another loan before any ping is sent
    moved_device = [("L-old-w", "wired")]
    new_loan = loan("L-new", devices=moved_device)
    old_loan_without = loan("L-old", devices=[("L-old-other", "wired")])
    contacts_for_new = [
        e.model_copy(update={"loan_id": "L-new", "event_id": e.event_id + "-new"})
        for e in events
        if not isinstance(e, type(events[0]))
    ]
    await stack.produce([old_loan])
    await wait_committed(stack, "device-bindings", 1)
    await stack.produce([old_loan_without, new_loan])
    # bind L-old-w→L-old, bind L-old-other, release L-old-w, bind L-old-w→L-new: all applied
    await wait_committed(stack, "device-bindings", 4)
    await stack.produce(contacts_for_new + [e for e in events if isinstance(e, type(events[0]))])
    # the old loan also has its dead phone: only the device decides who fires
    await stack.produce([e for e in events if not isinstance(e, type(events[0]))])

    def fired(alerts: list[AlertEvent]) -> bool:
        return any(a.rule_id == SEED_RULE for a in alerts)

    alerts = await stack.alerts(until=fired)
    await asyncio.sleep(3)
    alerts = await stack.alerts(until=lambda a: False, timeout_s=3)
    assert {a.loan_id for a in alerts if a.rule_id == SEED_RULE} == {"L-new"}, [
        (a.loan_id, a.rule_id, a.status) for a in alerts
    ]


async def test_bad_records_are_dead_lettered_with_reason_and_processing_goes_on(
    stack: Stack,
) -> None:
    stack.start_worker()
    await stack.produce_raw("payments", b"L1", b"{not json")
    await stack.produce_raw("gps.raw", b"dev-x", b'{"event_id": "x", "device_id": "dev-x"}')
    await stack.produce_raw("contacts", b"L1", b'{"event_id": "c", "loan_id": "L1", "ts": '
                            b'"2026-03-01T10:00:00", "party": "borrower", "channel": "call", '
                            b'"outcome": "reached"}')  # fmt: skip
    loan_record, events = seed_case("L-after-bad")
    await stack.produce([loan_record, *events])

    def three(records: list[object]) -> bool:
        return len(records) >= 3

    dead = await stack.read_topic("deadletter", three)
    reasons = {
        (dict(r.headers)["skipwatch-source-topic"].decode(), dict(r.headers)["skipwatch-reason"])
        for r in dead
    }
    prefix = stack.prefix
    assert reasons == {
        (prefix + "payments", b"undecodable"),
        (prefix + "gps.raw", b"invalid"),
        (prefix + "contacts", b"invalid"),
    }
    details = " ".join(dict(r.headers)["skipwatch-detail"].decode() for r in dead)
    assert "device_kind" in details and "ts" in details
    assert {r.value for r in dead} >= {b"{not json"}

    alerts = await stack.alerts(until=lambda a: any(x.rule_id == SEED_RULE for x in a))
    assert any(a.rule_id == SEED_RULE for a in alerts), "the worker went on after bad records"


async def test_three_financed_cars_at_one_lot_fire_the_cluster_rule(stack: Stack) -> None:
    """Cross-loan: the worker counts the lender's cars at a risk place (place-moves →
    place-occupancy → place-counts) and gives each loan at the place the count."""
    stack.start_worker()
    lot = (30.7142, 104.0335)  # cd-2p-001, a second-pledge lot in rules/catalog/places
    loans = [loan(f"L-lot-{n}") for n in range(3)] + [loan("L-elsewhere")]
    pings: list[InputEvent] = []
    # The cars park at the lot an hour apart (9:00, 10:00, 11:00) and report while parking; a car
    # counts toward the lot only after a 2 h stay (EngineConfig.occupancy_min_dwell_s), so all
    # three count from 13:00. Another loan's car, elsewhere, moves the event clock past that.
    for n in range(3):
        device = f"L-lot-{n}-w"
        for i in range(6):
            when = at(2, 9 + n) + dt.timedelta(minutes=10 * i)
            p = ping(device, when, 0.0, i)
            pings.append(p.model_copy(update={"lat": lot[0], "lon": lot[1], "speed_kmh": 0.0}))
    pings += [ping("L-elsewhere-w", at(2, 13) + dt.timedelta(minutes=10 * i), 0.0, i)
              for i in range(4)]  # fmt: skip
    await stack.produce([*loans])
    await wait_committed(stack, "device-bindings", 4)
    await stack.produce(pings)

    def clustered(alerts: list[AlertEvent]) -> bool:
        fired = {a.loan_id for a in alerts if a.rule_id == "financed-cars-cluster-at-lot"}
        return len(fired) == 3

    alerts = await stack.alerts(until=clustered)
    cluster = [a for a in alerts if a.rule_id == "financed-cars-cluster-at-lot"]
    assert {a.loan_id for a in cluster} == {"L-lot-0", "L-lot-1", "L-lot-2"}, stack.workers[
        0
    ].log_tail()
    assert all(a.status == AlertStatus.FIRING for a in cluster)


async def test_operations_port_reports_starting_then_ready_and_serves_metrics(
    stack: Stack,
) -> None:
    port = free_port()
    worker = stack.start_worker(SKIPWATCH_WORKER__METRICS_PORT=str(port))
    answers: list[tuple[int, dict[str, Any]]] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        async with asyncio.timeout(120):
            while not answers or answers[-1][0] != 200:
                stack.check_workers()
                try:
                    response = await client.get("/readyz")
                except httpx.TransportError:  # not listening yet
                    await asyncio.sleep(0.2)
                    continue
                answers.append((response.status_code, response.json()))
                await asyncio.sleep(0.2)
        starting = {"status": "unavailable", "detail": "starting: recovering table state"}
        assert answers[0] == (503, starting)
        assert answers[-1] == (200, {"status": "ok", "detail": "processing"}), worker.log_tail()
        live = await client.get("/healthz")
        assert live.status_code == 200
        assert live.json()["detail"].startswith("event loop heartbeat")

        await stack.produce([loan("L-ops", due="2026-03-01")])
        await wait_committed(stack, "loans", 1)
        metrics = (await client.get("/metrics")).text
    assert 'skipwatch_worker_events_total{outcome="applied",topic="loans"} 1.0' in metrics

"""No poison pill (issue 14, items 1 and 3): a record or a stored state that makes a step of the
worker fail is dead-lettered with the reason and its loan quarantined; the lane goes on, the
worker never restarts, the deadline index is rebuilt past it."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rules.engine import Engine
from rules.events import AlertEvent
from rules.state import LoanState
from services.infra import free_port
from tests.integration.conftest import Stack, WorkerProcess
from tests.scenarios import at, contact, loan, payment, ping, seed_case

pytestmark = pytest.mark.integration
SEED_RULE = "seed-missed-unreachable-out-of-region"


async def ops(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        return await client.get(path)


async def wait_ready(stack: Stack, port: int, timeout_s: float = 120) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            stack.check_workers()
            try:
                response = await ops(port, "/readyz")
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                return dict(response.json())
            await asyncio.sleep(0.3)


def assert_never_restarted(worker: WorkerProcess) -> None:
    assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
    assert worker.restarts == 0, worker.log_tail()


async def dead_letters(stack: Stack, wanted: int) -> list[tuple[bytes | None, str, str, str]]:
    """(key, source topic, reason, detail) of the dead-letter topic, once it holds `wanted`."""
    records = await stack.read_topic("deadletter", lambda r: len(r) >= wanted, timeout_s=90)
    out = []
    for record in records:
        headers = {k: v.decode() for k, v in record.headers}
        topic = headers["skipwatch-source-topic"].removeprefix(stack.prefix)
        out.append((record.key, topic, headers["skipwatch-reason"], headers["skipwatch-detail"]))
    return out


async def test_two_payments_of_1e308_and_a_year_10000_contact_stop_nothing(stack: Stack) -> None:
    port = free_port()
    worker = stack.start_worker(SKIPWATCH_WORKER__METRICS_PORT=str(port))
    await stack.produce([loan("L-huge")])
    # straight to Kafka, past any bound of the HTTP API
    for n in (1, 2):
        value = payment("L-huge", at(1, 9 + n)).model_dump(mode="json")
        value.update(event_id=f"huge-{n}", amount=1e308)
        await stack.produce_raw("payments", b"L-huge", orjson.dumps(value))
    far = contact("L-huge", at(1, 12), "reached", 9).model_dump(mode="json")
    far["ts"] = "9999-12-31T23:59:59-14:00"
    await stack.produce_raw("contacts", b"L-huge", orjson.dumps(far))
    # the loan goes on, and so does every other loan
    await stack.produce([contact("L-huge", at(1, 13), "powered_off", 10)])
    after_record, after_events = seed_case("L-after")
    await stack.produce([after_record, *after_events])

    def after_fired(alerts: list[AlertEvent]) -> bool:
        return any(a.rule_id == SEED_RULE and a.loan_id == "L-after" for a in alerts)

    assert after_fired(await stack.alerts(until=after_fired)), worker.log_tail()
    dead = await dead_letters(stack, 2)
    by_topic = {topic: (key, reason, detail) for key, topic, reason, detail in dead}
    assert set(by_topic) == {"payments", "contacts"}, dead
    key, reason, detail = by_topic["payments"]
    # one of the two (the second: 1e308 alone is finite) is refused; with model bounds both are
    assert key == b"L-huge" and reason in {"unencodable_state", "invalid"}, dead
    assert by_topic["contacts"][1] in {"future_timestamp", "invalid"}, dead
    assert_never_restarted(worker)

    metrics = (await ops(port, "/metrics")).text
    ready = (await ops(port, "/readyz")).json()
    if reason == "unencodable_state":
        assert "is inf" in detail
        line = 'skipwatch_worker_quarantined_total{reason="unencodable_state",step="evaluate"} 1.0'
        assert line in metrics
        assert ready == {
            "status": "ok",
            "detail": "processing; 1 quarantined: L-huge (unencodable_state in evaluate)",
        }
    # every state stored for the loan reads back, and the powered-off call after it was applied
    states = await stack.read_topic("worker-loan-state-changelog", lambda r: False, timeout_s=5)
    huge = [LoanState.from_bytes(r.value) for r in states if r.key == b"L-huge"]
    assert huge and huge[-1].contact_event, "the loan's later record was applied"


def same_partition_ids(stack: Stack, anchor: str, count: int) -> list[str]:
    wanted = stack.partition_of(anchor.encode())
    names = (f"L-bad-{n}" for n in range(1000))
    return [name for name in names if stack.partition_of(name.encode()) == wanted][:count]


async def test_a_poisoned_stored_state_is_quarantined_and_the_deadline_rebuild_goes_on(
    stack: Stack,
) -> None:
    """What an older version left in the changelog (`null` where the paid sum was infinite) and
    plain garbage, before a valid state on the same partition: recovery and the rebuild of the
    deadline index go past them; the valid loan's absence deadline still fires."""
    engine = Engine.default()
    silent = engine.new_state("L-silent")
    engine.apply(silent, loan("L-silent", due="2026-03-01"), at(1, 0))
    nulled = orjson.loads(silent.to_bytes())
    nulled["in_"][0] = [*nulled["in_"][0], None]  # the paid sum that was infinite
    null_id, junk_id = same_partition_ids(stack, "L-silent", 2)
    nulled["id"] = null_id
    changelog = stack.prefix + "worker-loan-state-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(changelog, stack.partitions, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in [
            (null_id, orjson.dumps(nulled)),
            (junk_id, b"{not a state"),
            ("L-silent", silent.to_bytes()),
        ]:
            await producer.send_and_wait(changelog, value, key=key.encode())
    finally:
        await producer.stop()

    port = free_port()
    worker = stack.start_worker(SKIPWATCH_WORKER__METRICS_PORT=str(port))
    ready = await wait_ready(stack, port)
    assert ready["detail"].startswith("processing; 2 quarantined: "), ready
    assert f"{null_id} (state_undecodable in deadline_rebuild)" in ready["detail"]
    assert f"{junk_id} (state_undecodable in deadline_rebuild)" in ready["detail"]

    # a record for the poisoned loan is dead-lettered with the reason, not applied to garbage
    await stack.produce([contact(null_id, at(2, 9), "reached", 1)])
    dead = await dead_letters(stack, 1)
    assert [(k, t, r) for k, t, r, _ in dead] == [
        (null_id.encode(), "contacts", "state_undecodable")
    ]
    assert "is null" in dead[0][3]

    # event time moves on through another loan: the valid state's deadline was indexed
    busy = loan("L-busy", due="2026-05-01")
    pings = [ping("L-busy-w", at(1, 8) + dt.timedelta(days=d), 1.0 + d % 3, d) for d in range(34)]
    await stack.produce([busy])
    await stack.produce(pings)

    def overdue(alerts: list[AlertEvent]) -> bool:
        return any(a.rule_id == "overdue-30-days" for a in alerts)

    alerts = await stack.alerts(until=overdue)
    assert {a.loan_id for a in alerts if a.rule_id == "overdue-30-days"} == {"L-silent"}
    assert_never_restarted(worker)

"""Fault suite — broker restart mid-run, every producer at once: its own broker (never the
shared one) SIGKILLed and restarted while HTTP ingest (API process), JT/T 808 terminals
(gateway process), the simulator (`skipwatch simulate --kafka`) and the worker all produce.

- API: only 200 and 503 answers, every 503 with `Retry-After`, `/readyz` 503 while the broker
  is down, 2xx again after the restart, and every acknowledged id in Kafka;
- gateway: no location answered OK while the broker is down (the terminal keeps and resends
  it), `/readyz` 503 meanwhile, every location answered OK in Kafka, OK again after restart;
- simulator: exits 0, every record of its recording is in Kafka;
- worker: processes again after the restart — a loan registered and called three times after
  the restart gets its `phone-dead-overdue` alert.

Run: `.venv/bin/pytest -q -s -m faults tests/faults/test_broker_restart.py` (~2 min)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

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
    item,
    jt808_device,
    make_loan,
    now,
)
from tests.integration.conftest import REPO_ROOT
from tests.integration.test_producer_recovery import Broker, broker  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TERMINALS = 20
SENDERS = 4


@pytest.fixture
async def stack(
    broker: Broker,  # noqa: F811
    topic_prefix: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[FaultStack]:
    await ensure_topics(broker.bootstrap, topic_prefix, 3)
    stack = FaultStack(
        broker.bootstrap, topic_prefix, 3, tmp_path,
        redis_url=redis_url, redis_prefix=redis_prefix, clock="wall",
    )  # fmt: skip
    try:
        yield stack
    finally:
        stack.stop_all()


async def stored(bootstrap: str, topics: list[str], idle_polls: int = 6) -> dict[str, set[str]]:
    """Event ids (loans: loan ids) per topic, read to the end."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=f"check-{uuid.uuid4().hex}",
        auto_offset_reset="earliest", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    found: dict[str, set[str]] = {t: set() for t in topics}
    try:
        idle = 0
        while idle < idle_polls:
            batches = await consumer.getmany(timeout_ms=500)
            idle = 0 if batches else idle + 1
            for tp, records in batches.items():
                for r in records:
                    value = orjson.loads(r.value)
                    found[tp.topic].add(value.get("event_id") or value.get("loan_id"))
    finally:
        await consumer.stop()
    return found


class JtTerminal(Terminal):
    """Notes when each location was answered OK."""

    def __init__(self, port: int, n: int) -> None:
        super().__init__(port, n)
        self.ok_at: list[float] = []

    async def send(self, location: Location) -> None:
        before = self.accepted
        await super().send(location)
        if self.accepted > before:
            self.ok_at.append(time.monotonic())


async def test_every_producer_recovers_from_a_broker_restart(
    stack: FaultStack,
    broker: Broker,  # noqa: F811
) -> None:
    today = now().date()
    stack.start("worker")
    stack.start("api")
    stack.start("gateway")
    await stack.wait_ready("api")
    await stack.wait_ready("gateway")
    api = client(f"http://127.0.0.1:{stack.api_port}")
    ops = httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.gateway_ops_port}", timeout=5)
    answers: list[tuple[float, int, list[str], str | None]] = []
    terminals = [JtTerminal(stack.gateway_port, n) for n in range(TERMINALS)]
    door = HttpDoor(f"http://127.0.0.1:{stack.api_port}")
    for n in range(TERMINALS):
        await door.put_loan(make_loan(f"LB{n:03d}", jt808_device(n), today + dt.timedelta(days=20)))
    await asyncio.gather(*(t.connect() for t in terminals))
    recording = stack.tmp / "simulated.jsonl"
    sim_log = (stack.tmp / "simulator.log").open("wb")
    simulator = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "services.cli", "simulate", "--loans", "20", "--days", "2",
         "--seed", "5", "--kafka", "--rate", "150", "--out", str(recording)],
        env={**stack.env(), "SKIPWATCH_KAFKA__PRODUCE_TIMEOUT_S": "5"}, cwd=REPO_ROOT,
        stdout=sim_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    stop = finished = False
    base = now() - dt.timedelta(hours=1)

    async def sender(k: int) -> None:
        batch = 0
        while not stop:
            ids = [f"b{k}-{batch}-{i}" for i in range(50)]
            batch += 1
            items = [{"event_id": i, "device_id": f"dev-{k}", "vendor": "load", "lat": HOME_LAT,
                      "lon": HOME_LON, "ts": now().isoformat(), "device_kind": "wired"}
                     for i in ids]  # fmt: skip
            try:
                response = await api.post("/v1/ingest/gps", json=items)
            except httpx.TransportError:
                continue
            answers.append((time.monotonic(), response.status_code, ids,
                            response.headers.get("retry-after")))  # fmt: skip
            if response.status_code != 200:
                await asyncio.sleep(0.2)

    async def tracker(terminal: JtTerminal) -> None:
        k = 0
        while not stop:
            k += 1
            when = (base + dt.timedelta(seconds=k)).replace(microsecond=0)
            await terminal.send(Location(HOME_LAT, HOME_LON, when))
            await asyncio.sleep(0.2)

    def since(t: float) -> Counter[int]:
        return Counter(status for at, status, _, _ in answers if at >= t)

    tasks = [asyncio.create_task(sender(k)) for k in range(SENDERS)]
    tasks += [asyncio.create_task(tracker(t)) for t in terminals]
    try:
        await asyncio.sleep(4)
        # the simulator is producing (its portfolio is generated first): its loans are in Kafka
        async with asyncio.timeout(120):
            while not any(i.startswith("loan-") for i in
                          (await stored(broker.bootstrap, [stack.prefix + "loans"], idle_polls=1))
                          [stack.prefix + "loans"]):  # fmt: skip
                assert simulator.returncode is None, (stack.tmp / "simulator.log").read_text()
                await asyncio.sleep(0.5)
        await asyncio.sleep(2)
        assert set(since(0)) == {200}, since(0)
        killed_at = time.monotonic()
        await asyncio.to_thread(broker.kill)
        api_not_ready = gateway_not_ready = 0
        async with asyncio.timeout(90):
            while not since(killed_at + 6)[503]:  # past the API's produce timeout
                api_not_ready += (await api.get("/readyz")).status_code == 503
                gateway_not_ready += (await ops.get("/readyz")).status_code == 503
                await asyncio.sleep(0.5)
        await asyncio.sleep(3)
        api_not_ready += (await api.get("/readyz")).status_code == 503
        gateway_not_ready += (await ops.get("/readyz")).status_code == 503
        ok_while_down = sum(1 for t in terminals for at in t.ok_at if at > killed_at + 6)
        down_s = time.monotonic() - killed_at
        await asyncio.to_thread(broker.start)
        restarted_at = time.monotonic()
        async with asyncio.timeout(120):
            while (
                not since(time.monotonic() - 1)[200]
                or (await api.get("/readyz")).status_code != 200
            ):
                stack.supervise()
                await asyncio.sleep(0.5)
        api_back_s = time.monotonic() - restarted_at
        async with asyncio.timeout(120):
            while not any(at > restarted_at for t in terminals for at in t.ok_at):
                await asyncio.sleep(0.2)
        gateway_back_s = time.monotonic() - restarted_at
        # the worker: a loan registered and called three times now fires its alert
        probe = f"LBP{uuid.uuid4().hex[:6]}"
        await door.put_loan(make_loan(probe, f"{probe}-w", today - dt.timedelta(days=10)))
        await asyncio.sleep(1)
        sent = time.monotonic()
        await door.send("contacts", [item(call(probe, f"{probe}-c{i}", outcome)) for i, outcome
                                     in enumerate(("powered_off", "powered_off", "suspended"))])  # fmt: skip
        async with asyncio.timeout(180):
            while True:
                stack.supervise()
                with contextlib.suppress(TimeoutError):
                    worker_alert_s = await alert_in_api(api, probe, "phone-dead-overdue", 5) - sent
                    break
        await asyncio.sleep(2)  # the load goes on after the recovery
        finished = True
    finally:
        if not finished and simulator.returncode is None:
            simulator.kill()
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for terminal in terminals:
            await terminal.close()
        await api.aclose()
        await ops.aclose()
        await door.close()
    async with asyncio.timeout(300):
        sim_rc = await simulator.wait()
    sim_log.close()

    prefix = stack.prefix
    topics = [prefix + t for t in ("loans", "gps.raw", "payments", "contacts")]
    found = await stored(broker.bootstrap, topics)
    every = set().union(*found.values())
    acked = {i for _, status, ids, _ in answers if status == 200 for i in ids}
    statuses = Counter(status for _, status, _, _ in answers)
    unavailable = [a for a in answers if a[1] == 503]
    simulated = set()
    for line in recording.read_text().splitlines():
        value = orjson.loads(line)["value"]
        simulated.add(value.get("event_id") or value.get("loan_id"))
    jt808_ok = sum(t.accepted for t in terminals)
    jt808_stored = {i for i in found[prefix + "gps.raw"] if i.startswith("jt808-")}
    worker = stack.services["worker"]
    print(
        f"\n[faults] broker SIGKILL + restart, every producer: broker down {down_s:.1f} s; "
        f"API: {len(answers)} requests {dict(statuses)}, 2xx again {api_back_s:.1f} s after the "
        f"restart, readyz 503 seen {api_not_ready}x while down, {len(acked)} ids acknowledged, "
        f"{len(acked - every)} not stored; gateway: {jt808_ok} locations answered OK from "
        f"{TERMINALS} terminals, {ok_while_down} of them while the broker was down, "
        f"{len(jt808_stored)} distinct in Kafka, resent {sum(t.resent for t in terminals)}, "
        f"readyz 503 seen {gateway_not_ready}x, OK again {gateway_back_s:.1f} s after the "
        f"restart; simulator: exit {sim_rc}, {len(simulated)} records, "
        f"{len(simulated - every)} not in Kafka; worker: exits asking a restart "
        f"{worker.restarts}, alert for a loan called after the restart {worker_alert_s:.1f} s "
        f"after its third call"
    )
    assert acked <= every, "a 2xx for an event that is not in Kafka"
    assert set(statuses) <= {200, 503}, statuses
    assert unavailable and all(retry is not None for *_, retry in unavailable)
    assert api_not_ready > 0 and gateway_not_ready > 0
    assert ok_while_down == 0
    assert len(jt808_stored) >= jt808_ok
    assert sim_rc == 0, (stack.tmp / "simulator.log").read_text()[-3000:]
    assert simulated <= every
    assert answers[-1][1] == 200

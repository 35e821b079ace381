"""Recovering producers (issue 14 item 2): HTTP ingest under load while its Kafka broker is
killed and restarted. Ingest answers 503 with Retry-After while it cannot persist, never a 2xx
for a record that is not in Kafka, and 2xx again once the broker is back; /readyz follows.

The test starts its own broker (never the shared one) and prints its figures."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from services import infra
from services.api import create_app
from services.kafka import ensure_topics
from services.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]

VENDOR_KEY = "recovery-vendor-key-000001"
PARTITIONS = 3


@dataclass
class Broker:
    data: Path
    port: int
    controller: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL, as a crashed broker or node goes: nothing flushed, no clean shutdown."""
        pid = int((self.data / "kafka" / "kafka.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while infra.port_open(self.port):
            time.sleep(0.1)

    def start(self) -> None:
        infra.kafka_up(self.data, self.port, self.controller)


@pytest.fixture
def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    own = Broker(tmp_path, infra.free_port(), infra.free_port())
    own.start()
    try:
        yield own  # type: ignore[misc]
    finally:
        infra.kafka_down(tmp_path)


@dataclass
class Load:
    """Requests of 50 pings each from a few concurrent senders; what each answer was."""

    client: httpx.AsyncClient
    answers: list[tuple[float, int, list[str], str | None]] = field(default_factory=list)
    stop: bool = False

    async def sender(self, n: int) -> None:
        batch = 0
        while not self.stop:
            ids = [f"r{n}-{batch}-{i}" for i in range(50)]
            batch += 1
            items = [
                {"event_id": i, "device_id": f"dev-{hash(i) % 97}", "lat": 30.25, "lon": 120.16,
                 "ts": "2026-05-01T08:00:00+08:00", "device_kind": "wired"}
                for i in ids
            ]  # fmt: skip
            try:
                response = await self.client.post(
                    "/v1/ingest/gps", json=items, headers={"X-Api-Key": VENDOR_KEY}
                )
            except httpx.TransportError:
                continue
            self.answers.append(
                (time.monotonic(), response.status_code, ids, response.headers.get("retry-after"))
            )
            if response.status_code != 200:
                await asyncio.sleep(0.2)

    def since(self, t: float) -> Counter[int]:
        return Counter(status for at, status, _, _ in self.answers if at >= t)


async def ready(client: httpx.AsyncClient) -> int:
    return (await client.get("/readyz")).status_code


async def stored_ids(bootstrap: str, topic: str) -> set[str]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"check-{uuid.uuid4().hex}",
        auto_offset_reset="earliest", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    ids: set[str] = set()
    try:
        idle = 0
        while idle < 6:
            batches = await consumer.getmany(timeout_ms=500)
            idle = 0 if batches else idle + 1
            for batch in batches.values():
                ids.update(r.value.split(b'"event_id":"', 1)[1].split(b'"', 1)[0].decode()
                           for r in batch)  # fmt: skip
    finally:
        await consumer.stop()
    return ids


async def test_ingest_recovers_after_a_broker_restart_and_never_acks_what_it_did_not_store(
    broker: Broker, topic_prefix: str, redis_url: str, redis_prefix: str
) -> None:
    await ensure_topics(broker.bootstrap, topic_prefix, PARTITIONS)
    settings = Settings.model_validate(
        {"kafka": {"bootstrap_servers": broker.bootstrap, "topic_prefix": topic_prefix,
                   "partitions": PARTITIONS, "produce_timeout_s": 5},
         "redis": {"url": redis_url, "key_prefix": redis_prefix},
         "auth": {"ingest_keys": {VENDOR_KEY: "vendor-a"}},
         "api": {"projector_enabled": False}}
    )  # fmt: skip
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=60) as c:
            load = Load(c)
            senders = [asyncio.create_task(load.sender(n)) for n in range(4)]
            try:
                await asyncio.sleep(4)
                assert load.since(0)[200] > 0 and set(load.since(0)) == {200}, load.since(0)
                assert await ready(c) == 200

                killed_at = time.monotonic()
                await asyncio.to_thread(broker.kill)
                not_ready = 0
                async with asyncio.timeout(60):
                    while not load.since(killed_at + 6)[503]:  # past the produce timeout
                        not_ready += await ready(c) == 503
                        await asyncio.sleep(0.5)
                not_ready += await ready(c) == 503
                down_s = time.monotonic() - killed_at
                await asyncio.to_thread(broker.start)
                restarted_at = time.monotonic()
                async with asyncio.timeout(120):
                    while not load.since(time.monotonic() - 1)[200] or await ready(c) != 200:
                        await asyncio.sleep(0.5)
                recovered_s = time.monotonic() - restarted_at
                await asyncio.sleep(3)  # load goes on after recovery
            finally:
                load.stop = True
                await asyncio.gather(*senders)
            recreated = app.state.skipwatch.publisher.recreated

    acked = {i for _, status, ids, _ in load.answers if status == 200 for i in ids}
    stored = await stored_ids(broker.bootstrap, topic_prefix + "gps.raw")
    statuses = Counter(status for _, status, _, _ in load.answers)
    unavailable = [a for a in load.answers if a[1] == 503]
    print(
        f"\n[faults] broker SIGKILL + restart under HTTP load: {len(load.answers)} requests "
        f"{dict(statuses)}; broker down {down_s:.1f} s; ingest 2xx again {recovered_s:.1f} s "
        f"after the restart; readyz 503 seen {not_ready}x while down; producers replaced "
        f"{recreated}; {len(acked)} ids acknowledged, {len(acked - stored)} of them not stored"
    )
    assert acked - stored == set(), "a 2xx for an event that is not in Kafka"
    assert set(statuses) <= {200, 503}, statuses
    assert unavailable and all(retry is not None for *_, retry in unavailable)
    assert not_ready > 0, "readyz said ready while ingest could not persist"
    assert load.answers[-1][1] == 200

"""HTTP ingest against the real broker and Redis: in Kafka before the 2xx, right keys and
partitions, rejects dead-lettered with reasons, repeats skipped, 503 when Kafka is not there."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from rules.events import GpsPing
from services.api import create_app
from services.api.dedup import RedisDedup
from services.kafka import ensure_topics
from services.settings import Settings

pytestmark = pytest.mark.integration

VENDOR_KEY = "integration-vendor-key-0001"
OPERATOR = "integration-operator-token-01"
PARTITIONS = 3


@dataclass
class Ingest:
    client: httpx.AsyncClient
    bootstrap: str
    prefix: str

    async def end_offsets(self, topic: str) -> int:
        """Records in the topic now (sum of partition end offsets), without waiting for more."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        try:
            partitions = [TopicPartition(self.prefix + topic, p) for p in range(PARTITIONS)]
            offsets = await consumer.end_offsets(partitions)
            return int(sum(offsets.values()))
        finally:
            await consumer.stop()

    async def read(self, topic: str, count: int) -> list[ConsumerRecord[bytes, bytes]]:
        consumer = AIOKafkaConsumer(
            self.prefix + topic,
            bootstrap_servers=self.bootstrap,
            group_id=f"reader-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        records: list[ConsumerRecord[bytes, bytes]] = []
        try:
            for _ in range(60):
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
                if len(records) >= count:
                    break
        finally:
            await consumer.stop()
        return records


def settings_for(bootstrap: str, prefix: str, redis_url: str, redis_prefix: str) -> Settings:
    return Settings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topic_prefix": prefix,
                "partitions": PARTITIONS,
                "produce_timeout_s": 10,
            },
            "redis": {"url": redis_url, "key_prefix": redis_prefix},
            "auth": {"tokens": {OPERATOR: "operator"}, "ingest_keys": {VENDOR_KEY: "vendor-a"}},
        }
    )


@pytest.fixture
async def ingest(
    kafka_bootstrap: str, topic_prefix: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[Ingest]:
    await ensure_topics(kafka_bootstrap, topic_prefix, PARTITIONS)
    settings = settings_for(kafka_bootstrap, topic_prefix, redis_url, redis_prefix)
    # The default wiring: real producer from make_producer, Redis dedup.
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Ingest(client, kafka_bootstrap, topic_prefix)


def ping(n: int, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event_id": f"it-ping-{n}",
        "device_id": f"dev-{n % 11}",
        "ts": "2024-05-01T08:00:00+08:00",
        "lat": 30.25,
        "lon": 120.16,
        "device_kind": "wired",
    }
    item.update(overrides)
    return item


async def test_pings_are_in_kafka_before_the_answer(ingest: Ingest) -> None:
    items = [ping(n) for n in range(300)]
    items[10] = ping(10, lat=95.0)
    items[20] = ping(20, ts="2024-05-01T08:00:00")
    response = await ingest.client.post(
        "/v1/ingest/gps", json=items, headers={"X-Api-Key": VENDOR_KEY}
    )
    assert response.status_code == 200
    assert response.json()["accepted"] == 298
    # Read the log end right after the answer: acks=all means the records are already there.
    assert await ingest.end_offsets("gps.raw") == 298
    assert await ingest.end_offsets("deadletter") == 2

    records = await ingest.read("gps.raw", 298)
    assert len(records) == 298
    by_id = {GpsPing.model_validate_json(r.value).event_id: r for r in records}
    assert set(by_id) == {f"it-ping-{n}" for n in range(300)} - {"it-ping-10", "it-ping-20"}
    for event_id, record in by_id.items():
        n = int(event_id.rsplit("-", 1)[1])
        assert record.key == f"dev-{n % 11}".encode()
        assert GpsPing.model_validate_json(record.value).vendor == "vendor-a"

    # Same partition as aiokafka's own default partitioner picks for the key (and Java's).
    producer = AIOKafkaProducer(bootstrap_servers=ingest.bootstrap)
    await producer.start()
    try:
        for device in {r.key for r in records}:
            assert device is not None
            meta = await producer.send_and_wait(ingest.prefix + "gps.raw", b"{}", key=device)
            expected = {r.partition for r in records if r.key == device}
            assert expected == {meta.partition}
    finally:
        await producer.stop()


async def test_rejects_are_dead_lettered_with_reason_headers(ingest: Ingest) -> None:
    items = [ping(1, lat=95.0), ping(2, colour="red")]
    response = await ingest.client.post(
        "/v1/ingest/gps", json=items, headers={"X-Api-Key": VENDOR_KEY}
    )
    assert [r["index"] for r in response.json()["rejected"]] == [0, 1]
    dead = await ingest.read("deadletter", 2)
    assert len(dead) == 2
    by_detail = {}
    for record in dead:
        headers = {name: value for name, value in record.headers}
        assert headers["skipwatch-reason"] == b"invalid_event"
        assert headers["skipwatch-source-topic"] == (ingest.prefix + "gps.raw").encode()
        assert record.key == b"dev-1" or record.key == b"dev-2"
        by_detail[record.key] = (headers["skipwatch-detail"], orjson.loads(record.value))
    assert by_detail[b"dev-1"][0].startswith(b"lat:")
    assert by_detail[b"dev-1"][1] == items[0]
    assert b"colour" in by_detail[b"dev-2"][0]


async def test_repeats_are_skipped_across_requests(ingest: Ingest) -> None:
    items = [ping(n) for n in range(50)]
    headers = {"X-Api-Key": VENDOR_KEY}
    first = await ingest.client.post("/v1/ingest/gps", json=items, headers=headers)
    again = await ingest.client.post("/v1/ingest/gps", json=[*items, ping(77)], headers=headers)
    assert first.json()["accepted"] == 50
    assert again.json()["accepted"] == 1
    assert again.json()["duplicates"] == 50
    assert await ingest.end_offsets("gps.raw") == 51


async def test_payments_contacts_and_loans_keyed_by_loan(ingest: Ingest) -> None:
    headers = {"Authorization": f"Bearer {OPERATOR}"}
    payment = {
        "event_id": "it-pay-1",
        "loan_id": "loan-it-1",
        "ts": "2024-05-01T00:00:00+08:00",
        "type": "payment_failed",
        "installment_no": 1,
        "amount": 3100.0,
    }
    contact = {
        "event_id": "it-call-1",
        "loan_id": "loan-it-1",
        "ts": "2024-05-02T10:00:00+08:00",
        "party": "borrower",
        "channel": "call",
        "outcome": "suspended",
    }
    loan = {
        "borrower": {"name": "李四", "phone": "+8613900139000"},
        "vehicle": {"vin": "LSVAU2180N2183294", "plate": "浙A54321"},
        "devices": [{"device_id": "dev-1", "kind": "wired"}],
    }
    assert (
        await ingest.client.post("/v1/ingest/payments", json=[payment], headers=headers)
    ).json()["accepted"] == 1
    assert (
        await ingest.client.post("/v1/ingest/contacts", json=[contact], headers=headers)
    ).json()["accepted"] == 1
    assert (
        await ingest.client.put("/v1/loans/loan-it-1", json=loan, headers=headers)
    ).status_code == 200
    for topic in ("payments", "contacts", "loans"):
        (record,) = await ingest.read(topic, 1)
        assert record.key == b"loan-it-1"


async def test_readyz_is_200_with_kafka_and_redis(ingest: Ingest) -> None:
    response = await ingest.client.get("/readyz")
    body = response.json()
    # the view is reported, not part of readiness: fresh topics, the projector may still read
    assert body.pop("view") in {"ok", "rebuilding"}
    assert body == {"status": "ready", "kafka": True, "dedup": True}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_kafka_not_reachable_is_503_with_retry_after(
    redis_url: str, redis_prefix: str
) -> None:
    settings = settings_for(f"127.0.0.1:{_closed_port()}", "nowhere.", redis_url, redis_prefix)
    app = create_app(settings, dedup=RedisDedup(redis_url, redis_prefix))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.post(
                "/v1/ingest/gps", json=[ping(1)], headers={"X-Api-Key": VENDOR_KEY}
            )
            assert response.status_code == 503
            assert int(response.headers["Retry-After"]) > 0
            assert (await client.get("/readyz")).status_code == 503

"""The real broker and the real Redis: 10,000 events through a consumer group; Redis round-trips."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from rules.events import GpsPing
from services.kafka import TOPICS, ensure_topics

pytestmark = pytest.mark.integration


async def test_topics_created_co_partitioned_and_idempotent(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    created = await ensure_topics(kafka_bootstrap, topic_prefix, partitions=3)
    assert sorted(created) == sorted(topic_prefix + t.name for t in TOPICS)
    assert await ensure_topics(kafka_bootstrap, topic_prefix, partitions=3) == []

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic_prefix + t.name for t in TOPICS])
        counts = {d["topic"]: len(d["partitions"]) for d in described}
        assert set(counts.values()) == {3}
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_prefix + "loans")]
        )
        entries = {c[0]: c[1] for c in configs[0].resources[0][4]}
        assert entries["cleanup.policy"] == "compact"
    finally:
        await admin.close()


async def test_ten_thousand_events_round_trip_through_a_consumer_group(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    await ensure_topics(kafka_bootstrap, topic_prefix, partitions=4)
    topic = topic_prefix + "gps.raw"
    sent: dict[str, GpsPing] = {}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i in range(10_000):
            ping = GpsPing(
                event_id=f"e{i}", device_id=f"dev{i % 97}", vendor="test",
                ts=f"2026-03-01T08:{i // 600 % 60:02d}:{i % 60:02d}+08:00",  # type: ignore[arg-type]
                lat=30 + i / 1e5, lon=104.0, device_kind="wired",  # type: ignore[arg-type]
            )  # fmt: skip
            sent[ping.event_id] = ping
            futures.append(
                await producer.send(
                    topic, ping.model_dump_json().encode(), key=ping.device_id.encode()
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=f"g-{uuid.uuid4().hex}",
        auto_offset_reset="earliest", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    received: dict[str, GpsPing] = {}
    try:
        async with asyncio.timeout(60):
            while len(received) < len(sent):
                batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for tp, records in batches.items():
                    for record in records:
                        ping = GpsPing.model_validate_json(record.value)
                        assert record.key == ping.device_id.encode()
                        assert ping.event_id not in received, "a record was delivered twice"
                        received[ping.event_id] = ping
                        # same key, same partition: per-device order is kept
                        assert tp.partition == record.partition
                await consumer.commit()
        assert len(consumer.assignment()) == 4
    finally:
        await consumer.stop()
    assert received == sent


async def test_redis_round_trips(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        doc = {"alert_id": "a1", "title": "失联预警", "risk_score": 87}
        await client.set(redis_prefix + "alert:a1", orjson.dumps(doc))
        await client.zadd(redis_prefix + "alerts:by_time", {"a1": 1700000000})
        assert orjson.loads(await client.get(redis_prefix + "alert:a1")) == doc
        assert await client.zrange(redis_prefix + "alerts:by_time", 0, -1) == [b"a1"]
        await client.delete(redis_prefix + "alert:a1", redis_prefix + "alerts:by_time")
        assert await client.get(redis_prefix + "alert:a1") is None
    finally:
        await client.aclose()

"""The simulator against the real broker: what it produces is read back, keyed per DESIGN §3."""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from typer.testing import CliRunner

from rules.events import decode_event
from services.kafka import INPUT_TOPICS, ensure_topics
from services.settings import get_settings
from services.simulator import Simulation, SimulationConfig, produce_records

pytestmark = pytest.mark.integration


async def _read_all(bootstrap: str, prefix: str, expected: int) -> list[tuple[str, bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        *(prefix + t for t in INPUT_TOPICS),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    got: list[tuple[str, bytes, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(got) < expected:
                batches = await consumer.getmany(timeout_ms=1000)
                for partition, messages in batches.items():
                    for m in messages:
                        assert m.key is not None and m.value is not None
                        got.append((partition.topic.removeprefix(prefix), m.key, m.value))
    finally:
        await consumer.stop()
    return got


def _check_keys(got: list[tuple[str, bytes, bytes]]) -> Counter[str]:
    for topic, key, value in got:
        event = decode_event(topic, value)
        field = "device_id" if topic == "gps.raw" else "loan_id"
        assert key.decode() == getattr(event, field)
    return Counter(topic for topic, _, _ in got)


async def test_a_simulation_round_trips_through_kafka_with_the_right_keys(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    await ensure_topics(kafka_bootstrap, topic_prefix, partitions=3)
    records = list(
        Simulation(SimulationConfig(loans=8, days=2, seed=5, skip_fraction=0.25)).records()
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = await produce_records(records, producer, topic_prefix=topic_prefix)
    finally:
        await producer.stop()
    assert sent == len(records)

    got = await _read_all(kafka_bootstrap, topic_prefix, len(records))
    assert len(got) == len(records)
    counts = _check_keys(got)
    assert counts == Counter(r.topic for r in records)
    # Per key, Kafka keeps the order the simulator produced (one partition per key).
    sent_gps = [r.value["event_id"] for r in records if r.key == "dev-1-w"]
    read_gps = [orjson.loads(v)["event_id"] for t, k, v in got if k == b"dev-1-w"]
    assert read_gps == sent_gps


def test_the_cli_produces_to_the_configured_topics_at_a_rate(
    kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("SKIPWATCH_KAFKA__TOPIC_PREFIX", topic_prefix)
    monkeypatch.setenv("SKIPWATCH_KAFKA__PARTITIONS", "2")
    for name in [k for k in os.environ if k.startswith("SKIPWATCH_") and "KAFKA" not in k]:
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    try:
        from services.cli_simulate import app

        result = CliRunner().invoke(
            app, ["--loans", "3", "--days", "0.5", "--kafka", "--rate", "2000"]
        )
        assert result.exit_code == 0, result.output
    finally:
        get_settings.cache_clear()
    expected = len(list(Simulation(SimulationConfig(loans=3, days=0.5)).records()))
    got = asyncio.run(_read_all(kafka_bootstrap, topic_prefix, expected))
    assert len(got) == expected
    assert _check_keys(got)["loans"] == 3

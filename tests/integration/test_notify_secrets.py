"""Webhook secrets at rest, on the shared broker: what the endpoints topic holds is encrypted;
a clear record written before encryption still loads and is encrypted on its next write; no key
configured while endpoints have secrets stops the start with an error naming the setting."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cryptography.fernet import Fernet

from services.notify import service
from services.notify.records import EndpointRecord, KeyRecord
from services.notify.sealing import SecretsUnreadable
from services.notify.signing import new_secret
from services.notify.ssrf import AllowList, SsrfGuard
from services.notify.state import ENDPOINTS, NotifyState, ensure_notify_topics, partitions_of
from services.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
GUARD = SsrfGuard(AllowList.parse(["127.0.0.1"]))


def settings_with(bootstrap: str, prefix: str, *keys: str) -> Settings:
    return Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": prefix, "partitions": 2},
            "notify": {"allow_list": ["127.0.0.1"], "metrics_port": 0, "secret_keys": list(keys)},
        }
    )


@pytest.fixture
async def prefix(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[str]:
    await ensure_notify_topics(settings_with(kafka_bootstrap, topic_prefix))
    yield topic_prefix


async def raw_values(settings: Settings, key: str) -> list[bytes]:
    """Every value written under `key` to the endpoints topic, oldest first, as Kafka has it."""
    topic = settings.topic(ENDPOINTS)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for p in await partitions_of(settings.kafka.bootstrap_servers, topic)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: list[bytes] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [r.value for r in records if r.key == key.encode() and r.value]
        return found
    finally:
        await consumer.stop()


async def started(settings: Settings) -> NotifyState:
    state = NotifyState(settings)
    try:
        await state.start()
    except BaseException:
        await state.stop()
        raise
    return state


async def test_created_secrets_are_encrypted_in_kafka_and_read_back(
    kafka_bootstrap: str, prefix: str
) -> None:
    settings = settings_with(kafka_bootstrap, prefix, OLD)
    state = await started(settings)
    try:
        record, secret = await service.create_endpoint(
            state, GUARD, url="http://127.0.0.1:9/hook", now=dt.datetime.now(dt.UTC)
        )
    finally:
        await state.stop()
    (stored,) = await raw_values(settings, record.id)
    assert b"fernet:" in stored and secret.encode() not in stored
    assert secret.removeprefix("whsec_").encode() not in stored
    assert secret not in repr(record)
    # Read back by another process with the key: the clear secret signs.
    again = await started(settings)
    try:
        assert again.endpoints.items[record.id].keys[0].key(again.box).secret == secret
    finally:
        await again.stop()
    # Rotating the key: the new one first, the old one still there to read; the next write
    # re-encrypts with the new key, which is then enough on its own.
    rotating = await started(settings_with(kafka_bootstrap, prefix, NEW, OLD))
    try:
        await service.update_endpoint(
            rotating, GUARD, endpoint_id=record.id, changes={"description": "rotated"}
        )
    finally:
        await rotating.stop()
    only_new = await started(settings_with(kafka_bootstrap, prefix, NEW))
    try:
        assert only_new.endpoints.items[record.id].keys[0].key(only_new.box).secret == secret
    finally:
        await only_new.stop()
    # Only the old key: the start stops, naming the endpoint and the setting.
    with pytest.raises(SecretsUnreadable, match=f"{record.id}: .*SKIPWATCH_NOTIFY__SECRET_KEYS"):
        await started(settings_with(kafka_bootstrap, prefix, OLD))


async def test_a_clear_record_from_before_encryption_loads_and_is_encrypted_on_its_next_write(
    kafka_bootstrap: str, prefix: str
) -> None:
    settings = settings_with(kafka_bootstrap, prefix, NEW)
    secret = new_secret()
    legacy = EndpointRecord(
        id="ep_legacy", url="http://127.0.0.1:9/hook", keys=[KeyRecord(secret=secret)],
        created_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    # Written as the dispatcher wrote endpoints before secrets were encrypted.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(ENDPOINTS), legacy.model_dump_json().encode(), key=b"ep_legacy"
        )
    finally:
        await producer.stop()
    assert secret.encode() in (await raw_values(settings, "ep_legacy"))[-1]

    # No key configured while an endpoint has a secret: refused, with the setting named.
    with pytest.raises(SecretsUnreadable, match=r"SKIPWATCH_NOTIFY__SECRET_KEYS\) is not set"):
        await started(settings_with(kafka_bootstrap, prefix))

    state = await started(settings)
    try:
        loaded = state.endpoints.items["ep_legacy"]
        assert loaded.keys[0].key(state.box).secret == secret
        await service.update_endpoint(
            state, GUARD, endpoint_id="ep_legacy", changes={"description": "touched"}
        )
    finally:
        await state.stop()
    latest = (await raw_values(settings, "ep_legacy"))[-1]
    assert b"fernet:" in latest and secret.encode() not in latest
    again = await started(settings)
    try:
        reloaded = again.endpoints.items["ep_legacy"]
        assert reloaded.description == "touched"
        assert reloaded.keys[0].key(again.box).secret == secret
    finally:
        await again.stop()


async def test_creating_an_endpoint_without_a_key_is_refused(
    kafka_bootstrap: str, prefix: str
) -> None:
    state = await started(settings_with(kafka_bootstrap, prefix))
    try:
        with pytest.raises(service.NotConfigured, match="SKIPWATCH_NOTIFY__SECRET_KEYS"):
            await service.create_endpoint(
                state, GUARD, url="http://127.0.0.1:9/hook", now=dt.datetime.now(dt.UTC)
            )
        assert not state.endpoints.items
    finally:
        await state.stop()

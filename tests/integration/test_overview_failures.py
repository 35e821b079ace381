"""`GET /v1/overview/failures` on the shared broker: the figures are those of the records produced
to `<prefix>deadletter` and `<prefix>notify.deliveries`, and follow new ones."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.api import create_app
from services.api.dedup import MemoryDedup
from services.kafka import deadletter_headers, ensure_topics
from services.notify.records import Attempt, DeliveryRecord, DeliveryState
from services.notify.state import DELIVERIES, Writer, ensure_notify_topics
from tests.integration.test_notify_api import settings_for
from tests.unit.api.support import VIEWER, FakeProducer, bearer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NOW = dt.datetime.now(dt.UTC)
OLD = NOW - dt.timedelta(hours=30)


def delivery(n: int, state: DeliveryState, kind: str, last_attempt: dt.datetime) -> DeliveryRecord:
    attempt = Attempt(at=last_attempt, outcome="failed" if state != "pending" else "retry",
                      status=500, reason="http_5xx", latency_ms=3.0)  # fmt: skip
    return DeliveryRecord(
        id=f"msg_{n}", endpoint="ep_1", receiver_kind=kind, partition=0, state=state,
        created_at=last_attempt - dt.timedelta(minutes=5), attempts=[attempt], notices=[],
    )  # fmt: skip


async def get(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/v1/overview/failures", headers=bearer(VIEWER))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_failure_counts_match_what_was_produced(
    kafka_bootstrap: str, topic_prefix: str, redis_url: str, redis_prefix: str
) -> None:
    await ensure_topics(kafka_bootstrap, topic_prefix, 2)
    settings = settings_for(kafka_bootstrap, topic_prefix, redis_url, redis_prefix)
    await ensure_notify_topics(settings)
    topic = settings.topic("deadletter")
    # (reason, dead-lettered at): 3 invalid now + 1 invalid 30 h ago, 2 undecodable now, one
    # foreign reason (-> other), one without headers (-> unknown).
    letters = [("invalid", NOW)] * 3 + [("invalid", OLD)] + [("undecodable", NOW)] * 2
    letters += [("made_up_reason", NOW)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    writer = Writer(settings)
    await writer.start()
    try:
        for n, (reason, at) in enumerate(letters):
            await producer.send_and_wait(
                topic, b"{}", key=f"k{n}".encode(), partition=n % 2,
                timestamp_ms=int(at.timestamp() * 1000),
                headers=deadletter_headers(reason, topic_prefix + "payments", "test"),
            )  # fmt: skip
        await producer.send_and_wait(topic, b"raw", partition=0)
        records = [
            delivery(1, "dead", "webhook", NOW - dt.timedelta(hours=1)),
            delivery(2, "dead", "webhook", OLD),
            delivery(3, "dead", "dingtalk", NOW - dt.timedelta(minutes=2)),
            delivery(4, "failed", "webhook", NOW - dt.timedelta(hours=2)),
            delivery(5, "pending", "webhook", NOW),
            delivery(6, "delivered", "webhook", NOW),
        ]
        for record in records:
            await writer.put(DELIVERIES, record.id, record)

        app = create_app(settings, producer=FakeProducer(), dedup=MemoryDedup())
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://a"
            ) as client,
        ):
            assert (await client.get("/v1/overview/failures")).status_code == 401
            body = await get(client)
            dead_letters = body["dead_letters"]
            assert (dead_letters["total"], dead_letters["last_24h"]) == (8, 7)
            assert dead_letters["by_reason"] == {
                "invalid": {"total": 4, "last_24h": 3},
                "other": {"total": 1, "last_24h": 1},
                "undecodable": {"total": 2, "last_24h": 2},
                "unknown": {"total": 1, "last_24h": 1},
            }
            deliveries = body["deliveries"]
            assert deliveries["dead"] == {"total": 3, "last_24h": 2}
            assert deliveries["failed"] == {"total": 1, "last_24h": 1}
            assert deliveries["pending"] == 1
            assert deliveries["by_receiver_kind"] == {
                "dingtalk": {"total": 1, "last_24h": 1},
                "webhook": {"total": 3, "last_24h": 2},
            }

            # New records are followed: a dead letter and a delivery turning dead.
            await producer.send_and_wait(
                topic, b"{}", partition=1, headers=deadletter_headers("future_timestamp", topic)
            )
            await writer.put(DELIVERIES, "msg_5", delivery(5, "dead", "webhook", NOW))
            latest: dict[str, Any] = {}

            async def caught_up() -> bool:
                latest.update(await get(client))
                return bool(
                    latest["dead_letters"]["total"] == 9
                    and latest["deliveries"]["dead"]["total"] == 4
                )

            for _ in range(150):
                if await caught_up():
                    break
                await asyncio.sleep(0.2)
            assert latest["dead_letters"]["by_reason"]["future_timestamp"] == {
                "total": 1,
                "last_24h": 1,
            }
            assert latest["deliveries"]["dead"] == {"total": 4, "last_24h": 3}
            assert latest["deliveries"]["pending"] == 0
    finally:
        await writer.stop()
        await producer.stop()

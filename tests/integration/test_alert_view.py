"""The alert view for real: AlertEvents in Kafka -> projector -> Redis -> API (over HTTP, uvicorn).

Lists, filters and pages; an ack goes back to Kafka; a repeated event changes nothing; a wiped
Redis is rebuilt on restart with the operator state; SSE delivers a new alert; viewers see masked
personal data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from rules.events import AlertEvent, AlertStatus, Severity
from services import infra
from services.api import create_app
from services.kafka import ensure_topics
from services.settings import Settings

pytestmark = pytest.mark.integration

VIEWER = "integration-viewer-token-0001"
OPERATOR = "integration-operator-token-01"
T0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)


def alert(n: int, **overrides: Any) -> AlertEvent:
    values: dict[str, Any] = {
        "alert_id": f"alert-{n:03d}",
        "fingerprint": f"fp-{n:03d}",
        "rule_id": "skip_seed" if n % 3 else "tracker_cut_at_risk_place",
        "loan_id": f"L{n % 4}",
        "severity": Severity.CRITICAL if n % 2 else Severity.WARNING,
        "status": AlertStatus.FIRING,
        "title": "失联预警: missed payment, phone off, car out of region",
        "summary": "borrower 13800138000 unreachable",
        "evidence": (
            {"kind": "state", "name": "payment.days_past_due", "value": 3},
            {"kind": "borrower", "name": "张三", "phone": "+8613800138000"},
        ),
        "risk_score": 40 + n,
        "started_at": T0 + dt.timedelta(minutes=n),
        "updated_at": T0 + dt.timedelta(minutes=n),
        "event_time": T0 + dt.timedelta(minutes=n),
    }
    values.update(overrides)
    return AlertEvent(**values)


LOAN = {
    "loan_id": "L1",
    "borrower": {"name": "张三", "phone": "+8613800138000"},
    "vehicle": {"vin": "LSVAU2180N2183294", "plate": "川A12345"},
    "devices": [{"device_id": "dev-1", "kind": "wired"}],
}


@dataclass
class Env:
    bootstrap: str
    redis_url: str
    topic_prefix: str
    redis_prefix: str

    def settings(self) -> Settings:
        return Settings.model_validate(
            {
                "kafka": {"bootstrap_servers": self.bootstrap, "topic_prefix": self.topic_prefix},
                "redis": {"url": self.redis_url, "key_prefix": self.redis_prefix},
                "api": {"sse_heartbeat_s": 1.0},
                "auth": {"tokens": {VIEWER: "viewer", OPERATOR: "operator"}},
            }
        )

    async def produce(self, topic: str, key: str, value: bytes) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(self.topic_prefix + topic, value, key=key.encode())
        finally:
            await producer.stop()

    async def produce_alerts(self, *events: AlertEvent) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            for event in events:
                await producer.send(
                    self.topic_prefix + "alerts",
                    event.model_dump_json().encode(),
                    key=event.loan_id.encode(),
                )
            await producer.flush()
        finally:
            await producer.stop()

    async def read_alerts(self, until: Callable[[list[AlertEvent]], bool]) -> list[AlertEvent]:
        consumer = AIOKafkaConsumer(
            self.topic_prefix + "alerts",
            bootstrap_servers=self.bootstrap,
            group_id=f"reader-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        events: list[AlertEvent] = []
        try:
            async with asyncio.timeout(30):
                while not until(events):
                    for batch in (await consumer.getmany(timeout_ms=500)).values():
                        events += [AlertEvent.model_validate_json(r.value) for r in batch]
        finally:
            await consumer.stop()
        return events

    async def wipe_redis(self) -> None:
        redis = Redis.from_url(self.redis_url)
        try:
            keys = [k async for k in redis.scan_iter(match=f"{self.redis_prefix}*")]
            if keys:
                await redis.delete(*keys)
        finally:
            await redis.aclose()


@pytest.fixture
async def env(kafka_bootstrap: str, redis_url: str, topic_prefix: str, redis_prefix: str) -> Env:
    await ensure_topics(kafka_bootstrap, topic_prefix, partitions=3)
    return Env(kafka_bootstrap, redis_url, topic_prefix, redis_prefix)


@asynccontextmanager
async def running_api(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    """The whole API (projector included) on a free port, as `skipwatch api` runs it."""
    port = infra.free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(env.settings()), host="127.0.0.1", port=port, log_config=None)
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await task


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy (the projector is asynchronous)."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(0.1)


async def list_ids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/alerts", params=query, headers=auth(VIEWER))
        assert response.status_code == 200, response.text
        page = response.json()
        ids += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


async def test_projected_alerts_list_filter_paginate_and_mask(env: Env) -> None:
    events = [alert(n) for n in range(1, 13)]
    await env.produce("loans", "L1", orjson.dumps(LOAN))
    await env.produce_alerts(*events)
    async with running_api(env) as client:

        async def all_listed() -> bool:
            return len(await list_ids(client, limit=100)) == 12

        await eventually(all_listed)
        newest_first = [
            e.alert_id for e in sorted(events, key=lambda e: e.started_at, reverse=True)
        ]
        assert await list_ids(client, limit=5) == newest_first
        critical = await list_ids(client, severity="critical", limit=2)
        assert critical == [e.alert_id for e in events[::-1] if e.severity is Severity.CRITICAL]
        assert await list_ids(client, loan="L1") == ["alert-009", "alert-005", "alert-001"]
        assert await list_ids(client, rule="tracker_cut_at_risk_place") == [
            "alert-012", "alert-009", "alert-006", "alert-003",
        ]  # fmt: skip
        since = (T0 + dt.timedelta(minutes=10)).isoformat()
        assert await list_ids(client, since=since) == ["alert-012", "alert-011", "alert-010"]

        viewer = (await client.get("/v1/alerts/alert-001", headers=auth(VIEWER))).json()
        assert viewer["evidence"][1] == {
            "kind": "borrower",
            "name": "张*",
            "phone": "+86138****8000",
        }
        assert viewer["summary"] == "borrower 138****8000 unreachable"
        loan = (await client.get("/v1/loans/L1", headers=auth(VIEWER))).json()
        assert loan["borrower"] == {"name": "张*", "phone": "+86138****8000"}
        assert loan["risk_score"] == 49 and len(loan["open_alerts"]) == 3
        loan = (await client.get("/v1/loans/L1", headers=auth(OPERATOR))).json()
        assert loan["borrower"]["phone"] == "+8613800138000"
        assert (await client.get("/v1/loans/L-unknown", headers=auth(VIEWER))).status_code == 404


async def test_ack_goes_to_kafka_repeats_are_idempotent_and_a_wiped_view_is_rebuilt(
    env: Env,
) -> None:
    first = alert(1)
    await env.produce_alerts(first, alert(2))
    payment = {
        "event_id": "pay-1", "loan_id": "L1", "ts": "2024-05-01T08:30:00+08:00",
        "type": "installment_due", "installment_no": 3, "amount": 4200.0,
    }  # fmt: skip
    await env.produce("payments", "L1", orjson.dumps(payment))
    async with running_api(env) as client:

        async def projected() -> bool:
            return (
                await client.get("/v1/alerts/alert-002", headers=auth(VIEWER))
            ).status_code == 200

        await eventually(projected)
        acked = await client.post("/v1/alerts/alert-001/ack", headers=auth(OPERATOR))
        assert acked.status_code == 200, acked.text
        assert acked.json()["status"] == "acknowledged"

        published = await env.read_alerts(
            lambda es: any(e.status is AlertStatus.ACKNOWLEDGED for e in es)
        )
        ack_event = next(e for e in published if e.status is AlertStatus.ACKNOWLEDGED)
        assert ack_event.alert_id == "alert-001"
        assert ack_event.labels["skipwatch/origin"] == "operator"

        # The worker re-emits the same state after a crash: counted, changes nothing.
        await env.produce_alerts(first)

        async def repeat_counted() -> bool:
            text = (await client.get("/metrics")).text
            return 'skipwatch_projector_alerts_total{outcome="unchanged"}' in text and (
                'skipwatch_projector_alerts_total{outcome="unchanged"} 0.0' not in text
            )

        await eventually(repeat_counted)
        again = (await client.get("/v1/alerts/alert-001", headers=auth(VIEWER))).json()
        assert again["status"] == "acknowledged"
        assert again["acknowledged"]["by"] == "operator"

        timeline = (await client.get("/v1/loans/L1/timeline", headers=auth(VIEWER))).json()
        kinds = [i["kind"] for i in timeline["items"]]
        assert "payment" in kinds and kinds.count("alert") == 2  # fired, then acked

    await env.wipe_redis()
    async with running_api(env) as client:

        async def rebuilt() -> dict[str, Any] | None:
            response = await client.get("/v1/alerts/alert-001", headers=auth(VIEWER))
            body: dict[str, Any] = response.json()
            return body if response.status_code == 200 and body["acknowledged"] else None

        body = await eventually(rebuilt)
        assert body["status"] == "acknowledged"
        assert await list_ids(client, status="firing") == ["alert-002"]
        timeline = (await client.get("/v1/loans/L1/timeline", headers=auth(VIEWER))).json()
        assert [i["kind"] for i in timeline["items"]].count("alert") == 2  # not doubled

        # Wiped while running: noticed at the next batch, and read again from the beginning.
        await env.wipe_redis()
        await env.produce_alerts(alert(3))

        async def rebuilt_live() -> bool:
            ids = await list_ids(client)
            return ids == ["alert-003", "alert-002", "alert-001"]

        await eventually(rebuilt_live)
        body = (await client.get("/v1/alerts/alert-001", headers=auth(VIEWER))).json()
        assert body["status"] == "acknowledged"


async def test_sse_delivers_new_alerts_masked_for_viewers(env: Env) -> None:
    async with running_api(env) as client:
        received: list[dict[str, Any]] = []
        pings = 0  # heartbeats: every api.sse_heartbeat_s (1 s here)
        async with client.stream("GET", "/v1/alerts/stream", headers=auth(VIEWER)) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            event = None
            async with asyncio.timeout(30):
                async for line in lines:
                    if line.startswith(": ping"):
                        pings += 1
                    elif line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event == "ready":
                        # Subscribed: now an alert that appears must come through.
                        await env.produce_alerts(alert(7))
                    elif line.startswith("data: ") and event == "alert":
                        received.append(orjson.loads(line.removeprefix("data: ")))
                    if received and pings:
                        break
        assert received[0]["id"] == "alert-007"
        assert received[0]["evidence"][1]["phone"] == "+86138****8000"

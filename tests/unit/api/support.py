"""Test support: a fake producer with aiokafka's batch API, settings with known credentials."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka.errors import KafkaConnectionError
from fastapi import FastAPI

from services.settings import Settings

ADMIN = "admin-token-0123456789"
OPERATOR = "operator-token-0123456789"
VIEWER = "viewer-token-0123456789"
VENDOR_KEY = "vendor-a-key-0123456789"
SIGNING_VENDOR_KEY = "vendor-b-key-0123456789"
SIGNING_SECRET = "vendor-b-hmac-secret"
PREFIX = "t."


@dataclass
class Sent:
    topic: str
    partition: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes,
        headers: Any = (),
    ) -> object | None:
        if len(self.records) >= self.capacity:
            return None  # full, like aiokafka's builder at max_batch_size
        self.records.append((key, value, list(headers)))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeClient:
    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer

    async def fetch_all_metadata(self) -> object:
        if self.producer.unreachable:
            raise KafkaConnectionError("broker down")
        return object()


@dataclass
class FakeProducer:
    """Records what would be written. `fail_with` makes send_batch raise; `hang` never acks."""

    partitions: int = 4
    batch_capacity: int = 1000
    fail_with: BaseException | None = None
    hang: bool = False
    unreachable: bool = False
    fail_start: bool = False
    started: bool = False
    sent: list[Sent] = field(default_factory=list)
    batches: int = 0

    def __post_init__(self) -> None:
        self.client = FakeClient(self)

    async def start(self) -> None:
        if self.fail_start:
            raise KafkaConnectionError("Unable to bootstrap from 127.0.0.1:1")
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        if self.fail_with is not None:
            raise self.fail_with
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self.hang:
            return future
        self.batches += 1
        for key, value, headers in batch.records:
            self.sent.append(Sent(topic, partition, key, value, dict(headers)))
        future.set_result(object())
        return future

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def on(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == PREFIX + topic]


def make_settings(**api: Any) -> Settings:
    return Settings.model_validate(
        {
            "kafka": {"topic_prefix": PREFIX, "produce_timeout_s": 0.3},
            "api": {"max_batch_items": 50, "max_body_bytes": 64 * 1024, **api},
            "auth": {
                "tokens": {ADMIN: "admin", OPERATOR: "operator", VIEWER: "viewer"},
                "ingest_keys": {VENDOR_KEY: "vendor-a", SIGNING_VENDOR_KEY: "vendor-b"},
                "vendor_hmac_secrets": {"vendor-b": SIGNING_SECRET},
            },
        }
    )


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    producer: FakeProducer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ping(n: int = 0, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event_id": f"ping-{n}",
        "device_id": f"dev-{n % 7}",
        "vendor": "vendor-a",
        "ts": "2024-05-01T08:00:00+08:00",
        "lat": 30.25,
        "lon": 120.16,
        "speed_kmh": 42.0,
        "device_kind": "wired",
    }
    item.update(overrides)
    return item

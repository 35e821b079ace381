"""Ping sinks for the gateway: Kafka for production, memory for tests and benchmarks."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner, murmur2

from rules.events import GpsPing


class KeyHashCache:
    """aiokafka's DefaultPartitioner (Java-compatible murmur2) with each key's hash kept.

    Same partition for every key as the default; murmur2 is pure Python (several us per
    key) and the gateway sends the same few thousand device ids over and over.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        h = self._hashes.get(key)
        if h is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            h = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[h % len(all_partitions)]


class KafkaPingSink:
    """Produces pings to `<prefix>gps.raw` keyed by device_id; returns once Kafka acked all."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic_prefix: str = "skipwatch.",
        client_id: str = "skipwatch-jt808-gateway",
        linger_ms: int = 5,
    ) -> None:
        self.topic = f"{topic_prefix}gps.raw"
        # acks=all + idempotence: an acknowledged ping is on every in-sync replica, and a
        # producer retry does not write it twice.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            max_batch_size=256 * 1024,
            partitioner=KeyHashCache(),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __call__(self, pings: list[GpsPing]) -> None:
        send = self._producer.send
        topic = self.topic
        futures = [
            await send(topic, key=p.device_id.encode(), value=p.model_dump_json().encode())
            for p in pings
        ]
        await asyncio.gather(*futures)


class MemorySink:
    """Keeps pings in a list; `fail` makes the next calls raise (to test unacked paths)."""

    def __init__(self) -> None:
        self.pings: list[GpsPing] = []
        self.calls = 0
        self.fail: Exception | None = None

    async def __call__(self, pings: list[GpsPing]) -> None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        self.pings.extend(pings)


class CountingSink:
    """Counts pings without keeping them: the benchmark's stand-in for Kafka."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, pings: list[GpsPing]) -> None:
        self.count += len(pings)

"""Ping sinks for the gateway: Kafka for production, memory for tests and benchmarks."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from rules.events import GpsPing
from services.kafka import KeyPartitioner, RecoveringProducer


class KafkaPingSink:
    """Produces pings to `<prefix>gps.raw` keyed by device_id; returns once Kafka acked all.

    The producer recovers (`services.kafka.RecoveringProducer`): after a fatal error it is
    replaced, and until then a call raises at once (the gateway does not acknowledge the pings,
    so the terminals keep them and send them again) and `ready` is False (readyz 503).
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic_prefix: str = "skipwatch.",
        client_id: str = "skipwatch-jt808-gateway",
        linger_ms: int = 5,
    ) -> None:
        self.topic = f"{topic_prefix}gps.raw"

        def producer() -> AIOKafkaProducer:
            # acks=all + idempotence: an acknowledged ping is on every in-sync replica, and a
            # producer retry does not write it twice.
            return AIOKafkaProducer(
                bootstrap_servers=bootstrap_servers,
                client_id=client_id,
                acks="all",
                enable_idempotence=True,
                linger_ms=linger_ms,
                max_batch_size=256 * 1024,
                partitioner=KeyPartitioner(),
            )

        self._holder = RecoveringProducer(producer, name="jt808-gateway")

    @property
    def ready(self) -> bool:
        """Whether pings can be persisted now."""
        self._holder.check(None)
        return self._holder.ready

    async def start(self) -> None:
        await self._holder.start()

    async def stop(self) -> None:
        await self._holder.stop()

    async def __call__(self, pings: list[GpsPing]) -> None:
        if not self.ready:
            raise KafkaConnectionError("no Kafka producer can persist now (being replaced)")
        send = self._holder.producer.send
        topic = self.topic
        try:
            futures = [
                await send(topic, key=p.device_id.encode(), value=p.model_dump_json().encode())
                for p in pings
            ]
            await asyncio.gather(*futures)
        except Exception as exc:
            self._holder.check(exc)  # fatal: replace the producer
            raise


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

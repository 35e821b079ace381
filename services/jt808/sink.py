"""Ping sinks for the gateway: Kafka for production, memory for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from rules.events import GpsPing
from services.kafka import KeyPartitioner, RecoveringProducer


class KafkaPingSink:
    """Produces pings to `<prefix>gps.raw` keyed by device_id; returns once Kafka acked all.

    The producer recovers (`services.kafka.RecoveringProducer`): after a fatal error it is
    replaced, and until then a call raises at once (the gateway does not acknowledge the pings,
    so the terminals keep them and send them again) and `ready` is False (readyz 503).
    `ready` is False too while the brokers do not answer a metadata round trip (asked every
    `probe_s`, as the API's readiness probe asks): a broker that is down makes every send fail
    however healthy the producer looks.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic_prefix: str = "skipwatch.",
        client_id: str = "skipwatch-jt808-gateway",
        linger_ms: int = 5,
        probe_s: float = 2.0,
    ) -> None:
        self.topic = f"{topic_prefix}gps.raw"
        self.probe_s = probe_s
        self._reachable = True
        self._probe: asyncio.Task[None] | None = None

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
        return self._holder.ready and self._reachable

    async def start(self) -> None:
        await self._holder.start()
        self._probe = asyncio.create_task(self._watch_brokers())

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self._holder.stop()

    async def _watch_brokers(self) -> None:
        while True:
            await asyncio.sleep(self.probe_s)
            self._reachable = await self._round_trip()

    async def _round_trip(self) -> bool:
        if not self._holder.ready:
            return self._reachable  # being replaced: `ready` says so already
        try:
            await asyncio.wait_for(
                self._holder.producer.client.fetch_all_metadata(), max(self.probe_s, 1.0)
            )
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

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

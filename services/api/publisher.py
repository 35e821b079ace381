"""Writes a request's records to Kafka and waits until every one is acknowledged (acks=all).

Records are grouped into one producer batch per topic-partition (`create_batch`/`send_batch`)
instead of one `send()` per record: with aiokafka that is over twice the throughput, and the ingest
API is built to take ≥ 30,000 pings/s per process (DESIGN §9). Partitions are chosen with Kafka's
default partitioner (murmur2 of the key), the same one every other producer of these topics uses,
so a device's or a loan's records land on the same partition whoever wrote them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

log = logging.getLogger(__name__)


class BatchLike(Protocol):
    def append(
        self, *, timestamp: int | None, key: bytes | None, value: bytes | None, headers: Any = ...
    ) -> object | None: ...

    def record_count(self) -> int: ...


class ClientLike(Protocol):
    async def fetch_all_metadata(self) -> object: ...


class ProducerLike(Protocol):
    """The part of `aiokafka.AIOKafkaProducer` the API uses (tests inject a fake with the same)."""

    client: Any

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def create_batch(self) -> Any: ...

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]: ...

    async def partitions_for(self, topic: str) -> set[int]: ...


@dataclass(slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None
    # Marked in the dedup store once acknowledged (None: not deduplicated, e.g. dead letters).
    dedup_id: str | None = None


@dataclass(slots=True)
class PublishResult:
    acked: list[OutRecord] = field(default_factory=list)
    # Set when some records were not acknowledged in time; the request must answer 503.
    error: BaseException | None = None


class ProducerNotReady(KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """The producer has not connected to Kafka yet (it keeps retrying in the background)."""


@lru_cache(maxsize=200_000)
def _key_hash(key: bytes) -> int:
    # Pure-Python murmur2 costs ~5 µs; device and loan ids repeat, so cache the hash.
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_for(key: bytes | None, partition_count: int) -> int:
    """Kafka's default partitioner: murmur2(key) mod partitions; a random partition without a key."""
    if key is None:
        return random.randrange(partition_count)
    return _key_hash(key) % partition_count


class Publisher:
    """Owns the producer's lifecycle (start retried in the background) and batched, acked writes."""

    def __init__(
        self, producer: ProducerLike, *, timeout_s: float, retry_start_every_s: float = 2.0
    ) -> None:
        self._producer = producer
        self._timeout_s = timeout_s
        self._retry_start_every_s = retry_start_every_s
        self._started = asyncio.Event()
        self._starter: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._started.is_set()

    async def start(self) -> None:
        """Connect now if Kafka is there; otherwise keep trying in the background so the API still
        comes up (answering 503 and readyz=503) and heals once Kafka is back."""
        try:
            await self._producer.start()
        except (KafkaError, OSError) as exc:
            log.warning("Kafka producer could not start; retrying", extra={"error": str(exc)})
            self._starter = asyncio.create_task(self._keep_starting(), name="producer-start")
        else:
            self._started.set()

    async def _keep_starting(self) -> None:
        while True:
            await asyncio.sleep(self._retry_start_every_s)
            try:
                # A failed bootstrap leaves nothing open, so start() can simply be tried again.
                await self._producer.start()
            except (KafkaError, OSError) as exc:
                log.warning("Kafka producer still not started", extra={"error": str(exc)})
                continue
            self._started.set()
            log.info("Kafka producer started")
            return

    async def stop(self) -> None:
        if self._starter is not None:
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starter
        # Flushes pending batches; ours are all awaited already, so this is quick.
        await self._producer.stop()

    async def reachable(self, timeout_s: float = 2.0) -> bool:
        """A real metadata round trip to the brokers (the readiness probe)."""
        if not self.started:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout_s)
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

    async def publish(self, records: Sequence[OutRecord]) -> PublishResult:
        """Write all records; return which were acknowledged and, if not all were, why not."""
        result = PublishResult()
        if not records:
            return result
        if not self.started:
            result.error = ProducerNotReady("not connected to Kafka yet")
            return result
        pending: list[tuple[asyncio.Future[Any], list[OutRecord]]] = []
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._submit(records, pending)
                await asyncio.wait([future for future, _ in pending])
        except (KafkaError, OSError, TimeoutError) as exc:
            result.error = exc
        for future, batch_records in pending:
            if not future.done():
                # Not acknowledged in time. Kafka may still take it (a retry then adds a duplicate
                # that the worker drops by event_id); we must not count it as written.
                future.add_done_callback(_consume_outcome)
                continue
            if future.cancelled() or future.exception() is not None:
                if result.error is None:
                    result.error = future.exception() or KafkaError("batch cancelled")
                continue
            result.acked.extend(batch_records)
        return result

    async def _submit(
        self,
        records: Sequence[OutRecord],
        pending: list[tuple[asyncio.Future[Any], list[OutRecord]]],
    ) -> None:
        counts: dict[str, int] = {}
        batches: dict[tuple[str, int], tuple[Any, list[OutRecord]]] = {}
        for record in records:
            count = counts.get(record.topic)
            if count is None:
                count = counts[record.topic] = len(
                    await self._producer.partitions_for(record.topic)
                )
            target = (record.topic, partition_for(record.key, count))
            entry = batches.get(target)
            if entry is None:
                entry = batches[target] = (self._producer.create_batch(), [])
            batch, members = entry
            appended = batch.append(
                timestamp=None, key=record.key, value=record.value, headers=record.headers or []
            )
            if appended is None:
                # Batch full (max_batch_size): ship it and start the next one for this partition.
                pending.append((await self._producer.send_batch(batch, target[0], partition=target[1]), members))
                batch, members = self._producer.create_batch(), []
                if batch.append(
                    timestamp=None, key=record.key, value=record.value, headers=record.headers or []
                ) is None:
                    raise KafkaError(f"record of {len(record.value)} bytes exceeds the batch size")
                batches[target] = (batch, members)
            members.append(record)
        for (topic, partition), (batch, members) in batches.items():
            if members:
                pending.append((await self._producer.send_batch(batch, topic, partition=partition), members))


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    # Retrieve a late result so asyncio does not log "exception was never retrieved".
    if not future.cancelled():
        future.exception()

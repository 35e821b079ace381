"""Writes a request's records to Kafka and waits until every one is acknowledged (acks=all).

Records are appended to one open producer batch per topic-partition (`create_batch`/`send_batch`),
shared by all concurrent requests, instead of one `send()` per record: with aiokafka that is
over twice the throughput, and the ingest API is built to take ≥ 30,000 pings/s per process
(DESIGN §9). One drain task per partition hands sealed batches to the producer one at a time:
aiokafka keeps a single queued batch per partition and its `send_batch` wait for that slot
misbehaves when several callers contend for it. Partitions are chosen with Kafka's default
partitioner (`services.kafka.key_partition`), the one every other producer of these topics uses,
so a device's or a loan's records land on the same partition whoever wrote them.

The producer is a `services.kafka.RecoveringProducer`: after a fatal error (the idempotent
producer's OutOfOrderSequenceNumber after a broker restart under load, say) it is replaced, and
until the new one started `publish` answers "not ready" (the API's 503 with Retry-After) and
`reachable` is False (readyz 503).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from services.kafka import RecoveringProducer, key_partition

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

    async def send_batch(
        self, batch: Any, topic: str, *, partition: int
    ) -> asyncio.Future[Any]: ...

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
    """No producer can persist now: not connected to Kafka yet, or being replaced after a fatal
    error (it keeps retrying in the background)."""


def partition_for(key: bytes | None, partition_count: int) -> int:
    """Kafka's default partitioner (`key_partition`); random when there is no key."""
    if key is None:
        return random.randrange(partition_count)
    return key_partition(key, partition_count)


class _PartitionQueue:
    """The open batch of one topic-partition, the sealed ones waiting, and their drain task.

    Each batch has a future that resolves when Kafka acknowledged it; every request with records
    in that batch awaits the same future.
    """

    def __init__(self, producer: ProducerLike, topic: str, partition: int) -> None:
        self._producer = producer
        self._topic = topic
        self._partition = partition
        self._builder: Any = None
        self._acked: asyncio.Future[None] | None = None
        self._sealed: deque[tuple[Any, asyncio.Future[None]]] = deque()
        self._task: asyncio.Task[None] | None = None

    def add(self, record: OutRecord) -> asyncio.Future[None]:
        if self._builder is None:
            self._open()
        if not self._append(record):
            # Batch full (max_batch_size): seal it and start the next one.
            self._seal()
            self._open()
            if not self._append(record):
                raise KafkaError(f"record of {len(record.value)} bytes exceeds the batch size")
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"drain-{self._topic}")
        assert self._acked is not None
        return self._acked

    def _append(self, record: OutRecord) -> bool:
        meta = self._builder.append(
            timestamp=None, key=record.key, value=record.value, headers=record.headers or []
        )
        return meta is not None

    def _open(self) -> None:
        self._builder = self._producer.create_batch()
        self._acked = asyncio.get_running_loop().create_future()
        self._acked.add_done_callback(_consume_outcome)

    def _seal(self) -> None:
        assert self._acked is not None
        self._sealed.append((self._builder, self._acked))
        self._builder, self._acked = None, None

    async def _drain(self) -> None:
        while True:
            if not self._sealed:
                if self._builder is None:
                    return
                # Everything appended while the previous batch was queued goes out together.
                self._seal()
            builder, acked = self._sealed.popleft()
            try:
                delivery = await self._producer.send_batch(
                    builder, self._topic, partition=self._partition
                )
            except (KafkaError, OSError) as exc:
                if not acked.done():
                    acked.set_exception(exc)
                continue
            delivery.add_done_callback(partial(_settle, acked))

    async def close(self) -> None:
        if self._task is not None:
            await self._task

    def abort(self, exc: BaseException) -> None:
        """The producer is gone: fail what waits here and stop draining."""
        if self._task is not None:
            self._task.cancel()
        waiting = [acked for _, acked in self._sealed]
        if self._acked is not None:
            waiting.append(self._acked)
        for acked in waiting:
            if not acked.done():
                acked.set_exception(exc)
        self._sealed.clear()
        self._builder, self._acked = None, None


def _settle(acked: asyncio.Future[None], delivery: asyncio.Future[Any]) -> None:
    if acked.done():
        return
    if delivery.cancelled():
        acked.set_exception(KafkaError("batch cancelled"))
    elif (exc := delivery.exception()) is not None:
        acked.set_exception(exc)
    else:
        acked.set_result(None)


class Publisher:
    """Owns the producer (a `RecoveringProducer`: started in the background until Kafka takes
    it, replaced after a fatal error) and batched, acked writes."""

    def __init__(
        self,
        producer: ProducerLike | Callable[[], ProducerLike],
        *,
        timeout_s: float,
        retry_start_every_s: float = 2.0,
    ) -> None:
        """`producer`: a factory (production: a new producer after a fatal error) or one
        producer (tests: the same one is started again)."""
        factory = producer if callable(producer) else (lambda: producer)
        self._holder: RecoveringProducer[ProducerLike] = RecoveringProducer(
            factory,
            name="api",
            backoff_s=(retry_start_every_s, max(retry_start_every_s, 10.0)),
            on_replaced=self._replaced,
        )
        self._timeout_s = timeout_s
        self._queues: dict[tuple[str, int], _PartitionQueue] = {}
        # Read once per topic: repartitioning a keyed topic needs a restart anyway (keys move).
        self._partition_counts: dict[str, int] = {}

    @property
    def _producer(self) -> ProducerLike:
        return self._holder.producer

    @property
    def started(self) -> bool:
        """Whether a producer can persist now (False while it is replaced)."""
        return self._holder.ready

    @property
    def recreated(self) -> int:
        """Producers replaced after a fatal error since start."""
        return self._holder.recreated

    def _replaced(self, producer: ProducerLike) -> None:
        for queue in self._queues.values():
            queue.abort(ProducerNotReady("the Kafka producer was replaced"))
        self._queues.clear()

    async def start(self) -> None:
        """Connect now if Kafka is there; otherwise keep trying in the background so the API still
        comes up (answering 503 and readyz=503) and heals once Kafka is back."""
        await self._holder.start()

    async def stop(self) -> None:
        await self._holder.stop_recovery()
        for queue in self._queues.values():
            await queue.close()
        await self._producer.stop()  # flushes what the queues handed over

    async def reachable(self, timeout_s: float = 2.0) -> bool:
        """A producer that can persist and a real metadata round trip to the brokers (the
        readiness probe)."""
        self._holder.check(None)  # a sender that died since the last publish
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
            self._holder.check(None)
            result.error = ProducerNotReady("no Kafka producer can persist now")
            return result
        waiting: dict[asyncio.Future[None], list[OutRecord]] = {}
        try:
            async with asyncio.timeout(self._timeout_s):
                for topic in {record.topic for record in records}:
                    await self._partition_count(topic)
                queue_for = self._queue_for
                for record in records:
                    acked = queue_for(record).add(record)
                    batch_records = waiting.get(acked)
                    if batch_records is None:
                        waiting[acked] = [record]
                    else:
                        batch_records.append(record)
                await asyncio.wait(waiting)
        except (KafkaError, OSError, TimeoutError) as exc:
            result.error = exc
        for acked, batch_records in waiting.items():
            # A batch not acknowledged in time may still reach Kafka later: a retry then adds a
            # duplicate that the worker drops by event_id; we must not count it as written.
            if not acked.done():
                continue
            if acked.exception() is not None:
                result.error = result.error or acked.exception()
                continue
            result.acked.extend(batch_records)
        if result.error is not None:
            self._holder.check(result.error)  # fatal: replace the producer
        return result

    async def _partition_count(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            count = len(await self._producer.partitions_for(topic))
            self._partition_counts[topic] = count
        return count

    def _queue_for(self, record: OutRecord) -> _PartitionQueue:
        """The record's partition queue; `_partition_count(record.topic)` must have been awaited."""
        count = self._partition_counts[record.topic]
        target = (record.topic, partition_for(record.key, count))
        queue = self._queues.get(target)
        if queue is None:
            queue = self._queues[target] = _PartitionQueue(self._producer, *target)
        return queue


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    # Retrieve a late result so asyncio does not log "exception was never retrieved".
    if not future.cancelled():
        future.exception()

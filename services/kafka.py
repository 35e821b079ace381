"""Kafka plumbing shared by every process: topic specs, idempotent creation, the key
partitioner, producers that recover."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    IllegalStateError,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import murmur2

from services.settings import Settings
from streams.faust_edge.producer import sender_alive

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str  # without the prefix
    compacted: bool = False
    # Joined per loan: must have the same partition count as the others (co-partitioned).
    co_partitioned: bool = True


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("loans", compacted=True),
    TopicSpec("gps.raw"),
    TopicSpec("payments"),
    TopicSpec("contacts"),
    TopicSpec("alerts"),
    TopicSpec("deadletter", co_partitioned=False),
    # Managed risk places (key place id; services/places.py) and their audit trail.
    TopicSpec("places", compacted=True, co_partitioned=False),
    TopicSpec("places.audit", compacted=True, co_partitioned=False),
    # Each loan's derived status as the worker last saw it (key loan id; services/loan_status.py).
    TopicSpec("loan-status", compacted=True),
)
INPUT_TOPICS = ("loans", "gps.raw", "payments", "contacts")
# The worker's own repartition topics: pings re-keyed by loan, device→loan bindings, places.
WORKER_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("gps.bound"),
    TopicSpec("device-bindings", compacted=True),
    # Cross-loan: vehicles entering/leaving risk places (key place id) and the resulting count
    # of financed cars there, fanned back out to each loan at the place (key loan id).
    TopicSpec("place-moves"),
    TopicSpec("place-counts"),
)


def _topic_config(spec: TopicSpec) -> dict[str, str]:
    if spec.compacted:
        return {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
    return {}


async def ensure_topics(
    bootstrap_servers: str,
    prefix: str,
    partitions: int,
    replication_factor: int = 1,
    specs: Iterable[TopicSpec] = TOPICS,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Safe to run repeatedly.

    Existing topics with a different partition count are reported, not altered: repartitioning a
    keyed topic moves keys between partitions and must be a deliberate operation.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="skipwatch-admin")
    await admin.start()
    try:
        wanted = {prefix + s.name: s for s in specs}
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs=_topic_config(spec),
            )
            for name, spec in wanted.items()
            if name not in existing
        ]
        created: list[str] = []
        if new:
            # a concurrent creator may win; the end state is the same
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
            created = [t.name for t in new]
        described = await admin.describe_topics(list(wanted))
        for topic in described:
            count = len(topic.get("partitions", []))
            name = topic.get("topic")
            if wanted[name].co_partitioned and count not in (0, partitions):
                log.warning(
                    "topic has a different partition count",
                    extra={"topic": name, "partitions": count, "expected": partitions},
                )
        return created
    finally:
        await admin.close()


async def ensure_topics_for(settings: Settings, worker: bool = False) -> list[str]:
    return await ensure_topics(
        settings.kafka.bootstrap_servers,
        settings.kafka.topic_prefix,
        settings.kafka.partitions,
        settings.kafka.replication_factor,
        specs=TOPICS + WORKER_TOPICS if worker else TOPICS,
    )


# ------------------------------------------------------------------ the key partitioner


@lru_cache(maxsize=1 << 18)
def key_hash(key: bytes) -> int:
    """Kafka's default partitioner hash (Java-compatible murmur2, positive). aiokafka's murmur2
    is pure Python, ≈5 µs a key, and the same device and loan ids come again and again: cached."""
    return int(murmur2(key)) & 0x7FFFFFFF


def key_partition(key: str | bytes, partitions: int) -> int:
    """The partition of a key, as every Kafka client's default partitioner places it. The one
    partitioner of the API, the gateway, the simulator and the worker: co-partitioning (a
    loan's payments, contacts, pings and state on one partition) holds only while they agree."""
    return key_hash(key.encode() if isinstance(key, str) else key) % partitions


class KeyPartitioner:
    """`key_partition` as an aiokafka partitioner (`AIOKafkaProducer(partitioner=...)`); a
    record without a key goes to a random available partition, as with the default."""

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[key_hash(key) % len(all_partitions)]


# ------------------------------------------------------------------ producers


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """A producer whose acknowledged writes are durable: acks=all and idempotence on, keys
    placed by `KeyPartitioner`."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka.bootstrap_servers,
        "client_id": settings.kafka.client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 1024 * 1024,
        "max_request_size": 8 * 1024 * 1024,
        "request_timeout_ms": int(settings.kafka.produce_timeout_s * 1000),
        "partitioner": KeyPartitioner(),
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def producer_at(bootstrap_servers: str, **overrides: object) -> AIOKafkaProducer:
    """`make_producer` for a broker address alone (benchmarks, tools)."""
    settings = Settings.model_validate({"kafka": {"bootstrap_servers": bootstrap_servers}})
    return make_producer(settings, **overrides)


# Errors after which a producer never delivers again: the idempotent producer's sequence or
# epoch is lost (a broker restart under load, a fenced producer id) and aiokafka's sender task
# has died, or the producer was closed. Only a new producer (a new producer id) writes again.
FATAL_PRODUCER_ERRORS: tuple[type[BaseException], ...] = (
    OutOfOrderSequenceNumber,
    ProducerFenced,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    ProducerClosed,
    IllegalStateError,
)


def is_fatal(exc: BaseException | None) -> bool:
    return isinstance(exc, FATAL_PRODUCER_ERRORS)


class Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


P = TypeVar("P", bound=Startable)


class RecoveringProducer(Generic[P]):
    """One producer made by `factory`, started in the background until Kafka takes it, and
    replaced by a new one after a fatal error (`FATAL_PRODUCER_ERRORS`, or a sender that died),
    with backoff. `ready` is False whenever the process cannot persist: before the first start,
    and from a fatal error until the new producer started. What was handed to the old producer
    and not acknowledged fails with the error (the caller answers 503, never a 2xx); nothing is
    re-sent behind the caller's back.

    The API's publisher, the JT/T 808 gateway's sink and the simulator use it; the worker's
    producer is Faust's, and a batch whose sends fail stops the worker for a restart, which makes
    a new one.
    """

    def __init__(
        self,
        factory: Callable[[], P],
        *,
        name: str,
        backoff_s: tuple[float, float] = (0.5, 10.0),
        on_replaced: Callable[[P], None] | None = None,
    ) -> None:
        self._factory = factory
        self.name = name
        self._backoff_s = backoff_s
        self._on_replaced = on_replaced
        self.producer: P = factory()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.recreated = 0
        self.last_error = ""

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and sender_alive(self.producer)

    @property
    def recovering(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start now if Kafka is there; otherwise keep trying in the background."""
        try:
            await self.producer.start()
        except (KafkaError, OSError) as exc:
            log.warning(
                "Kafka producer could not start; retrying",
                extra={"producer": self.name, "error": str(exc)},
            )
            self._task = asyncio.create_task(
                self._start_loop(fresh=False), name=f"{self.name}-start"
            )
        else:
            self._ready.set()

    def check(self, error: BaseException | None) -> bool:
        """After a send failed (or to look): replace the producer if `error` is fatal or its
        sender died. True when a replacement is (now) under way."""
        if self._stopping or self.recovering:
            return self.recovering
        if not (is_fatal(error) or (self._ready.is_set() and not sender_alive(self.producer))):
            return False
        self._ready.clear()
        self.last_error = repr(error) if error is not None else "sender task ended"
        log.error(
            "Kafka producer failed for good; replacing it",
            extra={"producer": self.name, "error": self.last_error},
        )
        self._task = asyncio.create_task(self._start_loop(fresh=True), name=f"{self.name}-recreate")
        return True

    async def _start_loop(self, *, fresh: bool) -> None:
        delay = self._backoff_s[0]
        while not self._stopping:
            if fresh:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.producer.stop(), 10.0)
                self.producer = self._factory()
                if self._on_replaced is not None:
                    self._on_replaced(self.producer)
                self.recreated += 1
            try:
                await self.producer.start()
            except (KafkaError, OSError) as exc:
                log.warning(
                    "Kafka producer still not started",
                    extra={"producer": self.name, "error": str(exc), "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_s[1])
                continue
            self._ready.set()
            log.info("Kafka producer started", extra={"producer": self.name})
            return

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait until a producer can persist (True), or `timeout_s` passed (False)."""
        try:
            async with asyncio.timeout(timeout_s):
                while not self.ready:
                    self.check(None)
                    await asyncio.sleep(0.1)
        except TimeoutError:
            return False
        return True

    async def stop_recovery(self) -> None:
        """Stop starting or replacing the producer (the producer itself stays as it is)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def stop(self) -> None:
        await self.stop_recovery()
        await self.producer.stop()


def deadletter_headers(reason: str, source_topic: str, detail: str = "") -> list[tuple[str, bytes]]:
    """Headers of a dead-lettered record: the bounded reason code, the source topic, the detail."""
    return [
        ("skipwatch-reason", reason.encode()),
        ("skipwatch-source-topic", source_topic.encode()),
        ("skipwatch-detail", detail[:2000].encode()),
    ]


async def wait_for_broker(bootstrap_servers: str, timeout_s: float = 60.0) -> None:
    """Block until the broker answers metadata requests (or raise TimeoutError)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"Kafka at {bootstrap_servers} not reachable: {exc}") from exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


class OffsetProbe:
    """The first record at or after an offset, read by one-off fetches outside any group.

    Tells a skipped record (it is there) from an offset with nothing behind it (a transaction
    marker, a compacted-away record), for the worker's input gap guard (streams/gaps.py), and
    gives the end offsets of partitions the worker does not read (the gps.raw partitions another
    worker binds: rules/clock.py).
    """

    def __init__(self, bootstrap_servers: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def first_offset(
        self, topic: str, partition: int, offset: int, timeout_s: float = 5.0
    ) -> int | None:
        """The offset of the first record at or after `offset`; None when none came in time."""
        async with self._lock:
            consumer = await self._started()
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            batch = await consumer.getmany(tp, timeout_ms=int(timeout_s * 1000))
            records = batch.get(tp, [])
            return records[0].offset if records else None

    async def end_offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """The partitions' end offsets (high-water marks) as the broker has them now."""
        async with self._lock:
            consumer = await self._started()
            tps = [TopicPartition(topic, partition) for partition in partitions]
            ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap_servers, group_id=None,
                enable_auto_commit=False, auto_offset_reset="earliest",
            )  # fmt: skip
            await self._consumer.start()
        return self._consumer

    async def committed(self, group_id: str, tps: Iterable[tuple[str, int]]) -> dict[Any, int]:
        """The group's committed offsets of these partitions (those with a commit), read by an
        admin request: nothing joins the group."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap_servers)
        await admin.start()
        try:
            wanted = [TopicPartition(topic, partition) for topic, partition in tps]
            offsets = await admin.list_consumer_group_offsets(group_id, partitions=wanted)
        finally:
            await admin.close()
        return {(tp.topic, tp.partition): o.offset for tp, o in offsets.items() if o.offset >= 0}

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

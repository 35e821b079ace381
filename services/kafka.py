"""Kafka plumbing shared by every process: topic specs, idempotent creation, producers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from services.settings import Settings

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


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """A producer whose acknowledged writes are durable: acks=all and idempotence on."""
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka.bootstrap_servers,
        "client_id": settings.kafka.client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 1024 * 1024,
        "max_request_size": 8 * 1024 * 1024,
        "request_timeout_ms": int(settings.kafka.produce_timeout_s * 1000),
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


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
    marker, a compacted-away record), for the worker's input gap guard (streams/gaps.py).
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
            if self._consumer is None:
                self._consumer = AIOKafkaConsumer(
                    bootstrap_servers=self._bootstrap_servers, group_id=None,
                    enable_auto_commit=False, auto_offset_reset="earliest",
                )  # fmt: skip
                await self._consumer.start()
            tp = TopicPartition(topic, partition)
            self._consumer.assign([tp])
            self._consumer.seek(tp, offset)
            batch = await self._consumer.getmany(tp, timeout_ms=int(timeout_s * 1000))
            records = batch.get(tp, [])
            return records[0].offset if records else None

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

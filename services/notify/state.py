"""Durable notification state in compacted Kafka topics, replayed on start and tailed after.

Every process that needs a table (the dispatcher, the API) reads the whole topic from the
beginning with its own unassigned consumer, so what Kafka holds is the truth: a SIGKILLed
dispatcher or a wiped Redis loses nothing. Writes go through an idempotent acks=all producer;
a record is only acted on once Kafka has acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import BaseModel, ValidationError

from services.kafka import TopicSpec, ensure_topics, make_producer
from services.notify.records import DeliveryRecord, EndpointRecord, SilenceRecord
from services.notify.sealing import KEYS_SETTING, SecretBox, SecretsUnreadable
from services.settings import Settings

log = logging.getLogger(__name__)

DELIVERIES = "notify.deliveries"
ENDPOINTS = "notify.endpoints"
SILENCES = "notify.silences"
GROUPS = "notify.groups"
NOTIFY_TOPICS = tuple(
    TopicSpec(name, compacted=True, co_partitioned=False)
    for name in (DELIVERIES, ENDPOINTS, SILENCES, GROUPS)
)

M = TypeVar("M", bound=BaseModel)


async def ensure_notify_topics(settings: Settings) -> None:
    await ensure_topics(
        settings.kafka.bootstrap_servers,
        settings.kafka.topic_prefix,
        settings.kafka.partitions,
        settings.kafka.replication_factor,
        specs=NOTIFY_TOPICS,
    )


async def partitions_of(bootstrap_servers: str, topic: str, timeout_s: float = 30.0) -> list[int]:
    """The topic's partitions, asked of the broker (a just-created topic may take a moment)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            described = await admin.describe_topics([topic])
            found = [p["partition"] for d in described for p in d.get("partitions", [])]
            if found:
                return sorted(found)
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"topic {topic} has no partitions (not created?)")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


class TopicFollower:
    """Reads a topic from its beginning to its end (the replay, `start` returns after it), then
    follows it in a background task. Subclasses handle the records of each fetched batch."""

    def __init__(self, settings: Settings, topic: str, client_suffix: str) -> None:
        self.topic = topic
        self._settings = settings
        self._client_id = f"{settings.kafka.client_id}-{client_suffix}"
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.replayed = asyncio.Event()

    def handle(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Read the topic to its end (the replay), then keep following it in the background."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=self._client_id,
        )
        await consumer.start()
        self._consumer = consumer
        partitions = await partitions_of(self._settings.kafka.bootstrap_servers, self.topic)
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while True:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            await self._read(consumer, 200)
        self.replayed.set()
        self._task = asyncio.create_task(self._tail(consumer), name=f"follow-{self.topic}")

    async def _read(self, consumer: AIOKafkaConsumer, timeout_ms: int) -> None:
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=2000)
        for records in batches.values():
            self.handle(records)

    async def _tail(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                await self._read(consumer, 500)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading %s failed; retrying", self.topic)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


class Table(TopicFollower, Generic[M]):
    """A compacted topic as a dict, kept current by a tailing consumer. `on_change` is called
    for every record read (after the replay too), with the key and the model or None (deleted)."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        model: type[M],
        on_change: Callable[[str, M | None], None] | None = None,
        wanted: Callable[[str, bytes], bool] | None = None,
    ) -> None:
        super().__init__(settings, settings.topic(name), "notify-table")
        self.items: dict[str, M] = {}
        self._model = model
        self._on_change = on_change
        # Records for which this says False are not decoded (a reader's own writes read back).
        self._wanted = wanted

    def handle(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            self._apply(record.key.decode() if record.key else "", record.value)

    def _apply(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.items.pop(key, None)
            item: M | None = None
        else:
            if self._wanted is not None and not self._wanted(key, value):
                return
            try:
                item = self._model.model_validate_json(value)
            except ValidationError as exc:
                # Without the input: it may hold a secret.
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in exc.errors(include_url=False, include_input=False)
                )
                log.warning("skipping an invalid record in %s: %s", self.topic, problems[:300])
                return
            self.items[key] = item
        if self._on_change is not None:
            self._on_change(key, item)


class Writer:
    """Writes records to the notification topics; returns once Kafka acknowledged them."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer | None = None) -> None:
        self._settings = settings
        self._producer = producer or make_producer(settings)

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def put(self, name: str, key: str, record: BaseModel | None) -> None:
        await (await self.send(name, key, record))

    async def send(self, name: str, key: str, record: BaseModel | None) -> asyncio.Future[Any]:
        """Queue a write; the returned future resolves once Kafka acknowledged it."""
        value = record.model_dump_json().encode() if record is not None else None
        future: asyncio.Future[Any] = await self._producer.send(
            self._settings.topic(name), value, key=key.encode()
        )
        return future

    async def flush(self) -> None:
        """Wait until every queued write is acknowledged (or failed)."""
        await self._producer.flush()


class NotifyState:
    """The tables the dispatcher and the API share."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_delivery: Callable[[str, DeliveryRecord | None], None] | None = None,
        on_endpoint: Callable[[str, EndpointRecord | None], None] | None = None,
        delivery_wanted: Callable[[str, bytes], bool] | None = None,
    ) -> None:
        self.deliveries = Table(settings, DELIVERIES, DeliveryRecord, on_delivery, delivery_wanted)
        self.endpoints = Table(settings, ENDPOINTS, EndpointRecord, on_endpoint)
        self.silences = Table(settings, SILENCES, SilenceRecord)
        self.writer = Writer(settings)
        keys = [k.get_secret_value() for k in settings.notify.secret_keys]
        self.box = SecretBox(keys) if keys else None
        self._settings = settings

    async def start(self) -> None:
        """Replay the tables; SecretsUnreadable when endpoints have secrets that the configured
        keys cannot read (none configured, or not the key they were encrypted with)."""
        await ensure_notify_topics(self._settings)
        await self.writer.start()
        await asyncio.gather(self.deliveries.start(), self.endpoints.start(), self.silences.start())
        self.check_secrets()

    def check_secrets(self) -> None:
        live = [e for e in self.endpoints.items.values() if not e.deleted and e.keys]
        if live and self.box is None:
            raise SecretsUnreadable(
                f"{len(live)} webhook endpoint(s) in {self.endpoints.topic} have signing secrets "
                f"but {KEYS_SETTING} is not set: set it to the key(s) they were encrypted with "
                "(secrets stored in clear by an older version: any new key, they are encrypted "
                "on their next write); docs/notifications.md, Secrets at rest"
            )
        for endpoint in live:
            for key in endpoint.keys:
                try:
                    key.key(self.box)
                except SecretsUnreadable as exc:
                    raise SecretsUnreadable(f"webhook endpoint {endpoint.id}: {exc}") from None

    async def put_endpoint(self, record: EndpointRecord) -> EndpointRecord:
        """Write an endpoint with its secrets encrypted (a clear one from an older record is
        encrypted now; an encrypted one is re-encrypted with the first key); returns what was
        written, which is also what the table holds from now on."""
        if self.box is None:
            raise SecretsUnreadable(
                f"webhook secrets are not stored in clear and {KEYS_SETTING} is not set"
            )
        sealed = record.sealed(self.box)
        self.endpoints.items[sealed.id] = sealed
        await self.writer.put(ENDPOINTS, sealed.id, sealed)
        return sealed

    async def stop(self) -> None:
        for table in (self.deliveries, self.endpoints, self.silences):
            await table.stop()
        await self.writer.stop()

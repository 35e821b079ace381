"""The dispatcher: alert state changes in, notifications out (`skipwatch dispatcher`).

- Reads `<prefix>alerts` in the consumer group `<prefix>dispatcher`. On each assigned partition
  it first reads up to the group's committed offset without notifying, to learn each alert's last
  state (what makes the next change a firing, an escalation, ...), then notifies from there.
  Offsets are committed only up to the oldest alert change still waiting in a group, so a crash
  never skips one; a change read twice makes the same delivery id, which is written only once.
- Routes each change (routing config, Alertmanager-style groups) and to each matching API
  webhook, drops what silences, inhibition or a time interval mute, and writes one delivery record
  per message and endpoint to the compacted `<prefix>notify.deliveries` before trying it.
- Each routing group's state after a flush (last send, what is still firing) goes to the
  compacted `<prefix>notify.groups`; the owner of a partition takes its groups from there, so
  `group_interval` and `repeat_interval` hold across restarts.
- Each endpoint has its own queue, worker and concurrency limit; attempts time out; a slow or
  failing endpoint never holds another. Every attempt's result is written back to the delivery
  record; on start the records are replayed and every pending delivery is resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import heapq
import logging
import random
import time
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from rules.events import AlertEvent, AlertStatus, Loan
from services.notify.config import ConfigHolder
from services.notify.lifecycle import Group, Seen, notice_type, seen_of
from services.notify.model import (
    Borrower,
    Delivered,
    EventType,
    Failed,
    Notice,
    Outcome,
    Receiver,
    RetryLater,
)
from services.notify.receivers import DingTalkReceiver, WebhookReceiver, WeComReceiver
from services.notify.records import (
    MAX_ATTEMPTS_KEPT,
    Attempt,
    DeliveryRecord,
    EndpointRecord,
    GroupRecord,
    NoticeRecord,
)
from services.notify.retry import next_attempt_at
from services.notify.routing import Route, Routing, alert_labels
from services.notify.signing import SigningKey
from services.notify.ssrf import AllowList, DestinationRefused, SsrfGuard, guarded_client
from services.notify.state import DELIVERIES, GROUPS, NotifyState, Table
from services.settings import Settings

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DispatcherMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.deliveries = Counter(
            "skipwatch_notify_attempts",
            "Delivery attempts by receiver kind (webhook, wecom, dingtalk), outcome (delivered, "
            "retry, failed) and reason (none, client, server, rate_limited, timeout, connect, "
            "refused, gone, rejected).",
            ["kind", "outcome", "reason"],
            registry=self.registry,
        )
        self.finished = Counter(
            "skipwatch_notify_deliveries",
            "Deliveries that reached a final state, by receiver kind and state (delivered, "
            "dead: retries used up, failed: permanent failure).",
            ["kind", "state"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "skipwatch_notify_attempt_seconds",
            "Duration of one delivery attempt, by receiver kind.",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "skipwatch_notify_queue_depth",
            "Pending deliveries (waiting for an attempt or a retry), by receiver kind.",
            ["kind"],
            registry=self.registry,
        )
        self.oldest_pending = Gauge(
            "skipwatch_notify_oldest_pending_seconds",
            "Age of the oldest pending delivery, by receiver kind.",
            ["kind"],
            registry=self.registry,
        )
        self.notices = Counter(
            "skipwatch_notify_alert_changes",
            "Alert changes read, by what became of them: routed, duplicate (no news), "
            "silenced, inhibited, muted (a time interval), unrouted (no receiver), invalid.",
            ["outcome"],
            registry=self.registry,
        )
        self.disabled = Counter(
            "skipwatch_notify_endpoints_disabled",
            "Endpoints disabled by the dispatcher, by reason (gone: HTTP 410; failing: no "
            "success for notify.disable_after_s; refused: the SSRF guard refused the "
            "routing file's destination).",
            ["reason"],
            registry=self.registry,
        )


@dataclass
class EndpointQueue:
    """One endpoint's pending deliveries, ordered by when they are due."""

    id: str
    heap: list[tuple[dt.datetime, str]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    semaphore: asyncio.Semaphore | None = None
    in_flight: set[str] = field(default_factory=set)


@dataclass
class ConfigEndpoint:
    """An integration of a routing-config receiver, e.g. `cfg:oncall:dingtalk:0`."""

    id: str
    url: str
    receiver: Receiver
    disabled_reason: str | None = None
    failing_since: dt.datetime | None = None


def delivery_id(
    endpoint: str, notices: list[tuple[EventType, AlertEvent]], repeat_of: dt.datetime | None = None
) -> str:
    """The same alert changes to the same endpoint make the same id (and `webhook-id`), so a
    change read twice after a restart is delivered once. A `repeat_interval` reminder is told
    apart by the time of the send it repeats."""
    parts = (
        [endpoint]
        + ([f"repeat|{repeat_of.isoformat()}"] if repeat_of else [])
        + [
            f"{kind.value}|{alert.alert_id}|{alert.status.value}|{alert.severity.value}|"
            f"{alert.updated_at.isoformat()}"
            for kind, alert in notices
        ]
    )
    return "msg_" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:26]


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        *,
        config: ConfigHolder | None = None,
        metrics: DispatcherMetrics | None = None,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.notify = settings.notify
        self.config = config
        self.metrics = metrics or DispatcherMetrics()
        self.clock = clock
        self.rng = rng or random.Random()
        self.guard = SsrfGuard(AllowList.parse(self.notify.allow_list))
        self._transport = transport
        # One HTTP client (connection pool) per endpoint, sized to its concurrency limit: a slow
        # endpoint can only ever hold its own connections.
        self._clients: dict[str, httpx.AsyncClient] = {}
        # API endpoints' receivers, made again when their record changes.
        self._api_receivers: dict[str, tuple[EndpointRecord, WebhookReceiver]] = {}
        self.state = NotifyState(
            settings,
            on_delivery=self._on_delivery,
            on_endpoint=self._on_endpoint,
            delivery_wanted=self._delivery_wanted,
        )
        self.loans: Table[Loan] = Table(settings, "loans", Loan)
        # Each routing group's last send and what is still firing (durable: see GroupRecord).
        self.group_states: Table[GroupRecord] = Table(settings, GROUPS, GroupRecord)
        self.queues: dict[str, EndpointQueue] = {}
        self.config_endpoints: dict[str, ConfigEndpoint] = {}
        self.groups: dict[str, tuple[Route, Group]] = {}
        self.group_partition: dict[str, int] = {}
        # (when, group key): when a group may be due (entries may be stale; checked on pop).
        self._due: list[tuple[dt.datetime, str]] = []
        # Partitions of the alerts topic this process owns: it attempts their deliveries.
        self.owned: set[int] = set()
        # Offsets of alert changes still waiting in a group (not yet a delivery record).
        self.held: dict[str, list[tuple[TopicPartition, int]]] = defaultdict(list)
        self.held_count: dict[TopicPartition, Tally[int]] = defaultdict(Tally)
        # The last state of every alert fingerprint, and the firing ones per loan (inhibition).
        self.seen: dict[str, Seen] = {}
        self.active_by_loan: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
        # The deliveries as this process knows them: its own writes are newer than what the
        # tailing table may still be reading back, so this, not the table, is what it acts on.
        self.records: dict[str, DeliveryRecord] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.replay_until: dict[TopicPartition, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._writes: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._wake_flush = asyncio.Event()
        self.ready = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._build_config_endpoints(self.config.routing if self.config else None)
        await self.check_destinations()
        # Replays (deliveries: the pending ones are queued again once partitions are assigned).
        await asyncio.gather(self.loans.start(), self.state.start())
        await self.group_states.start()  # its topic is made by state.start
        for queue in self.queues.values():
            self._ensure_worker(queue)
        self._tasks.append(asyncio.create_task(self._consume(), name="dispatcher-alerts"))
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="dispatcher-flush"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="dispatcher-upkeep"))
        if self.config is not None:
            self._tasks.append(asyncio.create_task(self.config.watch(), name="dispatcher-config"))

    async def stop(self) -> None:
        tasks = self._tasks + [q.task for q in self.queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.consumer.stop(), 10.0)
        await self.state.stop()
        await self.loans.stop()
        await self.group_states.stop()
        for client in self._clients.values():
            await client.aclose()

    def _client(self, endpoint: str) -> httpx.AsyncClient:
        client = self._clients.get(endpoint)
        if client is None:
            limit = self.notify.endpoint_concurrency
            client = guarded_client(
                self.guard,
                self.notify.attempt_timeout_s,
                self._transport,
                limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            )
            self._clients[endpoint] = client
        return client

    def on_config_change(self, routing: Routing) -> None:
        self._build_config_endpoints(routing)
        task = asyncio.get_running_loop().create_task(self.check_destinations())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        for queue in self.queues.values():
            queue.wake.set()

    def _build_config_endpoints(self, routing: Routing | None) -> None:
        built: dict[str, ConfigEndpoint] = {}
        dashboard = self.notify.dashboard_url
        for receiver in routing.receivers.values() if routing else ():
            for index, hook in enumerate(receiver.webhook_configs):
                keys = [SigningKey(hook.secret)]
                if hook.previous_secret is not None:
                    keys.append(SigningKey(hook.previous_secret, hook.previous_secret_expires))
                ident = f"cfg:{receiver.name}:webhook:{index}"
                built[ident] = ConfigEndpoint(
                    ident,
                    hook.url,
                    WebhookReceiver(
                        url=hook.url, keys=keys, client=self._client(ident), dashboard_url=dashboard
                    ),
                )
            for index, wecom in enumerate(receiver.wecom_configs):
                ident = f"cfg:{receiver.name}:wecom:{index}"
                built[ident] = ConfigEndpoint(
                    ident,
                    wecom.url,
                    WeComReceiver(
                        url=wecom.url, client=self._client(ident), dashboard_url=dashboard
                    ),
                )
            for index, ding in enumerate(receiver.dingtalk_configs):
                ident = f"cfg:{receiver.name}:dingtalk:{index}"
                built[ident] = ConfigEndpoint(
                    ident,
                    ding.url,
                    DingTalkReceiver(
                        url=ding.url,
                        secret=ding.secret,
                        client=self._client(ident),
                        dashboard_url=dashboard,
                    ),
                )
        for ident, old in self.config_endpoints.items():
            if ident in built and built[ident].url == old.url:  # keep what was learnt about it
                built[ident].disabled_reason = old.disabled_reason
                built[ident].failing_since = old.failing_since
        self.config_endpoints = built

    async def check_destinations(self) -> None:
        """The SSRF guard's check of the routing file's destinations, as when an API endpoint is
        saved: a refused one is flagged disabled (a DNS failure is not held against it here; the
        connection-time check will see it)."""
        for endpoint in list(self.config_endpoints.values()):
            try:
                await self.guard.check_url(endpoint.url)
            except DestinationRefused as exc:
                if exc.reason == "unresolvable":
                    log.warning("destination does not resolve", extra={"endpoint": endpoint.id})
                    continue
                await self._disable(endpoint.id, "refused", f"destination refused: {exc.detail}")

    def _receiver(self, endpoint: str) -> tuple[Receiver, str] | None:
        """The endpoint's receiver and kind when it exists and is enabled."""
        found = self.config_endpoints.get(endpoint)
        if found is not None:
            return None if found.disabled_reason else (found.receiver, found.receiver.kind)
        record = self.state.endpoints.items.get(endpoint)
        if record is None or not record.enabled or record.deleted:
            return None
        cached = self._api_receivers.get(endpoint)
        if cached is not None and cached[0] is record:
            return cached[1], "webhook"
        receiver = WebhookReceiver(
            url=record.url,
            keys=[k.key(self.state.box) for k in record.keys],  # decrypted once per version
            client=self._client(endpoint),
            dashboard_url=self.notify.dashboard_url,
        )
        self._api_receivers[endpoint] = (record, receiver)
        return receiver, "webhook"

    # --- alert changes ------------------------------------------------------------------------

    async def _consume(self) -> None:
        prefix = self.settings.kafka.topic_prefix
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka.bootstrap_servers,
                group_id=f"{prefix}dispatcher",
                client_id=f"{self.settings.kafka.client_id}-dispatcher",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=1000,
            )
            self.consumer = consumer
            try:
                await consumer.start()
                consumer.subscribe([self.settings.topic("alerts")], listener=_Rebuild(self))
                last_commit = time.monotonic()
                while True:
                    batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                    for tp, records in batches.items():
                        for record in records:
                            await self._read_alert(tp, record.offset, record.value)
                    if not self.ready.is_set() and consumer.assignment():
                        self.ready.set()
                    if time.monotonic() - last_commit >= 1.0:
                        await self._commit()
                        last_commit = time.monotonic()
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._commit(), 5.0)
                raise
            except Exception:
                log.exception("reading alerts failed; restarting the consumer")
                await asyncio.sleep(2.0)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), 10.0)

    async def _commit(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        offsets: dict[TopicPartition, int] = {}
        for tp in consumer.assignment():
            held = [o for o, n in self.held_count[tp].items() if n > 0]
            offsets[tp] = min(held) if held else await consumer.position(tp)
        # Every delivery record made from what is committed must be in Kafka first. (Taken
        # after the offsets: a record released meanwhile already has its write task.)
        await self.state.writer.flush()
        if self._writes:
            await asyncio.gather(*list(self._writes))
        if offsets:
            await consumer.commit(offsets)

    async def _read_alert(self, tp: TopicPartition, offset: int, value: bytes | None) -> None:
        if value is None:
            return
        try:
            alert = AlertEvent.model_validate_json(value)
        except ValidationError:
            self.metrics.notices.labels("invalid").inc()
            return
        previous = self.seen.get(alert.fingerprint)
        self.seen[alert.fingerprint] = seen_of(alert)
        labels = alert_labels(alert)
        active = self.active_by_loan[alert.loan_id]
        others = [v for k, v in active.items() if k != alert.fingerprint]
        if alert.status in (AlertStatus.FIRING, AlertStatus.ACKNOWLEDGED):
            active[alert.fingerprint] = labels
        else:
            active.pop(alert.fingerprint, None)
            if not active:
                self.active_by_loan.pop(alert.loan_id, None)
        if offset < self.replay_until.get(tp, 0):
            return  # learning the state before the committed offset: notified already
        kind = notice_type(previous, alert)
        if kind is None:
            self.metrics.notices.labels("duplicate").inc()
            return
        now = self.clock()
        if any(s.mutes(labels, now) for s in self.state.silences.items.values()):
            self.metrics.notices.labels("silenced").inc()
            return
        routing = self.config.routing if self.config else None
        firing_others = [o for o in others if o.get("status") == AlertStatus.FIRING.value]
        if routing is not None and routing.inhibited(labels, firing_others):
            self.metrics.notices.labels("inhibited").inc()
            return
        reached = False
        for endpoint in list(self.state.endpoints.items.values()):
            if endpoint.wants(kind, alert, labels):
                await self._create(endpoint.id, "webhook", [(kind, alert)], now, tp.partition)
                reached = True
        for route in routing.routes_for(labels) if routing else ():
            key = route.group_key(labels)
            if key in self.groups:
                group = self.groups[key][1]
            else:  # new here, or known to Kafka (the changes of a partition may be read before
                # its assignment has restored its groups)
                group = self._restore_group(key) or Group(
                    route.group_wait_s, route.group_interval_s, route.repeat_interval_s
                )
                self.groups[key] = (route, group)
            group.add(kind, alert, now)
            assert group.next_flush is not None
            heapq.heappush(self._due, (group.next_flush, key))
            self.group_partition.setdefault(key, tp.partition)
            self.held[key].append((tp, offset))
            self.held_count[tp][offset] += 1
            reached = True
        self.metrics.notices.labels("routed" if reached else "unrouted").inc()
        self._wake_flush.set()

    async def _flush_loop(self) -> None:
        while True:
            now = self.clock()
            while self._due and self._due[0][0] <= now:
                _, key = heapq.heappop(self._due)
                entry = self.groups.get(key)
                if entry is not None and entry[1].due(now):
                    await self._flush(key, now)
            wait = (self._due[0][0] - now).total_seconds() if self._due else 1.0
            self._wake_flush.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_flush.wait(), max(0.0, min(1.0, wait)))

    async def _flush(self, key: str, now: dt.datetime) -> None:
        route, group = self.groups[key]
        partition = self.group_partition[key]
        repeat_of = group.last_sent if not group.pending else None
        notices = group.flush(now)
        routing = self.config.routing if self.config else None
        if notices and routing is not None and route.muted_at(now, routing.intervals):
            self.metrics.notices.labels("muted").inc(len(notices))
        elif notices and routing is not None:
            receiver = routing.receivers.get(route.receiver)
            kinds = (
                [("webhook", n) for n in range(len(receiver.webhook_configs))]
                + [("wecom", n) for n in range(len(receiver.wecom_configs))]
                + [("dingtalk", n) for n in range(len(receiver.dingtalk_configs))]
                if receiver
                else []
            )
            for kind, index in kinds:
                endpoint = f"cfg:{route.receiver}:{kind}:{index}"
                if kind == "webhook":  # Standard Webhooks: one alert per message
                    for notice in notices:
                        await self._create(endpoint, kind, [notice], now, partition, repeat_of)
                else:
                    await self._create(endpoint, kind, notices, now, partition, repeat_of)
        for tp, offset in self.held.pop(key, []):
            self.held_count[tp][offset] -= 1
            if self.held_count[tp][offset] <= 0:
                del self.held_count[tp][offset]
        # Written before the offsets of its changes are committed (`_commit` flushes first).
        await self._save_group(key, route, group, partition)
        if group.empty:
            del self.groups[key]
            del self.group_partition[key]
        else:
            self._schedule_repeat(key, group)

    def _schedule_repeat(self, key: str, group: Group) -> None:
        if group.next_flush is None and group.firing and group.last_sent is not None:
            repeat_at = group.last_sent + dt.timedelta(seconds=group.repeat_interval_s)
            heapq.heappush(self._due, (repeat_at, key))
            self._wake_flush.set()

    async def _save_group(self, key: str, route: Route, group: Group, partition: int) -> None:
        record = None
        if not group.empty and group.last_sent is not None:
            record = GroupRecord(
                key=key,
                route=route.id,
                partition=partition,
                last_sent=group.last_sent,
                firing=[a.model_dump(mode="json") for a in group.firing.values()],
            )
        if record is None:
            self.group_states.items.pop(key, None)
        else:
            self.group_states.items[key] = record
        await self.state.writer.send(GROUPS, key, record)

    def _restore_groups(self, partitions: set[int]) -> None:
        """The groups of newly owned partitions as Kafka has them (last send, still firing), so
        their reminders come on time although no change of theirs is read."""
        restored = 0
        for key, record in list(self.group_states.items.items()):
            if record.partition in partitions and key not in self.groups:
                restored += self._restore_group(key) is not None
        if restored:
            log.info("routing groups restored", extra={"groups": restored})

    def _restore_group(self, key: str) -> Group | None:
        """A group as Kafka has it, made live (None: not in Kafka, or its route is gone)."""
        routing = self.config.routing if self.config else None
        record = self.group_states.items.get(key)
        if routing is None or record is None:
            return None
        route = routing.route_by_id(record.route)
        if route is None:
            return None  # the config no longer has that route
        group = Group(route.group_wait_s, route.group_interval_s, route.repeat_interval_s)
        group.last_sent = record.last_sent
        group.firing = {a.fingerprint: a for a in record.firing_alerts()}
        self.groups[key] = (route, group)
        self.group_partition[key] = record.partition
        self._schedule_repeat(key, group)
        return group

    def _drop_groups(self, partitions: set[int]) -> None:
        """Groups of partitions no longer owned: their new owner reads them from Kafka."""
        for key in [k for k, p in self.group_partition.items() if p in partitions]:
            del self.groups[key]
            del self.group_partition[key]
            for tp, offset in self.held.pop(key, []):
                self.held_count[tp][offset] -= 1
                if self.held_count[tp][offset] <= 0:
                    del self.held_count[tp][offset]

    def _borrower(self, loan_id: str) -> Borrower | None:
        loan = self.loans.items.get(loan_id)
        return Borrower(loan.borrower.name, loan.borrower.phone) if loan else None

    async def _create(
        self,
        endpoint: str,
        kind: str,
        notices: list[tuple[EventType, AlertEvent]],
        now: dt.datetime,
        partition: int,
        repeat_of: dt.datetime | None = None,
    ) -> None:
        ident = delivery_id(endpoint, notices, repeat_of)
        if ident in self.records or ident in self.state.deliveries.items:
            return
        first = next_attempt_at(
            self.notify.retry_schedule_s, 0, now=now, jitter=self.notify.retry_jitter,
            draw=self.rng.random(),
        )  # fmt: skip
        record = DeliveryRecord(
            id=ident,
            endpoint=endpoint,
            receiver_kind=kind,
            partition=partition,
            created_at=now,
            next_at=first,
            notices=[NoticeRecord.of(Notice(k, a, self._borrower(a.loan_id))) for k, a in notices],
        )
        self.records[ident] = record
        # Queued, not awaited one by one: a batch of alerts makes its records in one round trip.
        # `_commit` flushes the producer first, so no offset is committed before they are in.
        future = await self.state.writer.send(DELIVERIES, ident, record)
        task = asyncio.create_task(self._enqueue_when_written(future, record))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _enqueue_when_written(
        self, future: asyncio.Future[Any], record: DeliveryRecord
    ) -> None:
        while True:
            try:
                await future
                break
            except Exception as exc:
                log.warning(
                    "writing a delivery record failed; retrying", extra={"error": repr(exc)}
                )
                await asyncio.sleep(1.0)
                future = await self.state.writer.send(DELIVERIES, record.id, record)
        self._enqueue(record)

    # --- deliveries ---------------------------------------------------------------------------

    def _delivery_wanted(self, key: str, value: bytes) -> bool:
        """Whether a delivery record read back is worth decoding: not when it is this process's
        own write (same generation, a partition it owns) — most of what it reads."""
        known = self.records.get(key)
        if known is None or known.partition not in self.owned:
            return True
        if not self.state.deliveries.replayed.is_set():
            return True
        head = orjson.loads(value)
        return bool(head.get("generation", 0) > known.generation)

    def _on_delivery(self, key: str, record: DeliveryRecord | None) -> None:
        """A delivery record read from Kafka: the replay at start, or a manual redelivery."""
        if record is None:
            self.records.pop(key, None)
            return
        known = self.records.get(key)
        replaying = not self.state.deliveries.replayed.is_set()
        if (
            known is not None
            and known.partition in self.owned
            and not (
                record.generation > known.generation
                or (replaying and record.generation == known.generation)
            )
        ):
            return  # our own write coming back
        self.records[key] = record
        if record.state == "pending" and record.partition in self.owned:
            self._enqueue(record)

    def own(self, partitions: set[int]) -> None:
        """Partitions assigned to this process: resume their pending deliveries."""
        added = partitions - self.owned
        self._drop_groups(self.owned - partitions)
        self.owned = set(partitions)
        self._restore_groups(added)
        for record in list(self.records.values()):
            if record.state == "pending" and record.partition in added:
                self._enqueue(record)

    def _on_endpoint(self, key: str, record: EndpointRecord | None) -> None:
        queue = self.queues.get(key)
        if queue is not None:
            queue.wake.set()  # re-enabled, or changed: look again

    def _enqueue(self, record: DeliveryRecord) -> None:
        queue = self.queues.get(record.endpoint)
        if queue is None:
            queue = self.queues[record.endpoint] = EndpointQueue(record.endpoint)
        heapq.heappush(queue.heap, (record.next_at or record.created_at, record.id))
        queue.wake.set()
        if self.state.deliveries.replayed.is_set():
            self._ensure_worker(queue)

    def _ensure_worker(self, queue: EndpointQueue) -> None:
        if queue.task is None or queue.task.done():
            queue.semaphore = asyncio.Semaphore(self.notify.endpoint_concurrency)
            queue.task = asyncio.create_task(self._work(queue), name=f"endpoint-{queue.id}")

    async def _work(self, queue: EndpointQueue) -> None:
        assert queue.semaphore is not None
        attempts: set[asyncio.Task[None]] = set()
        try:
            await self._work_loop(queue, queue.semaphore, attempts)
        finally:
            for task in attempts:
                task.cancel()

    async def _work_loop(
        self, queue: EndpointQueue, semaphore: asyncio.Semaphore, attempts: set[asyncio.Task[None]]
    ) -> None:
        while True:
            queue.wake.clear()
            if not queue.heap or self._receiver(queue.id) is None:
                # Nothing due, or the endpoint is disabled or unknown (pending stays pending).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.wake.wait(), 5.0)
                continue
            due_at, ident = queue.heap[0]
            current = self.records.get(ident)
            if current is None or current.state != "pending" or current.next_at != due_at:
                heapq.heappop(queue.heap)  # superseded (a later write moved or finished it)
                continue
            wait = (due_at - self.clock()).total_seconds()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.wake.wait(), min(wait, 60.0))
                continue
            heapq.heappop(queue.heap)
            if ident in queue.in_flight:
                continue  # a duplicate heap entry of an attempt under way
            queue.in_flight.add(ident)
            await semaphore.acquire()
            task = asyncio.create_task(self._attempt_and_release(queue, ident))
            attempts.add(task)
            task.add_done_callback(attempts.discard)

    async def _attempt_and_release(self, queue: EndpointQueue, ident: str) -> None:
        semaphore = queue.semaphore
        assert semaphore is not None
        released = False

        def release() -> None:
            # The slot is the endpoint's: it is given back as soon as the receiver answered,
            # before the result is written to Kafka.
            nonlocal released
            if not released:
                released = True
                semaphore.release()

        try:
            await self._attempt(queue, ident, release)
        except Exception:
            # Most likely Kafka did not take the attempt's record: try again in a while (the
            # attempt may be repeated; the receiver sees the same webhook-id).
            log.exception("delivery attempt not recorded; retrying", extra={"delivery": ident})
            record = self.records.get(ident)
            if record is not None and record.state == "pending":
                retry_at = self.clock() + dt.timedelta(seconds=5)
                self.records[ident] = record.model_copy(update={"next_at": retry_at})
                heapq.heappush(queue.heap, (retry_at, ident))
        finally:
            queue.in_flight.discard(ident)
            release()

    async def _attempt(self, queue: EndpointQueue, ident: str, release: Callable[[], None]) -> None:
        record = self.records.get(ident)
        if record is None or record.state != "pending":
            return
        if record.partition not in self.owned:
            return  # another dispatcher owns it now (it was revoked from this one)
        found = self._receiver(record.endpoint)
        if found is None:
            assert record.next_at is not None
            heapq.heappush(queue.heap, (record.next_at, ident))
            return
        receiver, kind = found
        started = time.monotonic()
        try:
            outcome: Outcome = await asyncio.wait_for(
                receiver.deliver(record.message()), self.notify.attempt_timeout_s + 1.0
            )
        except TimeoutError:
            outcome = RetryLater("timeout", "attempt timed out")
        except Exception as exc:  # a receiver bug must not kill the endpoint's worker
            log.exception("receiver failed", extra={"endpoint": record.endpoint})
            outcome = RetryLater("server", f"receiver error: {type(exc).__name__}")
        latency = time.monotonic() - started
        release()
        await self._record(record, kind, outcome, latency, queue)

    async def _record(
        self,
        record: DeliveryRecord,
        kind: str,
        outcome: Outcome,
        latency: float,
        queue: EndpointQueue,
    ) -> None:
        now = self.clock()
        self.metrics.latency.labels(kind).observe(latency)
        status = getattr(outcome, "status", None)
        if isinstance(outcome, Delivered):
            label, reason, detail = "delivered", None, ""
        elif isinstance(outcome, Failed):
            label, reason, detail = "failed", outcome.reason, outcome.detail
        else:
            label, reason, detail = "retry", outcome.reason, outcome.detail
        self.metrics.deliveries.labels(kind, label, reason or "none").inc()
        attempt = Attempt(
            at=now, outcome=label, status=status, reason=reason, detail=detail,
            latency_ms=round(latency * 1000, 3),
        )  # fmt: skip
        update: dict[str, Any] = {
            "attempts": [*record.attempts, attempt][-MAX_ATTEMPTS_KEPT:],
            "attempt_count": record.attempt_count + 1,
        }
        if isinstance(outcome, Delivered):
            update.update(state="delivered", next_at=None)
            await self._endpoint_succeeded(record.endpoint)
        elif isinstance(outcome, Failed):
            update.update(state="failed", next_at=None)
            if outcome.reason == "gone":
                await self._disable(record.endpoint, "gone", f"{outcome.detail}: endpoint is gone")
        else:
            retry_at = next_attempt_at(
                self.notify.retry_schedule_s, record.attempt_count + 1, now=now,
                jitter=self.notify.retry_jitter, draw=self.rng.random(),
                retry_after_s=outcome.retry_after_s,
            )  # fmt: skip
            if retry_at is None:
                update.update(state="dead", next_at=None)
            else:
                update.update(next_at=retry_at)
            await self._endpoint_failed(record.endpoint, now)
        updated = record.model_copy(update=update)
        self.records[record.id] = updated
        await self.state.writer.put(DELIVERIES, record.id, updated)
        if updated.state == "pending":
            assert updated.next_at is not None
            heapq.heappush(queue.heap, (updated.next_at, updated.id))
            queue.wake.set()
        else:
            self.metrics.finished.labels(kind, updated.state).inc()
            log.info(
                "delivery finished",
                extra={"delivery": record.id, "endpoint": record.endpoint, "state": updated.state},
            )

    async def _endpoint_succeeded(self, endpoint: str) -> None:
        found = self.config_endpoints.get(endpoint)
        if found is not None:
            found.failing_since = None
            return
        record = self.state.endpoints.items.get(endpoint)
        if record is not None and record.failing_since is not None:
            updated = record.model_copy(update={"failing_since": None})
            await self.state.put_endpoint(updated)

    async def _endpoint_failed(self, endpoint: str, now: dt.datetime) -> None:
        limit = dt.timedelta(seconds=self.notify.disable_after_s)
        found = self.config_endpoints.get(endpoint)
        if found is not None:
            found.failing_since = found.failing_since or now
            if now - found.failing_since >= limit:
                await self._disable(endpoint, "failing", f"no success since {found.failing_since}")
            return
        record = self.state.endpoints.items.get(endpoint)
        if record is None:
            return
        if record.failing_since is None:
            updated = record.model_copy(update={"failing_since": now})
            await self.state.put_endpoint(updated)
        elif now - record.failing_since >= limit:
            await self._disable(endpoint, "failing", f"no success since {record.failing_since}")

    async def _disable(self, endpoint: str, reason: str, detail: str) -> None:
        self.metrics.disabled.labels(reason).inc()
        log.warning("endpoint disabled", extra={"endpoint": endpoint, "reason": detail})
        found = self.config_endpoints.get(endpoint)
        if found is not None:
            # Routing-config endpoints are flagged until the config is fixed and reloaded.
            found.disabled_reason = detail
            return
        record = self.state.endpoints.items.get(endpoint)
        if record is not None and record.enabled:
            updated = record.model_copy(
                update={"enabled": False, "disabled_reason": detail, "disabled_at": self.clock()}
            )
            await self.state.put_endpoint(updated)

    async def _housekeeping(self) -> None:
        """Gauges, and deleting finished deliveries past their retention (a tombstone in the
        compacted topic; only the partition's owner does it)."""
        retention = dt.timedelta(seconds=self.notify.delivery_retention_s)
        every = min(5.0, self.notify.delivery_retention_s / 2)
        while True:
            now = self.clock()
            depth: Tally[str] = Tally()
            oldest: dict[str, float] = {}
            expired: list[str] = []
            for record in self.records.values():
                if record.partition not in self.owned:
                    continue
                if record.state == "pending":
                    depth[record.receiver_kind] += 1
                    age = (now - record.created_at).total_seconds()
                    oldest[record.receiver_kind] = max(oldest.get(record.receiver_kind, 0), age)
                else:
                    last = record.attempts[-1].at if record.attempts else record.created_at
                    if now - last > retention:
                        expired.append(record.id)
            for kind in ("webhook", "wecom", "dingtalk"):
                self.metrics.queue_depth.labels(kind).set(depth[kind])
                self.metrics.oldest_pending.labels(kind).set(oldest.get(kind, 0.0))
            for ident in expired:
                await self.state.writer.send(DELIVERIES, ident, None)
                self.records.pop(ident, None)
            await asyncio.sleep(every)


class _Rebuild(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """On assignment: read each partition from the start, notifying only past the committed
    offset (what comes before only rebuilds the alerts' last states)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        with contextlib.suppress(Exception):
            await self._dispatcher._commit()
        self._dispatcher.own(self._dispatcher.owned - {tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._dispatcher.consumer
        assert consumer is not None
        for tp in assigned:
            committed = await consumer.committed(tp)
            self._dispatcher.replay_until[tp] = committed or 0
            await consumer.seek_to_beginning(tp)
        self._dispatcher.own({tp.partition for tp in consumer.assignment()})

"""The projector: reads Kafka and writes the Redis view (services/store.py) the API serves.

It consumes `<prefix>alerts` (every alert state change, from workers and operators) and
`<prefix>loans` (for loan summaries and device bindings), `<prefix>loan-status` (the worker's
signals and resident points per loan), and, for loan timelines,
`<prefix>payments`, `<prefix>contacts` and a sample of `<prefix>gps.raw`, and, for loan tracks
(services/track.py), every ping on `<prefix>gps.raw`, thinned while parked.

Positions live in Redis next to the view, not (only) in Kafka: the view and "how far it has read"
are then wiped together, so an emptied Redis is rebuilt from the beginning of the topics without
anyone resetting a consumer group. Kafka offsets are committed too, under the group
`<topic prefix>projector`, so the usual tools show the lag; they are not used for positioning.
Every write is idempotent (see `store.merge` and the timeline's deterministic members), so the
at-least-once redelivery after a crash or a rebalance changes nothing.

Runs as a background task of the API process (`api.projector_enabled`); several API processes
share the partitions through the consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, defaultdict
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError
from redis.exceptions import RedisError

from rules.events import AlertEvent, ContactAttempt, GpsPing, Loan, PaymentEvent
from services.loan_status import LoanStatus
from services.store import AlertStore, TimelineEntry
from services.track import TrackFix, TrackStore, parse_fix

log = logging.getLogger(__name__)

ALERTS, LOANS, PAYMENTS, CONTACTS, GPS = "alerts", "loans", "payments", "contacts", "gps.raw"
LOAN_STATUS = "loan-status"  # the worker's derived status per loan (services/loan_status.py)
# Remembered devices for ping sampling; past this the memory is simply reset (only sampling
# density suffers, never correctness).
_MAX_SAMPLED_DEVICES = 200_000


# How long stopping may wait for the Kafka consumer to leave its group.
STOP_TIMEOUT_S = 10.0
# How often the projector looks whether its view is still there (a wiped or flushed Redis),
# also while no record arrives (saving positions notices it only when records come).
WIPE_CHECK_S = 2.0


def _ping_sample(value: bytes | None) -> tuple[str, float, bool] | None:
    """`(device_id, event time in epoch seconds, has alarms)` of a gps.raw record, read without
    validating the whole ping; None when the record is not plainly shaped so (it is then validated
    before sampling). A malformed ping that this reads and samples out is counted `sampled_out`,
    not `invalid`: writers validate, so only a foreign producer could write one."""
    if value is None:
        return None
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    device_id, ts, alarms = raw.get("device_id"), raw.get("ts"), raw.get("alarms", [])
    if not isinstance(device_id, str) or not isinstance(ts, str) or not isinstance(alarms, list):
        return None
    try:
        moment = datetime.fromisoformat(ts)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return device_id, moment.timestamp(), bool(alarms)


class ProjectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.alerts = Counter(
            "skipwatch_projector_alerts",
            "AlertEvents read by the projector, by outcome: changed (written to the view), "
            "unchanged (a repeat or an older state), invalid (not an AlertEvent; skipped).",
            ["outcome"],
            registry=self.registry,
        )
        self.records = Counter(
            "skipwatch_projector_records",
            "Other records read by the projector, by topic (unprefixed) and outcome: applied, "
            "invalid, unbound (ping of a device no loan lists), sampled_out (ping not kept).",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "skipwatch_projector_lag_records",
            "Records in Kafka the projector has not read yet, by topic (summed over the "
            "partitions this process owns).",
            ["topic"],
            registry=self.registry,
        )
        self.restarts = Counter(
            "skipwatch_projector_restarts",
            "Consumer restarts, by reason: error (Kafka or Redis failed), wiped (the view was "
            "emptied, or rebuilt by another process, while running; read again from there).",
            ["reason"],
            registry=self.registry,
        )
        self.track = Counter(
            "skipwatch_projector_track_fixes",
            "Pings read for loan tracks, by outcome: kept (written to the track), thinned "
            "(parked and not the earliest of its interval), unbound (no loan lists the "
            "device), invalid (not a GpsPing).",
            ["outcome"],
            registry=self.registry,
        )
        self.rebuilds = Counter(
            "skipwatch_projector_rebuilds",
            "Times the view was found empty and read from the beginning of the topics.",
            registry=self.registry,
        )


class _ViewWiped(RuntimeError):
    pass


class _SeekFromView(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """On every assignment, continue where the view says it is, or from the beginning."""

    def __init__(self, projector: Projector) -> None:
        self._projector = projector

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._projector.consumer
        assert consumer is not None
        stored = await self._projector.store.offsets()
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)


class Projector:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic_prefix: str,
        store: AlertStore,
        metrics: ProjectorMetrics,
        timeline: bool = True,
        ping_interval_s: float = 600.0,
        retry_s: float = 2.0,
        client_id: str = "skipwatch",
        track: TrackStore | None = None,
    ) -> None:
        self.store = store
        self.track = track
        self._timeline = timeline
        self.metrics = metrics
        self._bootstrap = bootstrap_servers
        self._prefix = topic_prefix
        self._loans_topic = topic_prefix + LOANS
        self._topics = [ALERTS, LOANS, LOAN_STATUS] + ([PAYMENTS, CONTACTS] if timeline else [])
        if timeline or track is not None:
            self._topics.append(GPS)
        self._ping_interval_s = ping_interval_s
        self._retry_s = retry_s
        self._client_id = client_id
        self._last_ping: OrderedDict[str, float] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self.consumer: AIOKafkaConsumer | None = None
        # Set once the consumer has caught up with the end of its partitions at least once.
        self.caught_up = asyncio.Event()
        # True from the moment the view is found empty (first start, a wiped Redis) until the
        # projector caught up with the topics again: the view is incomplete meanwhile.
        self.rebuilding = False

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="projector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # aiokafka's consumer.stop() can hang while a group join is in flight: shutdown
            # must not wait on it forever (the API's lifespan ends here).
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, STOP_TIMEOUT_S)

    async def run(self) -> None:
        """Consume forever; on any failure start over from the positions stored in Redis."""
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except _ViewWiped:
                self.rebuilding = True
                log.warning("the Redis view was wiped; rebuilding it from the topics")
                self.metrics.restarts.labels("wiped").inc()
                continue
            except (KafkaError, RedisError, OSError) as exc:
                log.warning("projector failed; restarting", extra={"error": repr(exc)})
            except Exception:
                # Never let the API lose its view silently: log loudly and keep trying.
                log.exception("projector crashed; restarting")
            self.metrics.restarts.labels("error").inc()
            await asyncio.sleep(self._retry_s)

    async def _consume(self) -> None:
        generation = await self.store.generation()
        if generation is None:
            # Empty (first start or wiped): no stored position, so every partition starts at 0.
            self.metrics.rebuilds.inc()
            self.rebuilding = True
            generation = await self.store.start_generation()
            if GPS in self._topics:
                await self._load_bindings()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=f"{self._prefix}projector",
            client_id=f"{self._client_id}-projector",
            enable_auto_commit=True,
            auto_offset_reset="earliest",
            max_poll_records=2000,
        )
        await self.consumer.start()
        try:
            self.consumer.subscribe(
                [self._prefix + t for t in self._topics], listener=_SeekFromView(self)
            )
            loop = asyncio.get_running_loop()
            next_check = loop.time() + WIPE_CHECK_S
            while True:
                batches = await self.consumer.getmany(timeout_ms=500, max_records=2000)
                positions: dict[tuple[str, int], int] = {}
                # Loans first: a ping is put on a loan's timeline and track through the device
                # bindings, so bindings fetched together with pings must be known before them.
                ordered = sorted(batches.items(), key=lambda b: b[0].topic != self._loans_topic)
                for tp, records in ordered:
                    if records:
                        await self._project(tp.topic[len(self._prefix) :], records)
                        positions[(tp.topic, tp.partition)] = records[-1].offset + 1
                if positions and not await self.store.save_offsets(positions, generation):
                    raise _ViewWiped
                if loop.time() >= next_check:
                    # Idle, nothing would notice a wipe until the next record: look.
                    next_check = loop.time() + WIPE_CHECK_S
                    if await self.store.generation() != generation:
                        raise _ViewWiped
                await self._measure_lag()
        finally:
            consumer, self.consumer = self.consumer, None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT_S)

    async def _load_bindings(self) -> None:
        """Read the whole loans topic before a rebuild reads any ping. Pings reach a loan's
        timeline and track through its device bindings, and a rebuild reads every topic from
        offset 0 at once: without this, pings fetched before their loan would be `unbound`."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            client_id=f"{self._client_id}-projector-bindings",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            if self._loans_topic not in await consumer.topics():
                return
            partitions = consumer.partitions_for_topic(self._loans_topic) or set()
            tps = [TopicPartition(self._loans_topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)

            async def behind() -> bool:
                for tp in tps:
                    if await consumer.position(tp) < end[tp]:
                        return True
                return False

            while await behind():
                batches = await consumer.getmany(*tps, timeout_ms=500, max_records=2000)
                for records in batches.values():
                    await self._project(LOANS, records)
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT_S)

    async def _measure_lag(self) -> None:
        assert self.consumer is not None
        behind: dict[str, int] = defaultdict(int)
        known = True
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                known = False
                continue
            position = await self.consumer.position(tp)
            behind[tp.topic[len(self._prefix) :]] += max(0, highwater - position)
        for topic in self._topics:
            self.metrics.lag.labels(topic).set(behind.get(topic, 0))
        if known and self.consumer.assignment() and not any(behind.values()):
            self.caught_up.set()
            if self.rebuilding:
                log.info("the Redis view is rebuilt")
            self.rebuilding = False

    async def _project(self, topic: str, records: list[Any]) -> None:
        if topic == ALERTS:
            for record in records:
                await self._project_alert(record.value)
        elif topic == LOANS:
            for record in records:
                if record.value is None:
                    continue  # a tombstone in the compacted topic
                try:
                    loan = Loan.model_validate_json(record.value)
                except ValidationError:
                    self.metrics.records.labels(LOANS, "invalid").inc()
                    continue
                await self.store.put_loan(loan)
                self.metrics.records.labels(LOANS, "applied").inc()
        elif topic in (PAYMENTS, CONTACTS):
            await self._project_loan_events(topic, records)
        elif topic == LOAN_STATUS:
            await self._project_statuses(records)
        elif topic == GPS:
            await self._project_pings(records)

    async def _project_alert(self, value: bytes) -> None:
        try:
            event = AlertEvent.model_validate_json(value)
        except ValidationError as exc:
            # Already in the log: the writer dead-letters bad input, a reader can only skip it.
            log.warning("skipping an invalid AlertEvent", extra={"error": str(exc)[:500]})
            self.metrics.alerts.labels("invalid").inc()
            return
        changed = await self.store.apply(event)
        self.metrics.alerts.labels("changed" if changed else "unchanged").inc()

    async def _project_statuses(self, records: list[Any]) -> None:
        for record in records:
            loan_id = record.key.decode() if record.key else ""
            status: LoanStatus | None = None
            if record.value is not None:
                try:
                    status = LoanStatus.model_validate_json(record.value)
                except ValidationError:
                    self.metrics.records.labels(LOAN_STATUS, "invalid").inc()
                    continue
                loan_id = status.loan_id
            await self.store.put_loan_status(loan_id, status)
            self.metrics.records.labels(LOAN_STATUS, "applied").inc()

    async def _project_loan_events(self, topic: str, records: list[Any]) -> None:
        entries: dict[str, list[TimelineEntry]] = defaultdict(list)
        for record in records:
            try:
                if topic == PAYMENTS:
                    payment = PaymentEvent.model_validate_json(record.value)
                    entry = TimelineEntry(
                        ts=payment.ts,
                        kind="payment",
                        data=payment.model_dump(mode="json", exclude={"schema_version", "ts"}),
                    )
                    loan_id = payment.loan_id
                else:
                    contact = ContactAttempt.model_validate_json(record.value)
                    entry = TimelineEntry(
                        ts=contact.ts,
                        kind="contact",
                        data=contact.model_dump(mode="json", exclude={"schema_version", "ts"}),
                    )
                    loan_id = contact.loan_id
            except ValidationError:
                self.metrics.records.labels(topic, "invalid").inc()
                continue
            entries[loan_id].append(entry)
            self.metrics.records.labels(topic, "applied").inc()
        await self.store.add_timeline(entries)

    async def _project_pings(self, records: list[Any]) -> None:
        if self.track is not None:
            await self._project_track(records)
        if self._timeline:
            await self._project_ping_samples(records)

    async def _project_track(self, records: list[Any]) -> None:
        assert self.track is not None
        fixes: list[TrackFix] = []
        for record in records:
            fix = parse_fix(record.value)
            if fix is None:
                self.metrics.track.labels("invalid").inc()
            else:
                fixes.append(fix)
        loans = await self.store.loans_of_devices(sorted({f.device_id for f in fixes}))
        bound: dict[str, list[TrackFix]] = defaultdict(list)
        unbound = 0
        for fix in fixes:
            loan_id = loans.get(fix.device_id)
            if loan_id is None:
                unbound += 1
            else:
                bound[loan_id].append(fix)
        kept, thinned = await self.track.add(bound)
        for outcome, n in (("kept", kept), ("thinned", thinned), ("unbound", unbound)):
            if n:
                self.metrics.track.labels(outcome).inc(n)

    async def _project_ping_samples(self, records: list[Any]) -> None:
        kept: list[GpsPing] = []
        sampled_out = 0
        for record in records:
            # Most pings are sampled out: decide that from three fields before paying for a full
            # validation (the ping was validated by its writer; the kept ones are validated here).
            sample = _ping_sample(record.value)
            if sample is not None and self._sampled_out(*sample):
                sampled_out += 1
                continue
            try:
                ping = GpsPing.model_validate_json(record.value)
            except ValidationError:
                self.metrics.records.labels(GPS, "invalid").inc()
                continue
            if self._keep_ping(ping):
                kept.append(ping)
            else:
                sampled_out += 1
        self.metrics.records.labels(GPS, "sampled_out").inc(sampled_out)
        loans = await self.store.loans_of_devices(sorted({p.device_id for p in kept}))
        entries: dict[str, list[TimelineEntry]] = defaultdict(list)
        for ping in kept:
            loan_id = loans.get(ping.device_id)
            if loan_id is None:
                self.metrics.records.labels(GPS, "unbound").inc()
                continue
            data = ping.model_dump(
                mode="json",
                include={"event_id", "device_id", "lat", "lon", "speed_kmh", "fix", "alarms"},
            )
            entries[loan_id].append(TimelineEntry(ts=ping.ts, kind="ping", data=data))
            self.metrics.records.labels(GPS, "applied").inc()
        await self.store.add_timeline(entries)

    def _sampled_out(self, device_id: str, ts: float, alarms: bool) -> bool:
        last = self._last_ping.get(device_id)
        return not alarms and last is not None and abs(ts - last) < self._ping_interval_s

    def _keep_ping(self, ping: GpsPing) -> bool:
        """A timeline is for people: every alarm, otherwise one position per device per interval
        (event time). The worker, not this, sees every ping."""
        ts = ping.ts.timestamp()
        if self._sampled_out(ping.device_id, ts, bool(ping.alarms)):
            return False
        if len(self._last_ping) >= _MAX_SAMPLED_DEVICES:
            self._last_ping.clear()
        self._last_ping[ping.device_id] = ts
        return True

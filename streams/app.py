"""The Faust app: topics, tables, agents and the deadline sweep, built from settings.

Flow (all per-loan topics co-partitioned):

  gps.raw (key device_id) ──┐
  device-bindings (key device_id, internal) ──► bind_pings ──► gps.bound (key loan_id, internal)
  loans, payments, contacts, gps.bound (key loan_id) ──► evaluate ──► alerts
                                                        └─► device-bindings (from Loan.devices)

Tables (changelogged, `use_partitioner` so the key's partition is the source partition even when
a batch mixes partitions or the deadline sweep writes outside a stream):
  loan_state[loan_id]     engine state bytes
  loan_devices[loan_id]   device ids last bound for the loan (to unbind on change)
  bindings[device_id]     the binding in force (loan id, version)
  pending-pings[device_id], pending-ping-chunks[[device_id, n]]
                          pings of a device not yet bound (kept, bounded, evaluated on binding;
                          append-only, rules/pipeline/pending.py)
  place-occupancy[place_id]  loans at a risk place

The steps around the engine (binding, pending pings, evaluate, deadlines, place counts) are
rules/pipeline/steps.py, shared with `skipwatch backtest`; this module is their Kafka wiring:
topics, tables, lanes, commit order (Handoff), metrics, dead letters and quarantine.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import groupby
from operator import attrgetter
from typing import Any, NoReturn, cast

import faust
from faust.exceptions import NotReady
from faust.transport.producer import ProducerBuffer
from faust.types import TP, Message, TableT

from rules.clock import LATEST_TS, EngineClock, TimeMerge
from rules.config import EngineConfig
from rules.engine import Engine, FutureEventError
from rules.events import AlertEvent, GpsPing, InputEvent, Loan
from rules.pipeline import steps
from rules.pipeline.deadlines import DeadlineIndex
from rules.pipeline.pending import PendingPings
from rules.pipeline.records import Binding, PlaceCount, PlaceMove
from rules.places import load_places
from rules.spec import CATALOG_DIR, load_rules
from rules.state import LoanState, StateDecodingError, StateEncodingError
from services.kafka import (
    TOPICS,
    WORKER_TOPICS,
    OffsetProbe,
    deadletter_headers,
    key_partition,
)
from services.loan_status import StatusThrottle, build_status, status_parts
from services.places import PlaceFeed
from services.settings import EXIT_RESTART, Settings
from streams.cache import StateCache
from streams.faust_edge.consumer import LaneConsumer
from streams.faust_edge.tables import DeviceChunkTable, RawKeyTable
from streams.faust_edge.worker import RecoveryWatchdog, recovery_progress
from streams.gaps import InputGaps
from streams.intake import AckOrder, Lane
from streams.metrics import WorkerMetrics
from streams.quarantine import Quarantine
from streams.records import (
    Rejected,
    bound_records,
    decode,
    decode_bound,
    decode_marks,
    encode_marks,
    is_mark,
)

log = logging.getLogger(__name__)

BATCH_SIZE = 2000
LANE_LIMIT = 20_000  # records fetched and not yet taken, per lane, before fetching waits
SWEEP_INTERVAL_S = 1.0
SWEEP_CHUNK = 200  # loans the deadline sweep advances per hold of the state lock
STALL_CHECK_S = 5.0
STALL_QUIET_S = 15.0
HANDED_ON_POLL_S = 0.002  # how often a batch checks that its table writes left Faust's buffer
EVALUATE_TOPICS = ("loans", "payments", "contacts", "gps.bound", "place-counts")
BIND_TOPICS = ("gps.raw", "device-bindings")
# The inputs with times of their own: their partitions' watermarks make the clock (clock.py).
TIMED_TOPICS = ("payments", "contacts", "gps.bound", "gps.raw")
HELD_WAKE_S = 0.2  # how often a step holding records looks again when nothing new comes
MARK_INTERVAL_S = 0.2  # how often the bind step looks whether its gps.raw marks moved
# ... and how often it announces them even when they did not: a reader that started after the
# last announcement (a worker restarted as the same static member, which brings no rebalance
# to the others) reads only from its committed offsets, and would wait for a mark of a quiet
# partition until `source_timeout_s`.
MARK_REPEAT_S = 5.0
# Pings read while the loans and their bindings are not read to their end wait, up to this many
# (a backlog read on a fresh start), before they are bound as the bindings stand.
MAX_HELD_PINGS = 200_000

# A batch step: the records to apply in; the records whose work is done out (acknowledged).
BatchStep = Callable[[list[Message]], Awaitable[Sequence[Message]]]

# One input of the evaluate step, held in the time merge until its turn: the record it came in,
# its topic, loan, decoded event and arrival (epoch seconds; None: no time of its own).
Held = tuple[Message, str, str, "InputEvent | PlaceCount", float | None]


def out_of_bounds(
    event_ts: float, entered_ts: float | None, wall: float, max_future_skew_s: float
) -> str | None:
    """Why an event time must not reach the clock (None: it may): further ahead of the time its
    record entered Kafka (and of the wall clock) than the engine's future skew allows."""
    if not math.isfinite(event_ts):
        return f"event time {event_ts} is not a number"
    reference = min(entered_ts, wall) if entered_ts and entered_ts > 0 else wall
    if event_ts > reference + max_future_skew_s:
        return (
            f"event time {_iso(event_ts)} is more than {max_future_skew_s:g} s after "
            f"the record entered Kafka ({_iso(reference)})"
        )
    return None


def _iso(ts: float) -> str:
    """An epoch instant for a message, whatever its size."""
    if -62_135_596_800.0 <= ts <= LATEST_TS:
        return datetime.fromtimestamp(ts, UTC).isoformat()
    return f"{ts:.0f} s since 1970"


@dataclass
class Handoff:
    """What a batch sends, and the table writes that may happen only once those sends are acked.

    A table write that records "handed on" (new loan state after its alerts, a pending ping
    deleted after it was forwarded, a loan's device list after its bindings) must not reach the
    changelog before the records it refers to reach the broker: after a crash the input would
    be replayed against a state that says the work was done, and the records would be lost.
    Faust flushes the changelog before committing input offsets, so this order is enough.
    """

    sends: list[Awaitable[Any]] = field(default_factory=list)
    after_ack: list[Callable[[], object]] = field(default_factory=list)

    async def send(self, topic: faust.TopicT, **record: Any) -> None:
        self.sends.append(await topic.send(**record))

    async def complete(self) -> None:
        if self.sends:
            await asyncio.gather(*self.sends)
        for write in self.after_ack:
            write()


@dataclass(slots=True)
class Input:
    """One input of an evaluate batch, applied to its loan's state, and what it sends once the
    state it leaves is known to be storable (alerts, a place move, device bindings)."""

    record: Message
    topic_name: str
    event: InputEvent | PlaceCount
    now: datetime
    arrival: float | None = None  # when its record entered Kafka (epoch seconds)
    alerts: list[AlertEvent] = field(default_factory=list)
    place: tuple[str | None, str | None, float] | None = None  # (left, entered, at)


@dataclass(slots=True)
class LoanBatch:
    """One loan's part of an evaluate batch: its stored state, its state now, its inputs."""

    before: bytes | None  # as stored when the batch began
    partition: int
    state: LoanState | None = None  # None: the stored state could not be read
    inputs: list[Input] = field(default_factory=list)
    after: bytes | None = None  # `state` encoded, once checked
    failure: str = ""  # why the stored state could not be read


def state_failure(exc: BaseException) -> str:
    """The dead-letter reason for a failure on a loan's state."""
    if isinstance(exc, StateEncodingError):
        return "unencodable_state"
    if isinstance(exc, StateDecodingError):
        return "state_undecodable"
    return "processing_error"


def exit_for_restart(reason: str, **extra: Any) -> NoReturn:
    """Stop the worker at once for its supervisor to restart it (crash-only: the state is in
    Kafka; nothing this process holds is lost)."""
    failure = sys.exc_info()[0] is not None  # the traceback of the failure being handled
    log.error(f"{reason}; exiting for a restart", exc_info=failure,
              extra={**extra, "exit_code": EXIT_RESTART})  # fmt: skip
    logging.shutdown()
    os._exit(EXIT_RESTART)


@dataclass
class Pipeline:
    app: faust.App
    engine: Engine
    metrics: WorkerMetrics
    clock: EngineClock
    merge: TimeMerge[TP, Held]
    deadlines: DeadlineIndex
    quarantine: Quarantine


def build_engine(settings: Settings) -> Engine:
    """The shipped catalog and places, or the directories the settings name."""
    rules = load_rules(settings.worker.rules_dir or CATALOG_DIR)
    places = load_places(settings.worker.places_dir or CATALOG_DIR / "places")
    return Engine(
        rules, places, EngineConfig(allowed_lateness_s=settings.worker.allowed_lateness_s)
    )


def build_pipeline(
    settings: Settings,
    engine: Engine | None = None,
    metrics: WorkerMetrics | None = None,
    clock_wall: Callable[[], float] = time.time,
) -> Pipeline:
    engine = engine or build_engine(settings)
    metrics = metrics or WorkerMetrics.create()
    clock = EngineClock(settings.worker.clock, settings.worker.allowed_lateness_s)
    wall = clock_wall
    live = settings.worker.clock == "wall"
    bound_topic_name = settings.kafka.topic_prefix + "gps.bound"
    raw_topic_name = settings.kafka.topic_prefix + "gps.raw"
    merge: TimeMerge[TP, Held] = TimeMerge(
        settings.worker.idle_partition_s,
        derived=lambda tp: tp.topic == bound_topic_name,
        source_timeout_s=settings.worker.source_timeout_s,
    )
    # pings bound by another worker: their gps.raw partitions' marks come on gps.bound
    merge.set_sources(TP(raw_topic_name, p) for p in range(settings.kafka.partitions))
    # The loans and the device bindings made from them: pings wait until both are read to their
    # end (the bindings this worker sent included), so a backlog of pings is not read ahead of
    # the bindings of the loans registered before it (pings of an unbound device are kept only
    # up to a cap).
    upstream: TimeMerge[TP, None] = TimeMerge(0.0)
    # Event times are checked against the record's arrival only on the wall clock: a replay
    # (event clock) produces old recordings now, and only the absolute limits apply to it.
    window = settings.bounds.window() if settings.worker.clock == "wall" else None
    max_future_skew_s = engine.config.max_future_skew_s
    deadlines = DeadlineIndex()
    quarantine = Quarantine(metrics.quarantined, metrics.quarantined_keys)
    states: StateCache[LoanState] = StateCache(settings.worker.state_cache_size)
    # One writer at a time per worker: a batch of the agent and the deadline sweep both
    # read-modify-write loan state across awaits (alert acks).
    state_lock = asyncio.Lock()
    partitions = settings.kafka.partitions
    prefix = settings.kafka.topic_prefix

    app = faust.App(
        f"{prefix}worker",
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        store=settings.worker.store,
        datadir=str(settings.worker.data_dir),
        topic_partitions=partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        stream_buffer_maxsize=16384,
        producer_linger_ms=5,
        # aiokafka holds a partition's sends once its open batch is full until that batch is on
        # its way: at the default 16 KiB a batch's state writes (≈1.2 KiB each) queued behind a
        # round trip per 13 states (event → alert p50 322 → 98-109 ms at 1,000 events/s,
        # benchmarks/bench_latency.py)
        producer_max_batch_size=256 * 1024,
        producer_acks=-1,
        table_standby_replicas=0,
        broker_session_timeout=settings.worker.session_timeout_s,
        consumer_group_instance_id=settings.worker.instance_id,
        broker_heartbeat_interval=min(3.0, settings.worker.session_timeout_s / 3),
        stream_wait_empty=False,
        Table=RawKeyTable,
    )

    # Table writes queue changelog records in Faust's producer buffer; past `max_messages`
    # (100) Faust holds back every incoming record until it drains, and warns each time. One
    # batch writes up to BATCH_SIZE states: allow a few batches' worth. (A commit still flushes
    # the whole buffer before it commits input offsets.)
    app.producer.buffer.max_messages = 4 * BATCH_SIZE

    # Every topic exists before the worker starts (streams/runner.py creates them).
    def topic(*names: str) -> faust.TopicT:
        return app.topic(*(prefix + n for n in names), key_type=bytes, value_type=bytes)

    alerts_topic = topic("alerts")
    deadletter_topic = topic("deadletter")
    gps_bound_topic = topic("gps.bound")
    bindings_topic = topic("device-bindings")
    loans_topic_name, bindings_topic_name = prefix + "loans", prefix + "device-bindings"
    place_moves_topic = topic("place-moves")
    place_counts_topic = topic("place-counts")
    status_topic = topic("loan-status")
    statuses = StatusThrottle()
    topic_names = {
        prefix + n: n
        for n in (
            "loans", "gps.raw", "payments", "contacts", "gps.bound", "device-bindings",
            "place-moves", "place-counts",
        )
    }  # fmt: skip

    def table(name: str) -> TableT[str, bytes]:
        return app.Table(
            name, default=None, partitions=partitions, use_partitioner=True,
            key_type=str, value_type=bytes,
        )  # fmt: skip

    loan_state = table("loan-state")
    loan_devices = table("loan-devices")
    bindings = table("device-bindings")
    # pending-ping chunks live on their device's partition, with the device's index
    chunks = cast(TableT[str, bytes], app.tables.add(
        DeviceChunkTable(
            app, name="pending-ping-chunks", default=None, beacon=app.tables.beacon,
            partitions=partitions, use_partitioner=True, key_type=str, value_type=bytes,
        )
    ))  # fmt: skip
    pending = PendingPings(table("pending-pings"), chunks)
    occupancy = table("place-occupancy")

    async def dead_letter(
        record: Message | None, topic_name: str, rejected: Rejected,
        key: bytes | None = None, value: bytes | None = None,
    ) -> None:  # fmt: skip
        """Send a record (or, given `key` and `value`, part of one or a stored state) to the
        dead-letter topic with the reason."""
        metrics.events.labels(topic_name, rejected.reason).inc()
        metrics.deadletters.labels(topic_name, rejected.reason).inc()
        if record is not None and value is None:
            key = record.key
            value = record.value if isinstance(record.value, bytes) else b""
        await deadletter_topic.send(
            key=key,
            value=value or b"",
            headers=deadletter_headers(rejected.reason, prefix + topic_name, rejected.detail),
        )

    gaps: InputGaps[TP] = InputGaps()
    probe = OffsetProbe(settings.kafka.bootstrap_servers)

    async def close_probe(sender: Any, **kwargs: Any) -> None:
        await probe.close()

    app.on_before_shutdown.connect(close_probe)  # type: ignore[arg-type]
    # Risk places managed through the `places` topic: read to its end before the first
    # evaluation, then applied to the engine's index as they come (no restart).
    place_feed = None
    if engine.places is not None:
        place_feed = PlaceFeed(settings, engine.places, on_update=metrics.risk_places.set)
        metrics.risk_places.set(len(engine.places))

    @app.task  # type: ignore[untyped-decorator]
    async def follow_places() -> None:
        if place_feed is None:
            return
        try:
            await place_feed.start()
        except Exception:  # evaluation waits for the places: a worker without them is stuck
            exit_for_restart("the risk places topic could not be read")

    async def stop_place_feed(sender: Any, **kwargs: Any) -> None:
        if place_feed is not None:
            await place_feed.stop()

    app.on_before_shutdown.connect(stop_place_feed)  # type: ignore[arg-type]
    # Only topics whose offsets are contiguous: a compacted topic (loans, device-bindings) has
    # holes by design, and a hole there is not a skipped record.
    guarded = {prefix + spec.name for spec in (*TOPICS, *WORKER_TOPICS) if not spec.compacted}

    # The pipeline's topics, each consumed by one batch step through a lane (intake.py).
    lanes = {
        "evaluate": Lane("evaluate", [prefix + n for n in EVALUATE_TOPICS], LANE_LIMIT),
        "bind_pings": Lane(
            "bind_pings",
            [prefix + n for n in BIND_TOPICS],
            LANE_LIMIT,
            first=[prefix + "device-bindings"],
        ),
        "count_places": Lane("count_places", [prefix + "place-moves"], LANE_LIMIT),
    }
    # acknowledged in offset order per partition (intake.py), whatever order the steps finish
    acks = {name: AckOrder() for name in lanes}
    consumer = LaneConsumer.install(app, lanes.values(), contiguous=guarded)
    for lane in lanes.values():
        app.topics.add(topic(*(name.removeprefix(prefix) for name in lane.topics)))
        app.flow_control.manage_queue(lane)  # type: ignore[arg-type]  # cleared on rebalance

    async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        # A batch being applied finishes (its writes reach the changelog before the partitions
        # can go to another worker); what was fetched and not applied comes again from the
        # committed offsets, to whichever worker owns the partition then.
        for lane in lanes.values():
            async with lane.busy:
                lane.clear()
                acks[lane.name].clear()
                if lane.name == "evaluate":
                    merge.clear()
                    clock.reset()  # the records read again set it again (clock.py)
                    unfinished.clear()
                    # the loans' partitions may go to another worker: their deadlines are
                    # indexed again from the states recovered (`rebuild_deadlines`)
                    deadlines.drop_partitions(
                        {tp.partition for tp in revoked if tp.topic == loans_topic_name}
                    )
                if lane.name == "bind_pings":
                    held_pings.clear()
                    announced.clear()  # the gps.bound partitions' new readers get every mark
        gaps.forget(revoked)

    def resume_at(committed: Mapping[Any, int]) -> None:
        # The partitions were sent to their committed offsets (after every assignment): the
        # guard expects each to go on from there, even before a record comes, so that a
        # partition whose records are skipped before the first one arrives is replayed too.
        for tp, offset in committed.items():
            if tp.topic in guarded:
                key = TP(tp.topic, tp.partition)
                gaps.forget([key])
                gaps.expect(key, offset)

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    consumer.on_committed_seek = resume_at
    consumer.describe_steps = lambda: {
        "merge": merge.describe(time.monotonic()),
        "acks_waiting": {name: len(order) for name, order in acks.items()},
        "unfinished": len(unfinished),
        "held_pings": len(held_pings),
    }

    async def in_order(records: Sequence[Message]) -> list[Message]:
        """The records to apply; a partition that jumped past a record is sent back (gaps.py)."""
        kept: list[Message] = []
        now = time.monotonic()
        # A lane holds each fetch's records a partition at a time: runs of one partition.
        runs = [list(run) for _, run in groupby(records, key=attrgetter("tp"))]
        fresh = {
            (run[0].tp.topic, run[0].tp.partition)
            for run in runs
            if run[0].tp.topic in guarded and run[0].tp not in gaps.expected
        }
        if fresh:  # newly assigned: they resume at the group's committed offsets
            committed = await probe.committed(app.conf.id, fresh)
            for topic_name, partition in fresh:
                start = committed.get((topic_name, partition))
                if start is None:  # never committed: from the first record (offset reset)
                    start = await probe.first_offset(topic_name, partition, 0, timeout_s=2.0)
                if start is not None:
                    gaps.expect(TP(topic_name, partition), start)
        sent_back: set[TP] = set()
        for run in runs:
            tp = run[0].tp
            if tp.topic not in guarded or gaps.admit_run(
                tp, run[0].offset, run[-1].offset, len(run), now
            ):
                kept.extend(run)  # the common case: exactly the offsets expected next
                continue
            for record in run:
                await admit_one(record, now, kept, sent_back)
        return kept

    async def admit_one(
        record: Message, now: float, kept: list[Message], sent_back: set[TP]
    ) -> None:
        """One record of a run that is not simply the next offsets expected."""
        tp, offset = record.tp, record.offset
        verdict = gaps.admit(tp, offset, now)
        if verdict.new_gap and verdict.seek_to is not None:
            first = await probe.first_offset(tp.topic, tp.partition, verdict.seek_to)
            if first is not None and first >= offset:
                # nothing there (a transaction marker, say): go on from this record
                await skip_hole(tp, verdict.seek_to, offset)
                verdict = gaps.admit(tp, offset, now)
        if verdict.seek_to is not None and tp not in sent_back:
            # once per batch: the seek drops what was fetched after it (intake.py)
            sent_back.add(tp)
            await replay(tp, verdict.seek_to, got=offset, new_gap=verdict.new_gap)
        if verdict.apply:
            kept.append(record)

    async def skip_hole(tp: TP, expected: int, first: int) -> None:
        """Offsets [expected, first) hold no record: continue at `first`, and let the commit
        pass them (only applied records are acknowledged, so Faust would wait for them)."""
        gaps.skip_to(tp, first)
        if first > expected:
            await consumer.mark_empty(tp, expected, first - 1)

    async def replay(tp: TP, offset: int, got: int | None, new_gap: bool = True) -> None:
        if new_gap:
            log.warning(
                "input gap: replaying from the skipped record",
                extra={"topic": tp.topic, "partition": tp.partition, "expected": offset,
                       "got": got},
            )  # fmt: skip
            metrics.input_gaps.labels(topic_names.get(tp.topic, "other")).inc()
        await app.consumer.seek(tp, offset)

    watchdog = RecoveryWatchdog(settings.worker.recovery_stall_s)

    @app.timer(STALL_CHECK_S)  # type: ignore[untyped-decorator]
    async def watch_recovery() -> None:
        recovering, remaining = recovery_progress(app)
        if watchdog.stalled(recovering, remaining, time.monotonic()):
            exit_for_restart("rebalance or table recovery made no progress",
                             stalled_s=settings.worker.recovery_stall_s,
                             remaining=watchdog.remaining)  # fmt: skip

    @app.timer(STALL_CHECK_S)  # type: ignore[untyped-decorator]
    async def replay_dropped_tails() -> None:
        """Records after the expected offset and none delivered for a while: replay them."""
        if not gaps.expected or app.rebalancing:
            return
        ends = await app.consumer.highwaters(*gaps.expected)
        for tp, offset in gaps.stalled(ends, time.monotonic(), STALL_QUIET_S).items():
            first = await probe.first_offset(tp.topic, tp.partition, offset, timeout_s=1.0)
            if first is None:
                # Nothing came: only offsets without records up to the end (a trailing commit
                # marker), or a slow broker. Either way nothing to replay now; look again later.
                continue
            await skip_hole(tp, offset, first)
            await replay(tp, first, got=None)

    async def emit(handoff: Handoff, loan_id: str, alerts: list[AlertEvent]) -> None:
        # Alerts go out before the state that produced them is written (Handoff): after a crash
        # the input is replayed against the older state and the same alerts (deterministic
        # ids) come again, so an alert can repeat but is never lost.
        for alert in alerts:
            metrics.alerts.labels(alert.rule_id, alert.severity, alert.status).inc()
            value = alert.model_dump_json().encode()
            await handoff.send(alerts_topic, key=loan_id.encode(), value=value)

    lag_of = {name: metrics.event_time_lag.labels(name) for name in topic_names.values()}

    def observe(topic_name: str, event: InputEvent | PlaceCount) -> None:
        if isinstance(event, Loan | PlaceCount):  # no event time (asked explicitly: a missing
            return  # attribute of a pydantic model goes through its slow __getattr__)
        lag_of[topic_name].observe(max(time.time() - event.ts.timestamp(), 0.0))

    def count_events(outcomes: Counter[tuple[str, str]]) -> None:
        """A batch's records by (topic, outcome): one metric update per pair, not per record."""
        for (topic_name, outcome), n in outcomes.items():
            metrics.events.labels(topic_name, outcome).inc(n)

    def key_of(record: Message) -> str:
        return record.key.decode() if isinstance(record.key, bytes) else ""

    def value_of(record: Message) -> bytes:
        return record.value or b""  # a tombstone: nothing the pipeline writes or reads

    def partition_of(key: str) -> int:
        return key_partition(key, partitions)

    def decoded_state(loan_id: str, stored: bytes | None) -> LoanState:
        """The state stored for a loan (a new one if none); StateDecodingError if unreadable."""
        if not stored:
            return engine.new_state(loan_id)
        state = states.take(loan_id, stored)
        return state if state is not None else LoanState.from_bytes(stored)

    def store_state(
        loan_id: str, state: LoanState, before: bytes | None, after: bytes, partition: int
    ) -> None:
        """Write a state already encoded (`after`: the encoding is checked before the batch's
        sends, so a state that cannot be stored never gets this far) and index its deadline."""
        # A write costs a changelog record: only when the state really changed.
        if after != before:
            loan_state[loan_id] = after
        states.put(loan_id, after, state)
        try:
            steps.schedule(engine, deadlines, partition, state)
        except Exception as exc:
            log.exception("next deadline failed", extra={"loan_id": loan_id})
            quarantine.add(loan_id, "deadline", "processing_error", repr(exc), time.time())
            deadlines.schedule(partition, loan_id, None)

    async def quarantine_state(loan_id: str, stored: bytes, step: str, exc: Exception) -> None:
        """A loan's stored state failed a step that has no input record (the deadline sweep):
        dead-letter the stored bytes, so an operator has them, and mark the loan."""
        reason = state_failure(exc)
        log.exception("a stored loan state failed", extra={"loan_id": loan_id, "step": step})
        await dead_letter(
            None, "loan-state", Rejected(reason, repr(exc)), key=loan_id.encode(), value=stored
        )
        quarantine.add(loan_id, step, reason, repr(exc), time.time())

    async def rebind_devices(
        handoff: Handoff, loan: Loan, version: int, sent: list[Awaitable[Any]]
    ) -> None:
        rebind = steps.rebind(loan_devices, loan, version)
        for device_id, change in rebind.changes:
            future = await bindings_topic.send(key=device_id.encode(), value=change.to_bytes())
            handoff.sends.append(future)
            sent.append(future)
        if rebind.devices is not None:
            handoff.after_ack.append(
                partial(loan_devices.__setitem__, loan.loan_id, rebind.devices)
            )

    async def publish_status(handoff: Handoff, state: LoanState) -> None:
        """The loan's derived status for the API's view, when it changed (throttled)."""
        parts = status_parts(engine, state)
        if statuses.due(state.loan_id, parts, wall()):
            value = build_status(state.loan_id, state.clock, parts).model_dump_json().encode()
            await handoff.send(status_topic, key=state.loan_id.encode(), value=value)

    async def report_place_move(handoff: Handoff, loan_id: str, move: steps.Move) -> None:
        """Tell the place aggregate when the vehicle left or entered a risk place."""
        for place_id, record in steps.place_moves(loan_id, move):
            await handoff.send(place_moves_topic, key=place_id.encode(), value=record.to_bytes())

    async def run_lane(
        lane: Lane, process: BatchStep, wake_s: Callable[[], float | None] = lambda: None
    ) -> None:
        """Batches of the lane, in offset order (gaps.py), to `process`; each record is
        acknowledged once its work is done (for the evaluate step: once every input it holds
        was released by the time merge and applied) and its sends and table writes are issued
        (Faust flushes those before it commits the offsets). `wake_s`: how long to wait for
        records before calling `process` with none (records are held and may be released).

        A batch that fails (a send Kafka did not take, a bug) stops the worker before its input
        is acknowledged, so the restarted worker replays it: crash, never skip.
        """
        while True:
            records = await lane.take(BATCH_SIZE, wake_s())
            async with lane.busy:
                try:
                    applied = await in_order(records)
                    acks[lane.name].taken(applied)
                    done = await process(applied)
                    await changelog_handed_on()
                except Exception:
                    exit_for_restart("a batch failed before its input was acknowledged",
                                     step=lane.name)  # fmt: skip
                for record in acks[lane.name].finished(done):
                    consumer.ack(record)

    async def changelog_handed_on() -> None:
        """Wait until Faust's producer buffer has handed every queued table write to the
        Kafka producer.

        Table writes go through that buffer, and Faust's commit flushes it only "at most": it
        gives up after 0.1 s without a message sent and commits the offsets anyway (then
        flushes the Kafka producer, which holds only what the buffer handed on). Acknowledging
        a batch's input only once its writes left the buffer keeps the commit from passing
        state that is not on its way to the changelog. Seen in the first-start benchmark: the
        input was committed while ~80,000 table writes still waited, and the worker stopped
        without them (no loan state in the changelog at all).
        """
        buffer = cast(ProducerBuffer, app.producer.buffer)
        # A short sleep, not Faust's per-message event: waking (and arming a timeout) for every
        # message sent cost more than the write itself in the first-start benchmark.
        while buffer.size:  # noqa: ASYNC110
            await asyncio.sleep(HANDED_ON_POLL_S)

    async def count_batch(records: list[Message]) -> list[Message]:
        """Cross-loan: keep who is at each risk place, and give every loan there the count."""
        handoff = Handoff()
        counter = steps.PlaceCounter(occupancy)
        for record in records:
            place_id = key_of(record)
            try:
                counter.move(place_id, PlaceMove.from_bytes(value_of(record)))
            except Exception as exc:  # one record or one place never stops the lane
                log.exception("place count failed", extra={"place_id": place_id})
                await dead_letter(record, "place-moves", Rejected("processing_error", repr(exc)))
                quarantine.add(place_id, "count_places", "processing_error", repr(exc),
                               time.time())  # fmt: skip
                continue
        for loan_id, count in counter.counts():
            await handoff.send(place_counts_topic, key=loan_id.encode(), value=count.to_bytes())
        for place_id, value in counter.writes():
            handoff.after_ack.append(partial(occupancy.__setitem__, place_id, value))
        await handoff.complete()
        return records

    async def evaluate_locked(records: list[Message]) -> list[Message]:
        async with state_lock:
            return await evaluate_batch(records)

    def inputs_of(
        record: Message,
    ) -> Iterator[tuple[str, str, InputEvent | PlaceCount | Rejected, float | None]]:
        """(topic, loan id, decoded, arrival) for each input in a record; a gps.bound record
        holds many, each with the arrival of the gps.raw record it came in. A record that cannot
        be taken apart at all is one rejected input."""
        topic_name = topic_names[record.topic]
        try:
            if topic_name == "gps.bound":
                # the pings' times were bounded on gps.raw (bind_batch)
                entries = decode_bound(value_of(record))
            elif topic_name == "place-counts":
                entries = None
                count = PlaceCount.from_bytes(value_of(record))
        except Exception as exc:
            yield topic_name, "", Rejected("undecodable", repr(exc)), None
            return
        if topic_name == "gps.bound":
            assert entries is not None
            for loan_id, ping, arrival in entries:
                yield topic_name, loan_id, ping, record.timestamp if arrival is None else arrival
            return
        if topic_name == "place-counts":
            yield topic_name, key_of(record), count, None
            return
        decoded = decode(topic_name, record.value, window=window, received_at=record.timestamp)
        if isinstance(decoded, Rejected):
            yield topic_name, "", decoded, None
            return
        loan_id = decoded.loan_id  # type: ignore[union-attr]  # not a ping: not on this lane
        yield topic_name, loan_id, in_bounds(decoded, record), record.timestamp

    def in_bounds(event: InputEvent | Rejected, record: Message) -> InputEvent | Rejected:
        """The event, or why its event time must not reach the clock (dead-lettered)."""
        if isinstance(event, Rejected | Loan):
            return event
        why = out_of_bounds(event.ts.timestamp(), record.timestamp, wall(), max_future_skew_s)
        return event if why is None else Rejected("future_timestamp", why)

    def apply_input(state: LoanState, item: Input) -> None:
        """Apply one input to its loan's state; keep what it sends (`send_effects`)."""
        # lateness by arrival only live: in a replay a record arrives at its event time
        effects = steps.evaluate(
            engine, state, item.event, item.now, arrival=item.arrival if live else None,
            fallback_at=item.now.timestamp(),
        )  # fmt: skip
        item.alerts, item.place = effects.alerts, effects.move

    async def send_effects(
        handoff: Handoff, loan_id: str, item: Input, bindings_sent: list[Awaitable[Any]]
    ) -> None:
        # most inputs send nothing: no coroutine for them
        if item.alerts:
            await emit(handoff, loan_id, item.alerts)
        if item.place is not None:
            await report_place_move(handoff, loan_id, item.place)
        if isinstance(item.event, Loan):
            version = int(item.record.timestamp * 1000)
            await rebind_devices(handoff, item.event, version, bindings_sent)

    async def reject(
        loan_id: str, item: Input, reason: str, detail: str, mark: bool = True
    ) -> None:
        """Dead-letter one input (a ping of a gps.bound record on its own) and, unless the
        input alone is at fault (`mark` false), mark its loan."""
        if item.topic_name == "gps.bound":
            assert isinstance(item.event, GpsPing)
            key, value = loan_id.encode(), item.event.model_dump_json().encode()
            await dead_letter(None, item.topic_name, Rejected(reason, detail), key, value)
        else:
            await dead_letter(item.record, item.topic_name, Rejected(reason, detail))
        if mark:
            quarantine.add(loan_id, "evaluate", reason, detail, time.time())

    async def reapply(loan_id: str, batch: LoanBatch) -> None:
        """Rebuild a loan's state from its stored state and the batch's inputs, one at a time,
        each followed by an encoding check: an input that raises or leaves a state that cannot
        be stored is dead-lettered and the state goes on from before it. Runs only when one
        did; the common path encodes once per loan and batch."""
        good = batch.before
        state = decoded_state(loan_id, good)
        kept: list[Input] = []
        for item in batch.inputs:
            try:
                apply_input(state, item)
                good = state.to_bytes()
            except Exception as exc:
                log.warning("input refused", extra={"loan_id": loan_id, "error": repr(exc)})
                await reject(loan_id, item, state_failure(exc), repr(exc))
                state = decoded_state(loan_id, good)
                continue
            kept.append(item)
        batch.state, batch.inputs, batch.after = state, kept, good

    def timed(decoded: InputEvent | PlaceCount, arrival: float | None) -> float | None:
        """The time an input is released at (clock.py): its arrival (the Kafka timestamp) live,
        its event time in a replay; None for a record with no time of its own (a loan, a count:
        released at once)."""
        if isinstance(decoded, Loan | PlaceCount):
            return None
        return arrival if live else decoded.ts.timestamp()

    # The evaluate step's records still holding inputs in the time merge: (tp, offset) ->
    # [record, inputs not applied yet]. A record is acknowledged once all its inputs are.
    unfinished: dict[tuple[TP, int], list[Any]] = {}

    def evaluate_wake() -> float | None:
        return HELD_WAKE_S if len(merge) else None

    def refresh_progress() -> None:
        """Tell the merges which partitions this worker reads and how far it fetched."""
        timed_topics = {prefix + n for n in TIMED_TOPICS}
        actives = app.assignor.assigned_actives()
        assigned = [tp for tp in actives if tp.topic in timed_topics]
        feeding = [tp for tp in actives if tp.topic in (loans_topic_name, bindings_topic_name)]
        mono = time.monotonic()
        merge.assign(assigned, mono)
        upstream.assign(feeding, mono)
        fetched = consumer.fetch_state([*assigned, *feeding])
        bind_topics = (prefix + "gps.raw", bindings_topic_name)
        for tracker, tps in ((merge, assigned), (upstream, feeding)):
            for tp in tps:
                position, highwater = fetched.get(tp, (None, None))
                lane = lanes["bind_pings" if tp.topic in bind_topics else "evaluate"]
                tracker.fetched(tp, position, highwater, lane.delivered.get(tp), mono)

    def read_marks(record: Message, mono: float) -> None:
        """A mark on gps.bound: how far a binder forwarded its gps.raw partitions (clock.py).
        Not an input: nothing is counted or dead-lettered for it, unless it cannot be read."""
        try:
            marks = decode_marks(value_of(record))
            for partition, watermark, through in marks:
                merge.mark(record.tp, record.offset, TP(raw_topic_name, partition), watermark,
                           through, mono)  # fmt: skip
        except ValueError as exc:
            log.warning("unreadable gps.bound mark ignored",
                        extra={"partition": record.partition, "offset": record.offset,
                               "error": str(exc)})  # fmt: skip
            merge.observe(record.tp, record.offset, None, mono)

    async def refresh_remote_ends() -> None:
        """The end offsets of the gps.raw partitions another worker binds whose binder announced
        it handled them to the end last known (clock.py, `unsettled_sources`), asked afresh
        before each release: one is idle only while nothing came to it since."""
        remote = merge.unsettled_sources()
        if not remote:
            return
        mono = time.monotonic()
        try:
            ends = await probe.end_offsets(raw_topic_name, [tp.partition for tp in remote])
        except Exception as exc:  # the partitions stay not idle: the clock waits
            log.warning("gps.raw end offsets unavailable", extra={"error": repr(exc)})
            return
        for partition, end in ends.items():
            merge.source_end(TP(raw_topic_name, partition), end, mono)

    # what this worker last announced of each gps.raw partition it binds
    announced: dict[TP, tuple[float | None, int | None]] = {}
    announced_at = [-math.inf]  # monotonic time of the last announcement

    timed_out: set[TP] = set()  # remote sources left out after `source_timeout_s`, as last told

    def report_timed_out() -> None:
        if merge.timed_out == timed_out:
            return
        for tp in merge.timed_out - timed_out:
            log.warning("gps.raw partition left out of the clock: no mark of its binder moved "
                        "for the source timeout (its records, when they come, may be late)",
                        extra={"partition": tp.partition,
                               "timeout_s": settings.worker.source_timeout_s})  # fmt: skip
        timed_out.clear()
        timed_out.update(merge.timed_out)
        metrics.sources_timed_out.set(len(timed_out))

    async def publish_marks() -> None:
        """Announce on every gps.bound partition how far this worker forwarded each gps.raw
        partition it binds, when that moved (clock.py, `Mark`). Called once a bind batch's
        forwarded pings are acked, so a mark always follows the pings it covers."""
        refresh_progress()
        current = {
            tp: merge.forwarded(tp) for tp in list(merge.partitions) if tp.topic == raw_topic_name
        }
        if len(current) == partitions:  # binding every gps.raw partition: nobody to tell
            return
        current = {tp: mark for tp, mark in current.items() if mark != (None, None)}
        if not current:
            return
        unchanged = current == {tp: announced.get(tp) for tp in current}
        if unchanged and time.monotonic() - announced_at[0] < MARK_REPEAT_S:
            return
        value, headers = encode_marks(
            [(tp.partition, watermark, through) for tp, (watermark, through) in current.items()]
        )
        sends = [
            await gps_bound_topic.send(value=value, partition=partition, headers=headers)
            for partition in range(partitions)
        ]
        await asyncio.gather(*sends)
        announced.clear()
        announced.update(current)
        announced_at[0] = time.monotonic()
        metrics.marks_sent.inc(len(sends))

    @app.timer(MARK_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def announce_marks() -> None:
        """Marks also move without a bind batch: a partition read to its end (fetch position)."""
        lane = lanes["bind_pings"]
        if app.rebalancing or lane.busy.locked():  # a batch runs: it announces when done
            return
        async with lane.busy:
            await publish_marks()

    async def evaluate_batch(records: Sequence[Message]) -> list[Message]:
        """Decode the records into the time merge; apply what it releases, in arrival order."""
        started = time.perf_counter()
        mono = time.monotonic()
        done: list[Message] = []
        for record in records:
            topic_name = topic_names[record.topic]
            if topic_name == "gps.bound" and is_mark(record.headers):
                read_marks(record, mono)
                done.append(record)  # acknowledged in offset order (`AckOrder`)
                continue
            held = 0
            for _, loan_id, decoded, arrival in inputs_of(record):
                if isinstance(decoded, Rejected):
                    await dead_letter(record, topic_name, decoded)
                    continue
                merge.push(record.tp, record.offset,
                           timed(decoded, arrival), (record, topic_name, loan_id, decoded, arrival),
                           mono)  # fmt: skip
                held += 1
            if held:  # (a record pushed twice is applied twice: the engine drops the repeat)
                unfinished.setdefault((record.tp, record.offset), [record, 0])[1] += held
            else:
                merge.observe(record.tp, record.offset, None, mono)
                done.append(record)
        refresh_progress()
        await refresh_remote_ends()
        forced = merge.forced
        released = merge.release(time.monotonic())
        if merge.forced > forced:
            log.warning("time merge full: records released before every partition caught up",
                        extra={"forced": merge.forced - forced, "held": len(merge)})  # fmt: skip
        report_timed_out()
        if released:
            await apply_released(released, done)
        mono = time.monotonic()
        for record in records:  # loans have no time: they were applied (or dead-lettered) now
            if record.topic == loans_topic_name:
                upstream.observe(record.tp, record.offset, None, mono)
        metrics.batch_seconds.labels("evaluate").observe(time.perf_counter() - started)
        return done

    async def apply_released(released: list[Held], done: list[Message]) -> None:
        """Apply the released inputs to their loans' states, then check each touched state can
        be stored, then send what the kept inputs produced, then store the states (Handoff).

        One record or one stored state never fails the batch: an input whose apply or state
        encoding fails is dead-lettered with the reason and its loan quarantined (quarantine.py);
        the loan's other inputs and every other loan go on.
        """
        touched: dict[str, LoanBatch] = {}
        handoff = Handoff()
        bindings_sent: list[Awaitable[Any]] = []
        outcomes: Counter[tuple[str, str]] = Counter()
        for record, topic_name, loan_id, decoded, arrival in released:
            entry = unfinished.get((record.tp, record.offset))
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del unfinished[record.tp, record.offset]
                    done.append(entry[0])
            observe(topic_name, decoded)
            batch = touched.get(loan_id)
            if batch is None:
                stored = loan_state.get(loan_id)
                batch = touched[loan_id] = LoanBatch(stored, record.partition)
                try:
                    batch.state = decoded_state(loan_id, stored)
                except Exception as exc:
                    batch.failure = repr(exc)
            clock.released(timed(decoded, arrival))
            now = datetime.fromtimestamp(clock.record_now(wall(), record.timestamp), UTC)
            item = Input(record, topic_name, decoded, now, arrival)
            if batch.state is None:  # the stored state cannot be read: nothing applies
                await reject(loan_id, item, "state_undecodable", batch.failure)
                continue
            try:
                apply_input(batch.state, item)
            except FutureEventError as exc:  # refused before it changed anything
                await reject(loan_id, item, "ahead_of_clock", str(exc), mark=False)
                continue
            except Exception as exc:  # the lane never stops on one record
                log.exception("engine failed on a record", extra={"topic": topic_name})
                await reject(loan_id, item, "processing_error", repr(exc))
                await reapply(loan_id, batch)  # the state as it was before this input
                continue
            batch.inputs.append(item)
            batch.after = None  # changed since it was last encoded
        for loan_id, batch in touched.items():
            if batch.state is None:
                continue
            if batch.after is None:
                try:
                    batch.after = batch.state.to_bytes()
                except StateEncodingError:
                    await reapply(loan_id, batch)
            for item in batch.inputs:
                if item.alerts or item.place is not None or item.topic_name == "loans":
                    await send_effects(handoff, loan_id, item, bindings_sent)
                outcomes[item.topic_name, "applied"] += 1
        for batch in touched.values():
            if batch.state is not None and batch.after is not None:
                await publish_status(handoff, batch.state)
        await handoff.complete()
        for future in bindings_sent:
            meta = future.result()  # type: ignore[attr-defined]
            upstream.sent(TP(meta.topic, meta.partition), meta.offset)
        for loan_id, batch in touched.items():
            if batch.state is not None and batch.after is not None:
                store_state(loan_id, batch.state, batch.before, batch.after, batch.partition)
        count_events(outcomes)
        metrics.deadlines_pending.set(len(deadlines))

    held_pings: list[Message] = []  # pings waiting for the loans and bindings to be read

    def bind_wake() -> float | None:
        return HELD_WAKE_S if held_pings else None

    async def bind_gated(records: list[Message]) -> list[Message]:
        """Bindings now; pings once the loans and the bindings made from them were read."""
        todo = [r for r in records if r.topic == bindings_topic_name]
        held_pings.extend(r for r in records if r.topic != bindings_topic_name)
        refresh_progress()
        mono = time.monotonic()
        ready = upstream.caught_up(mono)
        if held_pings and (ready or len(held_pings) > MAX_HELD_PINGS):
            if not ready:
                log.warning("pings held too long for the loans' bindings: bound as they stand",
                            extra={"held": len(held_pings)})  # fmt: skip
            todo.extend(held_pings)
            held_pings.clear()
        await bind_batch(todo)
        mono = time.monotonic()
        for record in todo:
            if record.topic == bindings_topic_name:
                upstream.observe(record.tp, record.offset, None, mono)
        return todo

    async def bind_batch(records: list[Message]) -> list[Message]:
        started = time.perf_counter()
        bound: dict[int, list[tuple[str, bytes, int]]] = defaultdict(list)
        # Pings of unbound devices, gathered per device for the batch: one pending-pings
        # write per device and batch instead of one per ping.
        waiting: dict[str, list[bytes]] = {}
        handoff = Handoff()
        outcomes: Counter[tuple[str, str]] = Counter()
        read: list[tuple[TP, int, float | None]] = []  # gps.raw records read: offset, time
        for record in records:
            topic_name = topic_names[record.topic]
            if topic_name == "device-bindings":
                try:
                    change = Binding.from_bytes(value_of(record))
                    apply_binding(key_of(record), change, bound, handoff, waiting)
                except Exception as exc:  # one record never stops the lane
                    log.exception("device binding failed", extra={"device_id": key_of(record)})
                    await dead_letter(record, topic_name, Rejected("processing_error", repr(exc)))
                    quarantine.add(key_of(record), "bind_pings", "processing_error", repr(exc),
                                   time.time())  # fmt: skip
                continue
            value = value_of(record)
            decoded = in_bounds(
                decode("gps.raw", value, window=window, received_at=record.timestamp), record
            )
            if isinstance(decoded, Rejected):
                await dead_letter(record, topic_name, decoded)
                read.append((record.tp, record.offset, None))
                continue
            assert isinstance(decoded, GpsPing)
            arrival_ms = int(record.timestamp * 1000)
            try:
                loan_id = steps.loan_bound(bindings, decoded.device_id)
            except Exception as exc:  # a binding that cannot be read: the ping waits for a new one
                log.exception("stored binding unreadable", extra={"device_id": decoded.device_id})
                quarantine.add(decoded.device_id, "bind_pings", "undecodable", repr(exc),
                               time.time())  # fmt: skip
                read.append((record.tp, record.offset, None))
                waiting.setdefault(decoded.device_id, []).append(value)
                outcomes[topic_name, "pending_binding"] += 1
                continue
            if loan_id is None:
                # kept for its binding: its time counts when it is forwarded, not now
                read.append((record.tp, record.offset, None))
                waiting.setdefault(decoded.device_id, []).append(value)
                outcomes[topic_name, "pending_binding"] += 1
                continue
            read.append((record.tp, record.offset, timed(decoded, record.timestamp)))
            bound[partition_of(loan_id)].append((loan_id, value, arrival_ms))
            outcomes[topic_name, "bound"] += 1
        # Pings of one device stay in order: one record per partition, sent in batch order,
        # stamped with the newest arrival it carries (each ping keeps its own inside).
        forwarded: list[Awaitable[Any]] = []
        for partition, entries in bound.items():
            for value in bound_records(entries):
                newest = max(arrival for _, _, arrival in entries) / 1000.0
                sent = await gps_bound_topic.send(value=value, partition=partition,
                                                  timestamp=newest)  # fmt: skip
                handoff.sends.append(sent)
                forwarded.append(sent)
        await handoff.complete()
        # The evaluate step waits for what was forwarded (its partition is not caught up before
        # it read these back), and this worker's gps.raw partitions moved on (clock.py).
        for sent in forwarded:
            meta = sent.result()  # type: ignore[attr-defined]
            merge.sent(TP(meta.topic, meta.partition), meta.offset)
        mono = time.monotonic()
        for tp, offset, arrival in read:
            merge.observe(tp, offset, arrival, mono)
        # After the acks: a device bound and released again in this batch has its pending
        # pings dropped by the bind's after-ack step; pings kept later must survive it.
        for device_id, pings in waiting.items():
            pending.add(device_id, pings)
        count_events(outcomes)
        await publish_marks()
        metrics.batch_seconds.labels("bind_pings").observe(time.perf_counter() - started)
        return records

    def apply_binding(
        device_id: str,
        change: Binding,
        bound: dict[int, list[tuple[str, bytes, int]]],
        handoff: Handoff,
        waiting_in_batch: dict[str, list[bytes]],
    ) -> None:
        # the table's pings first, then this batch's (not in the table yet: nothing to forget)
        result = steps.bind(bindings, pending, device_id, change, waiting_in_batch.get(device_id))
        if result is None:
            return
        waiting_in_batch.pop(device_id, None)
        if result.pings:
            # They reach the loan when its binding does (a worker that never stopped would
            # have evaluated them then): their arrival is the loan record's timestamp.
            target = bound[partition_of(result.loan_id)]
            target.extend((result.loan_id, ping, change.version) for ping in result.pings)
        if result.forget:
            # forget them only once the forwarded batch is acked (Handoff)
            handoff.after_ack.append(partial(pending.forget, device_id))

    @app.timer(SWEEP_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def sweep_deadlines() -> None:
        """Advance only the loans whose deadline fell due, on partitions this worker owns.

        A chunk of loans at a time, each chunk under the state lock with one Kafka round trip
        for all its alerts: a burst of deadlines (every loan due on a date, at midnight) holds
        up the evaluation of incoming events for one chunk at a time, not for the whole burst.
        """
        owned = {
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == prefix + "loans"
        }
        # Live: the wall clock once every input partition is read to its end, and no further
        # than the records read so far before that (clock.py).
        async with state_lock:
            refresh_progress()
            await refresh_remote_ends()
            now_s = clock.sweep_now(wall(), merge.caught_up(time.monotonic()))
            report_timed_out()
        now = datetime.fromtimestamp(now_s, UTC)
        metrics.deadline_sweeps.inc()
        while not app.should_stop and (due := deadlines.pop_due(owned, now_s, SWEEP_CHUNK)):
            async with state_lock:
                try:
                    await advance_due(due, now)
                except NotReady:
                    if not app.should_stop:
                        raise
                    # Faust stopped the producer under a sweep on SIGTERM (it logged a crash and
                    # the worker exited non-zero): nothing is lost, the next process rebuilds
                    # the deadlines from the changelog and advances these loans again.
                    log.info("deadline sweep cut short by shutdown")
                    return
        metrics.deadlines_pending.set(len(deadlines))

    async def advance_due(due: list[str], now: datetime) -> None:
        handoff = Handoff()
        advanced: list[tuple[str, LoanState, bytes, bytes]] = []
        for loan_id in due:
            before = loan_state.get(loan_id)
            if not before:
                continue
            try:
                state = decoded_state(loan_id, before)
                effects = steps.advance(engine, state, now, fallback_at=now.timestamp())
                after = state.to_bytes()
            except Exception as exc:  # one loan's state never stops the sweep
                await quarantine_state(loan_id, before, "deadline", exc)
                continue
            await emit(handoff, loan_id, effects.alerts)
            if effects.move is not None:  # a dwell or grace ending
                await report_place_move(handoff, loan_id, effects.move)
            await publish_status(handoff, state)
            advanced.append((loan_id, state, before, after))
        await handoff.complete()  # the alerts first, then the states that record them
        for loan_id, state, before, after in advanced:
            store_state(loan_id, state, before, after, partition_of(loan_id))
        metrics.deadlines_due.inc(len(advanced))

    @app.task  # type: ignore[untyped-decorator]
    async def evaluate() -> None:
        if place_feed is not None:
            await place_feed.replayed.wait()
        await run_lane(lanes["evaluate"], evaluate_locked, evaluate_wake)

    @app.task  # type: ignore[untyped-decorator]
    async def bind_pings() -> None:
        await run_lane(lanes["bind_pings"], bind_gated, bind_wake)

    @app.task  # type: ignore[untyped-decorator]
    async def count_places() -> None:
        await run_lane(lanes["count_places"], count_batch)

    @loan_state.on_recover
    async def rebuild_deadlines() -> None:
        """After recovery (start, rebalance) re-index the deadlines of every loan held. A state
        that cannot be read (or whose deadline cannot be computed) is quarantined and the
        rebuild goes on: the loan's next record is dead-lettered with the reason."""
        count = failed = 0
        for loan_id, value in loan_state.items():
            if not value:
                continue
            try:
                steps.schedule(
                    engine, deadlines, partition_of(loan_id), LoanState.from_bytes(value)
                )
            except Exception as exc:
                failed += 1
                log.exception("stored loan state unusable", extra={"loan_id": loan_id})
                reason = state_failure(exc)
                quarantine.add(loan_id, "deadline_rebuild", reason, repr(exc), time.time())
                continue
            count += 1
        extra = {"loans": count, "deadlines": len(deadlines), "quarantined": failed}
        log.info("deadline index rebuilt", extra=extra)

    return Pipeline(
        app=app, engine=engine, metrics=metrics, clock=clock, merge=merge, deadlines=deadlines,
        quarantine=quarantine,
    )  # fmt: skip

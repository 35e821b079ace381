"""The worker's time model, pure: per-partition watermarks, ordered release, and `now`.

A record has two times: its *event time* (when it happened, in the record) and its *arrival*
(when it entered Kafka: the record timestamp its producer set, or the broker's append time). A
worker that never stopped would have handled each record at its arrival; one catching up after
an outage, or replaying a backlog, reads the topics at different speeds and must still give the
same alerts. So:

- Lateness is judged on the data: a record is late when its event time is more than the
  allowed lateness behind its arrival (`Engine.apply(..., arrival=)`), never against the time
  the worker finally read it.
- Records are released to the engine in arrival order across the partitions a worker reads
  (`TimeMerge`): each input partition has a watermark (the newest arrival read from it), and a
  buffered record is released only once every *active* partition's watermark has reached its
  arrival. A partition is idle — left out of the minimum — when nothing of it is buffered, its
  read position has reached its high-water mark as of the latest fetch, every record the worker
  itself sent to it has been read back, and nothing new came for `idle_s`. Reading one
  partition ahead (a small topic fetched whole) thus never makes the others' records late, as
  in Flink (per-split watermarks, `withIdleness`) and Kafka Streams (`max.task.idle.ms`).
- Pings reach the evaluate step through a shuffle (gps.raw, keyed by device, is bound to its loan
  and re-keyed onto gps.bound), and the gps.raw partition a ping came from may be bound by
  another worker. So, as Flink carries watermarks through a shuffle, every binder announces on
  each gps.bound partition, per gps.raw partition it binds, how far it forwarded it (`Mark`:
  the newest arrival forwarded and the offset below which every record was handled), and the
  evaluate step's watermark takes the minimum over *every* gps.raw partition: its own as it
  reads them, the others as announced on every gps.bound partition it reads (the smallest
  announcement of them). A gps.raw partition with no live binder (its worker killed, waiting
  for the session timeout) thus holds the clock instead of letting it run ahead of pings that
  will come; it is idle only when its binder announced it handled every record below the
  partition's end offset (as this worker last asked the broker), that end did not move for
  `source_quiet_s` (the end is learnt by asking the broker now and then, not from a fetch:
  without the wait, records that came since the last answer and not bound yet would be taken
  for none while the binder was merely caught up a moment), and nothing moved for `idle_s`.
- `now` for the engine (`EngineClock`): in replays (`event`) the newest released event time
  minus the allowed lateness; live (`wall`) the arrival of the newest released record, and the
  wall clock for the deadline sweep only once every partition is caught up (`caught_up`), so an
  absence deadline never fires before the records that could cancel it were read.

In a replay (`clock=event`) a record's arrival is its event time (what `skipwatch backtest`
assumes of a recording): the recording's order is the arrival order.

No IO and no clock here: the caller passes the monotonic time and the fetch positions.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count
from typing import Generic, Literal, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

NEVER = -math.inf


@dataclass
class PartitionProgress:
    """What is known of one input partition."""

    watermark: float = NEVER  # newest arrival read from it
    read: int | None = None  # last offset read (pushed or observed)
    delivered: int | None = None  # last offset the consumer handed on (read or about to be)
    position: int | None = None  # the consumer's next fetch offset, as of the latest fetch
    highwater: int | None = None  # the partition's end offset, as of the latest fetch
    sent: int | None = None  # last offset the worker itself sent to the partition (acked)
    buffered: int = 0  # records of it held in the merge
    last_read: float = NEVER  # monotonic time a record was last read
    assigned_at: float = NEVER  # monotonic time the partition was (re)assigned

    def caught_up(self) -> bool:
        """Nothing of it held, and everything in it as of the latest fetch was read."""
        return not self.buffered and self.complete()

    def complete(self) -> bool:
        """Everything in the partition as of the latest fetch was read: the consumer's
        position reached the high-water mark (past transaction markers too), every record it
        handed on was read, and so was every record the worker itself sent to it."""
        if self.position is None or self.highwater is None:
            return False
        if self.position < self.highwater:
            return False
        return all(
            last is None or (self.read is not None and self.read >= last)
            for last in (self.delivered, self.sent)
        )


@dataclass
class Mark:
    """What a binder announced on one gps.bound partition of one gps.raw partition it binds:
    every record of it below `through` was handled (forwarded, pending a binding, or
    dead-lettered) before the announcement, and the newest arrival forwarded is `watermark`."""

    watermark: float = NEVER
    through: int | None = None
    moved_at: float = NEVER  # monotonic time (of the reader) the announcement last moved


class TimeMerge(Generic[K, T]):
    """Records of several partitions, released in arrival order behind the partitions' minimum
    watermark (idle partitions excluded), each partition's own records in the order read (as
    Kafka Streams does: a partition's next record goes when it is the oldest of the heads).

    A *derived* partition (`derived(key)`: gps.bound, which the worker fills from the gps.raw
    partitions it reads) is not in arrival order: its records are released by arrival, and it
    has no watermark of its own: the partitions it is made from bound what can still come. It
    holds every other partition back only while it has records not read yet. The source
    partitions (`set_sources`) this worker does not read itself take part in the watermark
    through the marks read on the derived partitions (`mark`, see the module's docstring).

    `limit` bounds what is held: past it the oldest heads are released even though a partition
    has not caught up (counted in `forced`), so a partition that stalls cannot make the worker
    hold the others for ever.
    """

    def __init__(
        self,
        idle_s: float,
        limit: int = 50_000,
        derived: Callable[[K], bool] = lambda _: False,
        source_quiet_s: float = 1.0,
        source_timeout_s: float = math.inf,
    ) -> None:
        if idle_s < 0:
            raise ValueError(f"idle_s must be >= 0, got {idle_s}")
        if source_quiet_s < 0:
            raise ValueError(f"source_quiet_s must be >= 0, got {source_quiet_s}")
        if not source_timeout_s > 0:
            raise ValueError(f"source_timeout_s must be > 0, got {source_timeout_s}")
        self.source_quiet_s = source_quiet_s
        self.source_timeout_s = source_timeout_s
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.idle_s = idle_s
        self.limit = limit
        self.derived = derived
        self.partitions: dict[K, PartitionProgress] = {}
        # per partition, a heap of (order, seq, arrival, item): order is the arrival for a
        # derived partition, the read order (seq) for the others
        self._queues: dict[K, list[tuple[float, int, float, T]]] = {}
        self._heads: list[tuple[float, int, K]] = []  # (arrival, seq, partition) of each head
        self._held = 0
        self._timeless: list[T] = []
        self._seq = count()
        self.forced = 0
        self.sources: frozenset[K] = frozenset()
        self._marks: dict[K, dict[K, Mark]] = {}  # derived partition -> source -> mark
        self._ends: dict[K, tuple[int, float]] = {}  # a source's end offset, as last asked,
        # and the monotonic time it was first seen there
        self.timed_out: set[K] = set()  # remote sources left out after `source_timeout_s`

    def __len__(self) -> int:
        return self._held + len(self._timeless)

    def assign(self, partitions: Iterable[K], now: float) -> None:
        """The partitions the worker reads now; others are forgotten (revoked)."""
        wanted = set(partitions)
        gone = [key for key in self.partitions if key not in wanted]
        for key in gone:
            del self.partitions[key]
        for key in wanted:
            if key not in self.partitions:
                self.partitions[key] = PartitionProgress(assigned_at=now)
        for key in [key for key in self._marks if key not in wanted]:
            del self._marks[key]
        dropped = [key for key in self._queues if key not in wanted]
        if dropped:
            for key in dropped:
                self._held -= len(self._queues.pop(key))
            self._heads = [head for head in self._heads if head[2] in wanted]
            heapq.heapify(self._heads)

    def _progress(self, key: K, now: float) -> PartitionProgress:
        progress = self.partitions.get(key)
        if progress is None:
            progress = self.partitions[key] = PartitionProgress(assigned_at=now)
        return progress

    def observe(self, key: K, offset: int | None, arrival: float | None, now: float) -> None:
        """A record of `key` was read (and handled elsewhere): its partition moved on."""
        progress = self._progress(key, now)
        if arrival is not None and arrival > progress.watermark:
            progress.watermark = arrival
        if offset is not None and (progress.read is None or offset > progress.read):
            progress.read = offset
        progress.last_read = now

    def push(self, key: K, offset: int | None, arrival: float | None, item: T, now: float) -> None:
        """A record to release in arrival order. `arrival` None: a record with no time of its
        own (a loan record, a place count), released at the next `release`, in read order; its
        partition takes no part in the watermark."""
        if arrival is None:
            self._timeless.append(item)
            return
        self.observe(key, offset, arrival, now)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = []
        seq = next(self._seq)
        if not queue:
            heapq.heappush(self._heads, (arrival, seq, key))
            heapq.heappush(queue, (arrival if self.derived(key) else seq, seq, arrival, item))
        else:
            head = queue[0]
            heapq.heappush(queue, (arrival if self.derived(key) else seq, seq, arrival, item))
            if queue[0] is not head:  # a derived partition's older record: a new head
                self._heads = [h for h in self._heads if h[2] != key]
                heapq.heapify(self._heads)
                heapq.heappush(self._heads, (arrival, seq, key))
        self._held += 1
        self.partitions[key].buffered += 1

    def fetched(
        self,
        key: K,
        position: int | None,
        highwater: int | None,
        delivered: int | None,
        now: float,
    ) -> None:
        """The consumer's position and the partition's high-water mark as of the latest fetch,
        and the last offset the consumer handed on to be read."""
        progress = self._progress(key, now)
        progress.position, progress.highwater = position, highwater
        progress.delivered = delivered

    def sent(self, key: K, offset: int) -> None:
        """The worker itself wrote a record at `offset` (acked): the partition is not caught
        up before it was read back, whatever the high-water mark of the last fetch said."""
        progress = self.partitions.get(key)
        if progress is not None and (progress.sent is None or offset > progress.sent):
            progress.sent = offset

    def set_sources(self, sources: Iterable[K]) -> None:
        """Every partition derived records are made from (all gps.raw partitions)."""
        self.sources = frozenset(sources)

    def remote_sources(self) -> list[K]:
        """The source partitions this worker does not read itself, while it reads a derived
        partition (else nothing of theirs reaches it)."""
        if not any(self.derived(key) for key in self.partitions):
            return []
        return [key for key in self.sources if key not in self.partitions]

    def mark(
        self,
        key: K,
        offset: int | None,
        source: K,
        watermark: float | None,
        through: int | None,
        now: float,
    ) -> None:
        """A mark read at `offset` of derived partition `key`: how far `source` was forwarded.
        Marks only move forward (a binder that took a partition over announces it from its
        committed offset: what the previous one announced was forwarded all the same)."""
        self.observe(key, offset, None, now)
        if source not in self.sources:
            raise ValueError(f"a mark for {source!r}, which is not a source partition")
        marks = self._marks.setdefault(key, {})
        known = marks.get(source)
        if known is None:
            known = marks[source] = Mark()
        moved = False
        if watermark is not None and watermark > known.watermark:
            known.watermark, moved = watermark, True
        if through is not None and (known.through is None or through > known.through):
            known.through, moved = through, True
        if moved:
            known.moved_at = now

    def source_end(self, source: K, end: int, now: float) -> None:
        """A source partition's end offset (the broker's, as asked at `now`)."""
        known = self._ends.get(source)
        if known is None or known[0] != end:
            self._ends[source] = (end, now)

    def unsettled_sources(self) -> list[K]:
        """The remote sources whose idleness hangs on their end offset: end not known yet, or
        every derived partition read has a mark at or past it. Their end must be asked afresh
        before a release: records that came since the last answer would be taken for none."""
        out = []
        for source in self.remote_sources():
            end = self._ends.get(source, (None, 0.0))[0]
            if end is None or all(
                (known := self._marks.get(key, {}).get(source)) is not None
                and known.through is not None
                and known.through >= end
                for key in self.partitions
                if self.derived(key)
            ):
                out.append(source)
        return out

    def forwarded(self, key: K) -> tuple[float | None, int | None]:
        """For a source partition this worker reads: what to announce of it (`Mark`): the
        newest arrival read (None: none yet) and the offset below which every record of it was
        handled (its fetch position once everything it handed on was read; None: nothing)."""
        progress = self.partitions.get(key)
        if progress is None:
            return None, None
        watermark = progress.watermark if progress.watermark > NEVER else None
        if progress.complete():
            return watermark, progress.position
        return watermark, None if progress.read is None else progress.read + 1

    def remote(self, source: K, now: float) -> tuple[float, bool]:
        """(watermark, idle) of a source partition read by another worker, from the marks on
        every derived partition this worker reads: the smallest announced watermark; idle when
        every one announced it handled the records below the partition's end, the end stood
        still for `source_quiet_s` and nothing moved for `idle_s` — or when no mark of it moved
        for `source_timeout_s` (counted in `timed_out`): its binder is gone for longer than a
        rebalance takes, or stuck, and it must not hold the clock for ever."""
        mark, moved = math.inf, NEVER
        end, since = self._ends.get(source, (None, math.inf))
        idle = now - since >= self.source_quiet_s
        missing = False
        for key in self.partitions:
            if not self.derived(key):
                continue
            # waiting since the derived partition was (re)assigned at the earliest
            moved = max(moved, self.partitions[key].assigned_at)
            known = self._marks.get(key, {}).get(source)
            if known is None:
                missing, mark, idle = True, NEVER, False
                continue
            if not missing:
                mark = min(mark, known.watermark)
            moved = max(moved, known.moved_at)
            if end is None or known.through is None or known.through < end:
                idle = False
        if now - moved >= self.source_timeout_s:
            self.timed_out.add(source)
            return mark, True
        self.timed_out.discard(source)
        return mark, idle and now - moved >= self.idle_s

    def idle(self, progress: PartitionProgress, now: float) -> bool:
        quiet_since = max(progress.last_read, progress.assigned_at)
        return progress.caught_up() and now - quiet_since >= self.idle_s

    def watermark(self, now: float) -> float:
        """The minimum watermark over the active partitions (+inf when all are idle)."""
        mark = math.inf
        for key, progress in self.partitions.items():
            if self.derived(key):
                if not progress.complete():
                    return NEVER
            elif not self.idle(progress, now) and progress.watermark < mark:
                mark = progress.watermark
        for source in self.remote_sources():
            remote, idle = self.remote(source, now)
            if not idle and remote < mark:
                mark = remote
        return mark

    def release(self, now: float) -> list[T]:
        """The held records the watermark has reached, in arrival order (read order within a
        partition)."""
        heads = self._heads
        out, self._timeless = self._timeless, []
        while heads:
            # a partition whose last held record goes out may turn idle: look again
            mark = self.watermark(now)
            before = len(out)
            while heads and (heads[0][0] <= mark or self._held > self.limit):
                arrival, _, key = heapq.heappop(heads)
                queue = self._queues[key]
                _, _, _, item = heapq.heappop(queue)
                if arrival > mark:
                    self.forced += 1
                if queue:
                    heapq.heappush(heads, (queue[0][2], queue[0][1], key))
                self._held -= 1
                progress = self.partitions.get(key)
                if progress is not None:
                    progress.buffered -= 1
                out.append(item)
            if len(out) == before:
                break
        return out

    def caught_up(self, now: float) -> bool:
        """Nothing held, and every partition read to its end (and idle)."""
        return (
            not self._held
            and not self._timeless
            and all(self.idle(p, now) for p in self.partitions.values())
            and all(self.remote(source, now)[1] for source in self.remote_sources())
        )

    def describe(self, now: float) -> dict[str, object]:
        """What the merge holds and why (a diagnosis: the worker's SIGUSR1 dump)."""
        return {
            "held": len(self),
            "watermark": self.watermark(now),
            "head": self._heads[0][0] if self._heads else None,
            "partitions": {
                str(key): (
                    p.watermark,
                    p.read,
                    p.delivered,
                    p.position,
                    p.highwater,
                    p.sent,
                    p.buffered,
                    "idle" if self.idle(p, now) else "",
                )
                for key, p in self.partitions.items()
            },
            "remote": {str(key): self.remote(key, now) for key in self.remote_sources()},
            "marks": {
                str(key): {str(src): (m.watermark, m.through) for src, m in marks.items()}
                for key, marks in self._marks.items()
            },
            "ends": {str(key): end for key, (end, _) in self._ends.items()},
        }

    def clear(self) -> None:
        """Drop what is held (a rebalance: the records come again from the committed offsets),
        and the watermarks: a partition kept over the rebalance must not keep the watermark of
        records now dropped and read again (the other partitions' records would go ahead of
        them); it holds the clock from nothing until it reads a record, or is idle once read
        to its end. Its offsets (read, handed on, sent, fetched) are kept: it is read to its end
        only once it read again what it had read. The marks and end offsets of the remote
        sources go too: they come again with the gps.bound records read from the committed
        offsets, and from their binders, which announce again after the rebalance."""
        self._queues.clear()
        self._heads.clear()
        self._held = 0
        self._timeless.clear()
        for progress in self.partitions.values():
            progress.buffered = 0
            progress.watermark = NEVER
        self._marks.clear()
        self._ends.clear()
        self.timed_out.clear()


# The newest instant `datetime` can hold with room for any time zone offset: a clock beyond it
# would fail every conversion (year 10000). Event times are bounded long before (bounds.py); the
# clock holds whatever it is given all the same.
LATEST_TS = datetime(9999, 12, 30, tzinfo=UTC).timestamp()


@dataclass
class EngineClock:
    """`now` for the engine, from what was released so far.

    `event`: the newest released event time minus the allowed lateness (a replay: arrival is
    event time). `wall`: a record is handled at its arrival (never after the wall clock), as a
    worker that never stopped would have; the deadline sweep runs at the wall clock once the
    worker is caught up, and only up to the newest released arrival before that.
    """

    mode: Literal["wall", "event"]
    allowed_lateness_s: float
    frontier: float = 0.0  # the newest arrival released (monotonic)

    def __post_init__(self) -> None:
        if self.mode not in ("wall", "event"):
            raise ValueError(f"clock mode must be 'wall' or 'event', got {self.mode!r}")
        if self.allowed_lateness_s < 0:
            raise ValueError(f"allowed lateness must be >= 0, got {self.allowed_lateness_s}")

    def released(self, arrival: float | None) -> None:
        # a comparison with NaN is false: NaN, infinities and year-10000 times never get in
        if arrival is not None and self.frontier < arrival <= LATEST_TS:
            self.frontier = arrival

    def reset(self) -> None:
        """A rebalance: the records not committed are read again, each at its own time, as a
        restarted worker reads them. The frontier reached before would run ahead of them: the
        deadline sweep would advance a loan newly assigned here — its state recovered from the
        changelog, up to a commit interval (and the records held in the time merge) behind the
        worker that had it — to this worker's `now`, before its own records were read again,
        and fire absences (a tracker's silence) that those records cancel."""
        self.frontier = 0.0

    def record_now(self, wall: float, fallback: float | None = None) -> float:
        """`now` for the record just released. Live, `fallback` (a record with no time of its
        own: its Kafka timestamp) stands in until a timed record was released."""
        if self.mode == "event":
            now = self.frontier - self.allowed_lateness_s
            return 0.0 if now < 0.0 else now  # max(now, 0.0), once per record in a replay
        return min(self.frontier or fallback or wall, wall, LATEST_TS)

    def sweep_now(self, wall: float, caught_up: bool) -> float:
        """`now` for the deadline sweep: in live operation the wall clock, but never past the
        records not read yet (a payment in the backlog is read before its due date fires)."""
        if self.mode == "event":
            return max(self.frontier - self.allowed_lateness_s, 0.0)
        return min(wall if caught_up else min(wall, self.frontier), LATEST_TS)

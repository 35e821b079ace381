"""Records from Faust's consumer to the pipeline's batch steps, a fetch at a time.

Faust hands every record to its agents one by one: two tasks and an `asyncio.wait` in the fetch
loop, an event, a stream queue and an ack per record. On this project's 2-core VM that cost
≈300 µs of CPU per record before any of the pipeline's own work (docs/benchmarks.md), a ceiling
of ≈3,000 records/s. Faust stays in charge of everything else — the consumer group and its
co-partitioned assignment, table changelogs and recovery, offset commits, timers — but the
records of the pipeline's own topics go from each fetch straight into a `Lane`: one list per
consuming step, taken in batches by that step's task, which acknowledges each record only once
it was applied (Faust commits the acknowledged offsets, after flushing what the batch wrote).

A lane belongs to Faust's flow control: a rebalance suspends delivery and clears the lanes, and
the records fetched but not applied by then come again from the committed offsets.

The consumer that fills the lanes from Faust's fetch loop (`LaneConsumer`) reaches into Faust's
and aiokafka's internals and lives with the other such hooks in `streams/faust_edge/consumer.py`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Any

from faust.types import Message


class Lane:
    """The records fetched for one batch step's topics, in fetch order, bounded.

    Records of the `first` topics are taken before the others (in their own fetch order): the
    device bindings, which a backlog of pings fetched before them must not hold back (the pings
    of a device not bound yet are kept only up to a cap).
    """

    def __init__(
        self, name: str, topics: Iterable[str], limit: int, first: Iterable[str] = ()
    ) -> None:
        self.name = name
        self.topics = frozenset(topics)
        self.first = frozenset(first)
        self.limit = limit
        self.busy = asyncio.Lock()  # held while a batch is applied
        self._first: deque[Message] = deque()
        self._records: deque[Message] = deque()
        self.delivered: dict[Any, int] = {}  # the last offset put, per partition (clock.py)
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._first) + len(self._records)

    def put(self, records: list[Message]) -> None:
        first = self.first
        delivered = self.delivered
        for record in records:
            delivered[record.tp] = record.offset
        if first and any(record.topic in first for record in records):
            self._first.extend(record for record in records if record.topic in first)
            self._records.extend(record for record in records if record.topic not in first)
        else:
            self._records.extend(records)
        self._ready.set()
        if len(self) >= self.limit:
            self._room.clear()

    async def room(self) -> None:
        await self._room.wait()

    def has_room(self) -> bool:
        return self._room.is_set()

    async def take(self, max_records: int, timeout_s: float | None = None) -> list[Message]:
        """Up to `max_records`, waiting until there is at least one (or `timeout_s`: none)."""
        while not (self._records or self._first):
            self._ready.clear()
            if timeout_s is None:
                await self._ready.wait()
                continue
            try:
                await asyncio.wait_for(self._ready.wait(), timeout_s)
            except TimeoutError:
                return []
        batch: list[Message] = []
        for records in (self._first, self._records):
            batch.extend(
                records.popleft() for _ in range(min(max_records - len(batch), len(records)))
            )
        if len(self) < self.limit:
            self._room.set()
        return batch

    def clear(self) -> None:
        """Drop what is not taken yet (a rebalance: it comes again from the committed offsets).
        The offsets handed on are kept: a partition is not read to its end (rules/clock.py)
        before the records it handed on are read again — which also covers records Faust
        drops around the seek to the committed offsets until the gap guard replays them
        (forgetting them here let a restarted worker's clock pass such pings: docs/streaming.md)."""
        self._first.clear()
        self._records.clear()
        self._room.set()

    def drop(self, partition: Any) -> None:
        """Drop what is not taken yet of one partition (it was sent back to an offset)."""
        if partition.topic in self.first:
            self._first = deque(r for r in self._first if r.tp != partition)
        else:
            self._records = deque(r for r in self._records if r.tp != partition)
        if len(self) < self.limit:
            self._room.set()


class AckOrder:
    """Acknowledgements handed to Faust in offset order, per partition.

    Faust commits the end of the first run of consecutive acknowledged offsets of a partition
    whether or not that run starts at the committed offset: its guard (the consumer's "new
    offset" computation, faust-streaming 0.15.3) lets a run starting one past the committed
    offset through, and there is no guard at all before a partition's first commit.
    A step that holds a record and acknowledges later ones of its partition first — the
    evaluate step releases gps.bound by arrival, not by offset, and holds records behind the
    clock — would so have the group commit past the held record, and a restart or a rebalance
    would resume after it: the record lost. So a record is acknowledged only once every record
    taken before it from its partition is.
    """

    def __init__(self) -> None:
        self._open: dict[Any, deque[int]] = {}  # offsets taken and not acknowledged, in order
        self._finished: dict[Any, dict[int, Message]] = {}  # done, waiting for earlier ones

    def __len__(self) -> int:
        """Records done and waiting for an earlier record of their partition."""
        return sum(len(done) for done in self._finished.values())

    def taken(self, records: Iterable[Message]) -> None:
        """Records handed to the step, in the order of their partition's offsets."""
        opened = self._open
        for record in records:
            queue = opened.get(record.tp)
            if queue is None:
                queue = opened[record.tp] = deque()
            if not queue or record.offset > queue[-1]:
                queue.append(record.offset)

    def finished(self, records: Iterable[Message]) -> list[Message]:
        """The records to acknowledge now: of those done so far, every one with no earlier
        record of its partition still open."""
        out: list[Message] = []
        touched = set()
        for record in records:
            tp = record.tp
            queue = self._open.get(tp)
            if not queue or record.offset < queue[0]:
                out.append(record)  # nothing before it is open (not taken through here)
                continue
            self._finished.setdefault(tp, {})[record.offset] = record
            touched.add(tp)
        for tp in touched:
            queue = self._open[tp]
            done = self._finished[tp]
            while queue and queue[0] in done:
                out.append(done.pop(queue.popleft()))
            if not queue:
                out.extend(done.values())  # done but not taken here: nothing open before
                done.clear()
            if not done:
                del self._finished[tp]
            if not queue:
                del self._open[tp]
        return out

    def clear(self) -> None:
        """Forget everything (a rebalance: what was not acknowledged comes again)."""
        self._open.clear()
        self._finished.clear()

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
        """Drop what is not taken yet (a rebalance: it comes again from the committed offsets)."""
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

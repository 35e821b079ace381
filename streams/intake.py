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
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP, Message


class Lane:
    """The records fetched for one batch step's topics, in fetch order, bounded."""

    def __init__(self, name: str, topics: Iterable[str], limit: int) -> None:
        self.name = name
        self.topics = frozenset(topics)
        self.limit = limit
        self.busy = asyncio.Lock()  # held while a batch is applied
        self._records: deque[Message] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._records)

    def put(self, records: list[Message]) -> None:
        self._records.extend(records)
        self._ready.set()
        if len(self._records) >= self.limit:
            self._room.clear()

    async def room(self) -> None:
        await self._room.wait()

    async def take(self, max_records: int) -> list[Message]:
        """Up to `max_records`, waiting until there is at least one."""
        while not self._records:
            self._ready.clear()
            await self._ready.wait()
        records = self._records
        batch = [records.popleft() for _ in range(min(max_records, len(records)))]
        if len(records) < self.limit:
            self._room.set()
        return batch

    def clear(self) -> None:
        """Drop what is not taken yet (a rebalance: it comes again from the committed offsets)."""
        self._records.clear()
        self._room.set()


class LaneConsumer(Consumer):
    """Faust's aiokafka consumer, with the records of the lanes' topics delivered per fetch.

    `lanes` maps topic → lane; records of other topics (none in this app, but Faust's own
    machinery may subscribe some) go through Faust's per-record callback as before.
    `contiguous` names the topics whose offsets have no holes by design (not compacted): a jump
    there is left to the pipeline's gap guard (streams/gaps.py) instead of being marked as
    acknowledged the way Faust marks compaction holes.
    """

    lanes: ClassVar[Mapping[str, Lane]] = {}
    contiguous: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def serving(cls, lanes: Iterable[Lane], contiguous: Iterable[str]) -> type[LaneConsumer]:
        """The consumer class for one app's lanes (Faust's transport makes the instance)."""
        by_topic = {topic: lane for lane in lanes for topic in lane.topics}
        attrs = {"lanes": by_topic, "contiguous": frozenset(contiguous)}
        return type("PipelineConsumer", (cls,), attrs)

    async def _seek(self, partition: TP, offset: int) -> None:
        """Faust's seek, run on the consumer's own thread: aiokafka is not thread-safe, and a
        seek from the app's loop (the gap guard's replay) raced the fetch it ran beside
        (`KeyError` in aiokafka's `fetched_records`, the fetcher crashed)."""
        thread = self._thread

        async def seek_there() -> None:
            thread.seek(partition, offset)

        await thread.call_thread(seek_there)

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """Faust's seek to the committed offsets after an assignment, plus the partitions never
        committed: those go back to their first record.

        During the changelog recovery the stream partitions are not active, and Faust drops
        whatever the consumer fetched for them meanwhile; the seek to the committed offsets
        then undoes that, except where nothing was committed yet (aiokafka leaves those where
        the dropped fetch left them). Seen as a fresh worker that never read the records a topic
        got while it started.
        """
        committed: Mapping[Any, int] = await super().seek_to_committed()
        never = [tp for tp, offset in committed.items() if tp.topic in self.lanes and not offset]
        if never:
            await self._thread.seek_to_beginning(*never)
        return committed

    async def _drain_messages(self, fetcher: Any) -> None:  # the fetch loop (Faust's Fetcher)
        lanes = self.lanes
        contiguous = self.contiguous
        callback = self.callback
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (should_stop() or fetcher_should_stop()):
                fetched: dict[Lane, list[Message]] = {}
                await self.sleep(0)
                if self.should_stop:
                    break
                async for tp, message in self.getmany(timeout=1.0):
                    offset = message.offset
                    last = read_offset[tp]
                    if last is not None and offset < last:
                        continue  # fetched before a seek back: it comes again
                    compacted = tp.topic not in contiguous and acks_enabled_for(tp.topic)
                    if compacted and last is not None and offset - last > 1:
                        await self._add_gap(tp, last + 1, offset - 1)  # a hole: nothing to ack
                    lane = lanes.get(tp.topic)
                    if lane is None:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    else:
                        fetched.setdefault(lane, []).append(message)
                    read_offset[tp] = offset
                for lane, records in fetched.items():
                    await self.wait_first(lane.room(), self.suspend_flow.wait())
                    if not self.flow_active:
                        break  # a rebalance began: these come again from the committed offsets
                    lane.put(records)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

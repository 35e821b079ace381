"""`LaneConsumer`: Faust's aiokafka consumer, with the records of the pipeline's topics handed to
the lanes (streams/intake.py) a fetch at a time. Hooks listed in `streams/faust_edge/__init__.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, cast

from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP, AppT, Message
from faust.types.tuples import ConsumerMessage

from streams.intake import Lane


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seeks = 0  # seeks so far; the count at each partition's last seek:
        self._sought_at: dict[Any, int] = {}
        self._all_sought_at = 0  # ... and at the last seek of every partition
        self._targets: dict[Any, int | None] = {}  # where each partition was last sent
        # told the committed offsets each time the partitions are sent to them (a rebalance)
        self.on_committed_seek: Callable[[Mapping[Any, int]], None] | None = None
        # what the steps hold, added to `describe` (the SIGUSR1 dump)
        self.describe_steps: Callable[[], dict[str, Any]] | None = None
        # aiokafka's fetch position per lane partition once every record below it was put into
        # its lane (`fetch_state`)
        self._settled: dict[Any, int] = {}

    @classmethod
    def serving(cls, lanes: Iterable[Lane], contiguous: Iterable[str]) -> type[LaneConsumer]:
        """The consumer class for one app's lanes (Faust's transport makes the instance)."""
        by_topic = {topic: lane for lane in lanes for topic in lane.topics}
        attrs = {"lanes": by_topic, "contiguous": frozenset(contiguous)}
        return type("PipelineConsumer", (cls,), attrs)

    @classmethod
    def install(cls, app: AppT, lanes: Iterable[Lane], contiguous: Iterable[str]) -> LaneConsumer:
        """Make the app's consumer a `LaneConsumer` serving `lanes` (set on Faust's transport
        before anything creates the consumer), and return it."""
        app.transport.Consumer = cls.serving(lanes, contiguous)  # type: ignore[misc]
        return cast(LaneConsumer, app.consumer)

    async def mark_empty(self, tp: TP, first: int, last: int) -> None:
        """Offsets `first`..`last` of `tp` hold no record (the broker said so): let Faust's
        commit pass them, as it does for the compaction holes it finds itself."""
        await self._add_gap(tp, first, last)

    async def _seek(self, partition: TP, offset: int) -> None:
        """Faust's seek (the gap guard's replay), run on the consumer's own thread: aiokafka is
        not thread-safe, and a seek from the app's loop raced the fetch beside it (`KeyError`
        in aiokafka's `fetched_records`, the fetcher crashed). What was fetched for the
        partition before the seek is dropped; it comes again from `offset`."""
        await self._thread_seek({partition: offset})
        self._sought(partition, offset)

    async def _thread_seek(self, offsets: Mapping[Any, int]) -> None:
        thread = self._thread

        async def seek_there() -> None:
            for tp, offset in offsets.items():
                thread.seek(tp, offset)

        await thread.call_thread(seek_there)

    async def _seek_to_first(self, partitions: Iterable[Any]) -> dict[Any, int]:
        """To each partition's first record, by offset: aiokafka's own `seek_to_beginning`
        leaves the position unset until its next fetch, and Faust's livelock check asserts on
        an unset position (it crashed the consumer)."""
        firsts = dict(await self._thread.earliest_offsets(*partitions))
        await self._thread_seek(firsts)
        return firsts

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
        firsts = await self._seek_to_first(never) if never else {}
        self._sought(None)
        self._targets = {tp: offset or firsts.get(tp) for tp, offset in committed.items()}
        if self.on_committed_seek is not None:
            self.on_committed_seek({tp: o for tp, o in committed.items() if o})
        return committed

    async def _seek_again(self, tp: TP) -> None:
        target = self._targets.get(tp)
        if target is None:
            target = (await self._seek_to_first([tp]))[tp]
        await self.seek(tp, target)  # Faust's: sets the read offset too

    def describe(self) -> dict[str, Any]:
        """Where fetching stands (the worker's SIGUSR1 dump): for a partition that stopped."""
        return {
            "flow_active": self.flow_active,
            "paused": sorted(map(str, self._paused_partitions)),
            "active": len(self._active_partitions or ()),
            "read_offsets": {str(tp): o for tp, o in sorted(self._read_offset.items())},
            "lanes": {lane.name: len(lane) for lane in set(self.lanes.values())},
            "seeks": self._seeks,
            "positions": self._positions(),
            "steps": self.describe_steps() if self.describe_steps is not None else None,
        }

    def _positions(self) -> dict[str, Any]:
        """aiokafka's fetch position per lane partition (read across threads: a diagnosis)."""
        try:
            assignment = self._thread._ensure_consumer()._subscription.subscription.assignment
        except Exception as exc:  # not started, or no assignment yet
            return {"unavailable": repr(exc)}
        out: dict[str, Any] = {}
        for tp in assignment.tps:
            if tp.topic in self.lanes:
                state = assignment.state_value(tp)
                position = state.position if state.has_valid_position else None
                out[f"{tp.topic}[{tp.partition}]"] = (position, "paused" if state.paused else "")
        return out

    def fetch_state(self, partitions: Iterable[Any]) -> dict[Any, tuple[int | None, int | None]]:
        """(position, high-water mark) per partition as of aiokafka's latest fetch (None when not
        known yet), read across threads: two integers the fetcher replaces, for the clock's
        "caught up" test (rules/clock.py).

        The position is at most where it stood once the records of the last fetch were put
        into their lane: aiokafka moves it when it hands the records over on its thread, and
        the records wait there, then for room in their lane, before the lane has them. Taken
        as is, a partition whose last records were still on their way looked read to its end —
        idle, left out of the clock, and its records came late behind the others'."""
        try:
            assignment = self._thread._ensure_consumer()._subscription.subscription.assignment
        except Exception:  # not started, or no assignment yet
            return {}
        settled = self._settled
        out: dict[Any, tuple[int | None, int | None]] = {}
        for tp in partitions:
            try:
                state = assignment.state_value(tp)
            except Exception:  # not (or no longer) assigned
                continue
            if state is None:
                continue
            position = state.position if state.has_valid_position else None
            before = settled.get(tp)
            position = None if position is None or before is None else min(position, before)
            out[tp] = (position, state.highwater)
        return out

    def _lane_positions(self) -> dict[Any, int]:
        """aiokafka's fetch position of every lane partition (none known: empty)."""
        positions: dict[Any, int] = {}
        try:
            assignment = self._thread._ensure_consumer()._subscription.subscription.assignment
            lanes = self.lanes
            for tp in assignment.tps:
                if tp.topic in lanes:
                    state = assignment.state_value(tp)
                    if state is not None and state.has_valid_position:
                        positions[tp] = state.position
        except Exception:  # not started, or no assignment yet
            pass
        return positions

    def _sought(self, partition: TP | None, offset: int | None = None) -> None:
        """A partition (None: all) was moved to another offset: what the lanes hold of it is
        stale, and so may be a fetch that began before the move was complete."""
        self._seeks += 1
        if partition is None:
            self._settled.clear()
            self._all_sought_at = self._seeks
            for lane in set(self.lanes.values()):
                lane.clear()
            return
        self._sought_at[partition] = self._seeks
        self._targets[partition] = offset
        held = self.lanes.get(partition.topic)
        if held is not None:
            held.drop(partition)

    def _fresh_since(self, seeks: int) -> Callable[[Any], bool]:
        """Whether a partition was not moved since the seek count `seeks`."""
        if self._all_sought_at > seeks:
            return lambda tp: False
        marks = self._sought_at
        return lambda tp: marks.get(tp, 0) <= seeks

    async def _fetch(self, wait_s: float) -> list[tuple[TP, list[Message]]]:
        """One fetch, as Faust's `getmany` makes it, but a list per partition: `getmany` is an
        async generator that yields each record and checks the generation and reads the
        high-water mark once per record."""
        records, active = await self._wait_next_records(wait_s)
        if records is None or self.should_stop:
            return []
        if not self.flow_active:  # as `getmany`: back to the committed offsets
            try:
                await self.perform_seek()
            except Exception as exc:
                self.log.warning(f"exception performing seek when flow not active {exc}")
            return []
        generation = self.app.consumer_generation_id
        buffered = self._buffered_partitions
        track_end = self.app.monitor.track_tp_end_offset
        fetched: list[tuple[TP, list[Message]]] = []
        for tp, batch in records.items():
            if not batch or not (active is None or tp in active or tp in buffered):
                continue
            track_end(tp, self.highwater(tp))
            fetched.append((tp, [_message(tp, record, generation) for record in batch]))
        return fetched

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
                seeks = self._seeks
                batches = await self._fetch(1.0)
                # aiokafka moved the positions past what this fetch brought (nothing else
                # fetches): they count for `fetch_state` once those records are in their lane
                after = self._lane_positions()
                settled = self._settled
                arriving = {tp for tp, _ in batches}
                for tp, position in after.items():
                    if tp not in arriving:
                        settled[tp] = position
                for tp, messages in batches:
                    lane = lanes.get(tp.topic)
                    if lane is not None:
                        fetched.setdefault(lane, []).extend(messages)
                        continue
                    for message in messages:  # not a lane's: Faust's own per-record path
                        offset = message.offset
                        last = read_offset[tp]
                        if last is None or offset >= last:
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                            read_offset[tp] = offset
                for lane, records in fetched.items():
                    # Waited for only when the lane is full: an await here lets the steps run
                    # between the lanes of one fetch, while the other lane's partitions do not
                    # count as read yet (`fetch_state`) and would hold the clock until the
                    # step's next wake-up.
                    if not lane.has_room():
                        await self.wait_first(lane.room(), self.suspend_flow.wait())
                    if not self.flow_active:
                        break  # a rebalance began: these come again from the committed offsets
                    # From here to `put` nothing awaits: no seek can come between the check
                    # and the delivery. Records of a partition moved meanwhile are dropped.
                    fresh = self._fresh_since(seeks)
                    kept, holes, stale = [], [], set()
                    for message in records:
                        tp, offset = message.tp, message.offset
                        last = read_offset[tp]
                        if not fresh(tp):
                            stale.add(tp)
                            continue
                        if last is not None and offset < last:
                            continue  # fetched before a seek back: it comes again
                        if last is not None and offset - last > 1 and tp.topic not in contiguous:
                            holes.append((tp, last + 1, offset - 1))  # compaction: nothing there
                        read_offset[tp] = offset
                        kept.append(message)
                    lane.put(kept)
                    for tp in {message.tp for message in records}:
                        if tp in after and tp not in stale:
                            settled[tp] = after[tp]
                    for tp, first, end in holes:
                        if acks_enabled_for(tp.topic):
                            await self._add_gap(tp, first, end)
                    # A seek came while this fetch was under way: the records may be from
                    # before it or after it (the fetch and the seek ran on the consumer's
                    # thread, in some order). Send the partition to the seek's offset again,
                    # so records fetched after it are read again rather than lost.
                    for tp in stale:
                        await self._seek_again(tp)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise


def _message(tp: TP, record: Any, generation: int) -> ConsumerMessage:
    """Faust's message for an aiokafka record (as its `_to_message`, without the lookups)."""
    timestamp = record.timestamp
    seconds = timestamp / 1000.0 if timestamp is not None else cast(float, None)  # as Faust
    return ConsumerMessage(
        record.topic, record.partition, record.offset, seconds,
        record.timestamp_type, record.headers, record.key, record.value, record.checksum,
        record.serialized_key_size, record.serialized_value_size, tp,
        generation_id=generation,
    )  # fmt: skip

"""Lanes (streams/intake.py): bindings before the pings fetched with them, the last offset
handed on per partition (the clock's "caught up" test), and the wake-up timeout."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.intake import AckOrder, Lane

pytestmark = pytest.mark.unit


def message(topic: str, partition: int, offset: int) -> Any:
    return SimpleNamespace(topic=topic, tp=TP(topic, partition), offset=offset)


async def test_first_topics_are_taken_before_the_others_each_in_fetch_order() -> None:
    lane = Lane("bind", ["gps.raw", "device-bindings"], limit=100, first=["device-bindings"])
    pings = [message("gps.raw", 0, n) for n in range(3)]
    bindings = [message("device-bindings", 1, n) for n in range(2)]
    lane.put([pings[0], bindings[0], pings[1]])
    lane.put([bindings[1], pings[2]])
    assert len(lane) == 5
    assert await lane.take(3) == [bindings[0], bindings[1], pings[0]]
    assert await lane.take(10) == [pings[1], pings[2]]
    assert lane.delivered == {TP("gps.raw", 0): 2, TP("device-bindings", 1): 1}


async def test_a_lane_with_nothing_returns_nothing_after_the_timeout() -> None:
    lane = Lane("evaluate", ["payments"], limit=10)
    assert await lane.take(5, timeout_s=0.01) == []
    lane.put([message("payments", 0, 7)])
    assert [m.offset for m in await lane.take(5, timeout_s=0.01)] == [7]


async def test_dropping_a_partition_keeps_the_others_and_their_order() -> None:
    lane = Lane("bind", ["gps.raw", "device-bindings"], limit=100, first=["device-bindings"])
    kept = [message("gps.raw", 1, 0), message("device-bindings", 1, 0)]
    lane.put([message("gps.raw", 0, 0), kept[0], message("device-bindings", 0, 0), kept[1]])
    lane.drop(TP("device-bindings", 0))
    lane.drop(TP("gps.raw", 0))
    assert await lane.take(10) == [kept[1], kept[0]]


# ------------------------------------------------------------------ acknowledgements in order


def faust_commit(committed: int | None, acked: list[int]) -> int | None:
    """The offset Faust's consumer would commit for one partition (its own computation, run on
    the bookkeeping it keeps): None when it would not commit."""
    tp = TP("gps.bound", 0)
    state = SimpleNamespace(
        _acked={tp: sorted(acked)},
        _acked_index={tp: set(acked)},
        _gap={tp: IntervalTree()},
        _committed_offset={tp: committed},
    )
    return Consumer._new_offset(state, tp)  # type: ignore[arg-type]


def test_faust_commits_past_a_record_held_while_later_ones_are_acknowledged() -> None:
    """Why `AckOrder` exists: offset 100 is held (the time merge), 101-103 acknowledged. Faust
    commits 104, so a restart or a rebalance resumes after the held record: lost. Before the
    partition's first commit there is no guard at all."""
    assert faust_commit(100, [101, 102, 103]) == 104
    assert faust_commit(None, [3, 4]) == 5  # offsets 0-2 held, never committed yet
    assert faust_commit(100, [100, 101]) == 102  # in order: what it is meant for


def test_acks_wait_for_every_earlier_record_of_their_partition() -> None:
    acks = AckOrder()
    tp0 = [message("gps.bound", 0, n) for n in range(100, 104)]
    tp1 = [message("gps.bound", 1, n) for n in range(5)]
    acks.taken([tp0[0], tp0[1], tp1[0], tp0[2], tp1[1], tp0[3]])
    # released by arrival: 101-103 before 100, which is held; partition 1 in order
    assert acks.finished([tp0[1], tp0[3], tp1[0], tp0[2]]) == [tp1[0]]
    assert len(acks) == 3
    assert faust_commit(100, []) is None  # nothing of partition 0 handed on: no commit
    assert acks.finished([tp0[0]]) == [tp0[0], tp0[1], tp0[2], tp0[3]]
    assert faust_commit(100, [100, 101, 102, 103]) == 104
    assert acks.finished([tp1[1]]) == [tp1[1]]
    assert len(acks) == 0


def test_acks_of_records_not_taken_through_the_order_go_at_once_and_a_rebalance_forgets() -> None:
    acks = AckOrder()
    held, later = message("payments", 0, 7), message("payments", 0, 8)
    acks.taken([held, later])
    acks.taken([message("payments", 0, 8)])  # fetched again after a seek back: one entry
    assert acks.finished([later]) == []
    assert acks.finished([message("payments", 0, 3)]) == [message("payments", 0, 3)]
    acks.clear()  # revoked: what was not acknowledged comes again from the committed offset
    assert len(acks) == 0
    assert acks.finished([held]) == [held]


async def test_a_rebalance_keeps_the_offsets_handed_on() -> None:
    """What was handed on comes again from the committed offsets: the partition is not read to
    its end (the clock's test) before it was read again — also when Faust drops it around the
    seek and the gap guard replays it later (a restarted worker's clock passed such pings)."""
    lane = Lane("evaluate", ["contacts"], limit=10)
    lane.put([message("contacts", 0, 19)])
    lane.clear()
    assert lane.delivered == {TP("contacts", 0): 19} and len(lane) == 0

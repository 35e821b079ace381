"""Lanes (streams/intake.py): bindings before the pings fetched with them, the last offset
handed on per partition (the clock's "caught up" test), and the wake-up timeout."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.intake import Lane

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

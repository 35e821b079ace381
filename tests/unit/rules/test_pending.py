"""Pings kept for devices not bound yet, append-only (rules/pipeline/pending.py)."""

from __future__ import annotations

import pytest

from rules.pipeline.pending import PendingPings, chunk_key, device_of

pytestmark = pytest.mark.unit


def pings(*numbers: int) -> list[bytes]:
    return [b'{"n":%d}' % n for n in numbers]


def test_each_batch_adds_a_chunk_and_only_the_small_index_is_rewritten() -> None:
    index: dict[str, bytes] = {}
    chunks: dict[str, bytes] = {}
    pending = PendingPings(index, chunks, limit=10)
    pending.add("dev-1", pings(1, 2))
    pending.add("dev-1", pings(3))
    pending.add("dev-2", pings(9))
    assert pending.held("dev-1") == pings(1, 2, 3)
    assert pending.held("dev-2") == pings(9)
    assert chunks[chunk_key("dev-1", 1)] == b'{"n":3}'  # the second batch's pings only
    assert index["dev-1"] == b"[[0,2],[1,1]]"
    assert pending.held("dev-3") == []


def test_only_the_newest_pings_are_kept_dropping_whole_old_chunks() -> None:
    chunks: dict[str, bytes] = {}
    pending = PendingPings({}, chunks, limit=4)
    pending.add("d", pings(1, 2, 3))
    pending.add("d", pings(4, 5))
    assert pending.held("d") == pings(2, 3, 4, 5)  # 5 held, the newest 4 read
    pending.add("d", pings(6, 7))
    # the first chunk (1-3) went: the other two still hold 4
    assert chunk_key("d", 0) not in chunks
    assert pending.held("d") == pings(4, 5, 6, 7)
    pending.add("d", pings(*range(10, 20)))  # one batch over the limit keeps its newest
    assert pending.held("d") == pings(16, 17, 18, 19)
    assert len(chunks) == 1


def test_forget_drops_the_index_and_every_chunk() -> None:
    index: dict[str, bytes] = {}
    chunks: dict[str, bytes] = {}
    pending = PendingPings(index, chunks, limit=10)
    pending.add("d", pings(1))
    pending.add("d", pings(2))
    pending.add("other", pings(3))
    pending.forget("d")
    pending.forget("never-seen")
    assert pending.held("d") == []
    assert set(index) == {"other"} and list(chunks) == [chunk_key("other", 0)]
    pending.add("d", pings(4))  # starts afresh
    assert pending.held("d") == pings(4)


def test_a_device_held_in_the_layout_before_is_read_extended_and_forgotten() -> None:
    index = {"d": b"\n".join(pings(1, 2))}  # the pings themselves under the device id
    chunks: dict[str, bytes] = {}
    pending = PendingPings(index, chunks, limit=10)
    assert pending.held("d") == pings(1, 2)
    pending.add("d", pings(3))
    assert pending.held("d") == pings(1, 2, 3)
    pending.forget("d")
    assert index == {} and chunks == {}
    index["e"] = b"\n".join(pings(5))
    pending.forget("e")
    assert index == {}


@pytest.mark.parametrize("device_id", ["plain", "with#hash", '["json"]', "a,1", "设备-7"])
def test_a_chunk_key_gives_back_its_device_whatever_the_id_holds(device_id: str) -> None:
    assert device_of(chunk_key(device_id, 12)) == device_id
    assert chunk_key(device_id, 1) != chunk_key(device_id, 2)

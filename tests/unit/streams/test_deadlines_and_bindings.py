from __future__ import annotations

import pytest

from rules.events import GpsPing
from rules.pipeline.deadlines import DeadlineIndex
from rules.pipeline.records import Binding
from services.simulator import mixed_stream
from streams.records import (
    Rejected,
    bound_records,
    decode,
    decode_bound,
    encode_bound,
)

pytestmark = pytest.mark.unit


def test_pop_due_returns_only_due_keys_of_owned_partitions_in_order() -> None:
    index = DeadlineIndex()
    index.schedule(0, "a", 30.0)
    index.schedule(0, "b", 10.0)
    index.schedule(1, "c", 5.0)
    index.schedule(0, "d", 99.0)
    assert index.pop_due({0}, now=30.0) == ["b", "a"]
    assert index.pop_due({0}, now=30.0) == []
    assert index.pop_due({0, 1}, now=30.0) == ["c"]
    assert len(index) == 1


def test_rescheduling_replaces_the_old_deadline() -> None:
    index = DeadlineIndex()
    index.schedule(0, "a", 10.0)
    index.schedule(0, "a", 50.0)
    assert index.pop_due({0}, now=20.0) == []
    assert index.pop_due({0}, now=50.0) == ["a"]
    index.schedule(0, "b", 10.0)
    index.schedule(0, "b", None)
    assert index.pop_due({0}, now=100.0) == []


def test_sweep_cost_follows_due_deadlines_not_keys_held() -> None:
    index = DeadlineIndex()
    for n in range(100_000):
        index.schedule(n % 4, f"loan{n}", 1_000.0 + n)
    # only the 10 due entries are popped; the rest stay untouched in the heaps
    assert len(index.pop_due({0, 1, 2, 3}, now=1_009.0)) == 10
    assert len(index) == 99_990


def test_dropped_partitions_are_forgotten() -> None:
    index = DeadlineIndex()
    index.schedule(2, "x", 1.0)
    index.drop_partitions({2})
    assert index.pop_due({2}, now=10.0) == []


BIND_OLD = Binding("L-old", bound=True, version=100)
CASES = [
    # (change, held now, applies)
    (Binding("L1", True, 5), None, True),
    (Binding("L1", False, 5), None, False),
    (Binding("L-new", True, 200), BIND_OLD, True),
    (Binding("L-new", True, 50), BIND_OLD, False),  # an older loan record loses
    (Binding("L-old", False, 150), BIND_OLD, True),
    (Binding("L-old", False, 50), BIND_OLD, False),
    (Binding("L-other", False, 500), BIND_OLD, False),  # only the holder releases
]


@pytest.mark.parametrize(("change", "held", "applies"), CASES)
def test_binding_supersedes(change: Binding, held: Binding | None, applies: bool) -> None:
    assert change.supersedes(held) is applies


def test_binding_round_trips() -> None:
    assert Binding.from_bytes(BIND_OLD.to_bytes()) == BIND_OLD


@pytest.mark.parametrize(
    ("value", "reason"),
    [(b"", "undecodable"), (b"{nope", "undecodable"), (b'{"event_id": "x"}', "invalid")],
)
def test_decode_rejects_with_reason(value: bytes, reason: str) -> None:
    rejected = decode("payments", value)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == reason


def test_state_cache_hits_only_for_the_exact_bytes_and_takes_entries_out() -> None:
    from streams.cache import StateCache

    cache: StateCache[dict[str, int]] = StateCache(capacity=2)
    state = {"n": 1}
    cache.put("L1", b"v1", state)
    assert cache.take("L1", b"v0") is None  # the table holds other bytes: decode those
    cache.put("L1", b"v1", state)
    assert cache.take("L1", b"v1") is state
    assert cache.take("L1", b"v1") is None  # taken out while in use
    cache.put("L1", b"v1", state)
    cache.put("L2", b"x", {})
    cache.put("L3", b"y", {})
    assert len(cache) == 2 and cache.take("L1", b"v1") is None  # least recently used evicted


def test_bound_pings_round_trip_with_their_arrival_and_a_bad_one_is_rejected_alone() -> None:
    pings = [v for topic, _, v in mixed_stream(5, 40) if topic == "gps.raw"][:3]
    entries = [("L1", pings[0], 1_700_000_000_123), ("L2", pings[1], 5), ("L1", pings[2], 7)]
    decoded = decode_bound(encode_bound(entries))
    assert [loan for loan, _, _ in decoded] == ["L1", "L2", "L1"]
    assert all(isinstance(p, GpsPing) for _, p, _ in decoded)
    assert [p.event_id for _, p, _ in decoded] == [  # type: ignore[union-attr]
        GpsPing.model_validate_json(raw).event_id for raw in pings
    ]
    # the gps.raw record's Kafka timestamp survives the re-keying, in seconds
    assert [arrival for _, _, arrival in decoded] == [1_700_000_000.123, 0.005, 0.007]
    bad = [("L1", pings[0], 1000), ("L3", b'{"device_id": "d"}', 2000)]
    first, second = decode_bound(encode_bound(bad))
    assert isinstance(first[1], GpsPing) and first[2] == 1.0
    assert second[0] == "L3" and second[2] == 2.0
    assert isinstance(second[1], Rejected)
    assert second[1].reason == "invalid"


def test_bound_records_written_before_arrivals_were_carried_still_decode() -> None:
    ping = next(v for topic, _, v in mixed_stream(5, 40) if topic == "gps.raw")
    [(loan, decoded, arrival)] = decode_bound(b'[["L1",' + ping + b"]]")
    assert loan == "L1" and isinstance(decoded, GpsPing) and arrival is None


def test_many_bound_pings_are_split_into_records_under_the_size_limit_in_order() -> None:
    pings = [v for topic, _, v in mixed_stream(20, 400) if topic == "gps.raw"]
    entries = [(f"L{n % 7}", raw, 1_765_000_000_000 + n) for n, raw in enumerate(pings)]
    limit = 4096
    records = list(bound_records(entries, max_bytes=limit))
    assert len(records) > 1
    assert all(len(r) <= limit + 2 for r in records)  # the outer brackets on top
    decoded = [item for r in records for item in decode_bound(r)]
    assert [(loan, p.event_id, a) for loan, p, a in decoded] == [  # type: ignore[union-attr]
        (loan, GpsPing.model_validate_json(raw).event_id, ms / 1000) for loan, raw, ms in entries
    ]
    assert list(bound_records(entries[:3])) == [encode_bound(entries[:3])]
    assert list(bound_records([])) == []

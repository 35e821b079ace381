"""The pipeline steps shared by the worker and the backtest (rules/pipeline), without a broker:
binding and release, the pending-ping cap, deadline order, place occupancy counts."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from rules.backtest import Backtest
from rules.pipeline import steps
from rules.pipeline.deadlines import DeadlineIndex
from rules.pipeline.pending import MAX_PENDING_PINGS_PER_DEVICE, PendingPings
from rules.pipeline.records import Binding, PlaceCount, PlaceMove
from tests.unit.rules.rules_factories import (
    USED_CAR_MARKET,
    at,
    fresh_engine,
    loan,
    ping,
    start,
)

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------------------ rebind

REBIND_CASES = [
    # (devices bound before, the loan record's devices, its status, changes, devices written)
    pytest.param(None, ["W1", "X1"], "active", [("W1", True), ("X1", True)], ["W1", "X1"],
                 id="new-loan-binds-its-devices"),
    pytest.param(["W1", "X1"], ["W1", "X1"], "active", [], None, id="unchanged-writes-nothing"),
    pytest.param(["W1", "X1"], ["W1", "X2"], "active", [("X1", False), ("X2", True)],
                 ["W1", "X2"], id="swapped-tracker-released-and-bound"),
    pytest.param(["W1", "X1"], ["W1", "X1"], "closed", [("W1", False), ("X1", False)], [],
                 id="closed-loan-releases-all"),
    pytest.param(["W1"], ["W1"], "charged_off", [("W1", False)], [], id="charged-off-releases"),
    pytest.param(None, ["W1"], "closed", [], None, id="closed-before-bound-binds-nothing"),
]  # fmt: skip


@pytest.mark.parametrize(("before", "devices", "status", "changes", "written"), REBIND_CASES)
def test_rebind(
    before: list[str] | None,
    devices: list[str],
    status: str,
    changes: list[tuple[str, bool]],
    written: list[str] | None,
) -> None:
    table: dict[str, bytes] = {} if before is None else {"L1": orjson.dumps(before)}
    record = loan("L1", devices=[(d, "wired") for d in devices], status=status)
    result = steps.rebind(table, record, version=7)
    assert [(d, c.bound) for d, c in result.changes] == changes
    assert all(c == Binding("L1", c.bound, 7) for _, c in result.changes)
    assert result.devices == (None if written is None else orjson.dumps(written))


# -------------------------------------------------------------------------------- bind

OLD = Binding("L-old", True, 100)
BIND_CASES = [
    # (binding held, change, binding after, forwarded to)
    pytest.param(None, Binding("L1", True, 5), Binding("L1", True, 5), "L1", id="bind-free"),
    pytest.param(None, Binding("L1", False, 5), None, None, id="release-free-is-noop"),
    pytest.param(OLD, Binding("L-new", True, 200), Binding("L-new", True, 200), "L-new",
                 id="newer-loan-takes-device"),
    pytest.param(OLD, Binding("L-new", True, 50), OLD, None, id="older-loan-record-loses"),
    pytest.param(OLD, Binding("L-old", False, 150), None, None, id="holder-releases"),
    pytest.param(OLD, Binding("L-old", False, 50), OLD, None, id="stale-release-ignored"),
    pytest.param(OLD, Binding("L-x", False, 500), OLD, None, id="only-holder-releases"),
]  # fmt: skip


@pytest.mark.parametrize(("held", "change", "after", "to"), BIND_CASES)
def test_bind(held: Binding | None, change: Binding, after: Binding | None, to: str | None) -> None:
    bindings: dict[str, bytes] = {} if held is None else {"D": held.to_bytes()}
    pending = PendingPings({}, {})
    pending.add("D", [b"p1", b"p2"])
    result = steps.bind(bindings, pending, "D", change, waiting=[b"p3"])
    stored = bindings.get("D")
    assert (Binding.from_bytes(stored) if stored else None) == after
    assert steps.loan_bound(bindings, "D") == (after.loan_id if after else None)
    if to is None:
        assert result is None
        assert pending.held("D") == [b"p1", b"p2"]  # kept for a binding to come
    else:
        assert result == steps.Bound(to, [b"p1", b"p2", b"p3"], forget=True)


def test_bind_without_pending_pings_has_nothing_to_forget() -> None:
    result = steps.bind({}, PendingPings({}, {}), "D", Binding("L1", True, 1), waiting=[b"p"])
    assert result == steps.Bound("L1", [b"p"], forget=False)


@pytest.mark.parametrize(
    ("kept", "waiting", "forwarded"),
    [
        (0, 0, 0),
        (10, 5, 15),
        (MAX_PENDING_PINGS_PER_DEVICE, 0, MAX_PENDING_PINGS_PER_DEVICE),
        (MAX_PENDING_PINGS_PER_DEVICE + 50, 0, MAX_PENDING_PINGS_PER_DEVICE),
        (150, 100, MAX_PENDING_PINGS_PER_DEVICE),
    ],
)
def test_pending_cap_forwards_only_the_newest(kept: int, waiting: int, forwarded: int) -> None:
    pending = PendingPings({}, {})
    stored = [b"%d" % n for n in range(kept)]
    batch = [b"%d" % n for n in range(kept, kept + waiting)]
    for n in range(0, kept, 7):  # several batches
        pending.add("D", stored[n : n + 7])
    assert len(pending.held("D")) == min(kept, MAX_PENDING_PINGS_PER_DEVICE)
    result = steps.bind({}, pending, "D", Binding("L1", True, 1), waiting=batch)
    assert result is not None
    assert result.pings == (stored + batch)[len(stored + batch) - forwarded :]


# --------------------------------------------------------------------------- deadlines


@pytest.mark.parametrize(
    ("schedules", "now", "due", "left"),
    [
        pytest.param([(0, "a", 30.0), (0, "b", 10.0), (0, "c", 20.0)], 25.0, ["b", "c"], 1,
                     id="deadline-order"),
        pytest.param([(0, "a", 10.0), (0, "a", 50.0)], 20.0, [], 1, id="moved-later-wakes-early"),
        pytest.param([(0, "a", 10.0), (0, "a", 50.0), (0, "b", 30.0)], 60.0, ["b", "a"], 0,
                     id="moved-later-pops-at-its-real-deadline"),
        pytest.param([(0, "a", 50.0), (0, "a", 10.0)], 20.0, ["a"], 0, id="moved-earlier"),
        pytest.param([(0, "a", 10.0), (0, "a", None)], 99.0, [], 0, id="unscheduled"),
        pytest.param([(0, "a", 10.0), (0, "a", None), (0, "a", 40.0)], 20.0, [], 1,
                     id="rescheduled-after-none"),
        pytest.param([(0, "a", 10.0), (1, "b", 5.0)], 99.0, ["a"], 1, id="owned-partitions-only"),
    ],
)  # fmt: skip
def test_deadline_order(
    schedules: list[tuple[int, str, float | None]], now: float, due: list[str], left: int
) -> None:
    index = DeadlineIndex()
    for partition, key, when in schedules:
        index.schedule(partition, key, when)
    assert index.pop_due({0}, now) == due
    assert index.pop_due({0}, now) == []  # a popped key is unscheduled
    assert len(index) == left


def test_deadline_limit_and_bounded_heap() -> None:
    index = DeadlineIndex()
    for n in range(5_000):  # every key moved earlier each round: stale entries pile up
        index.schedule(0, f"k{n % 100}", 10_000.0 - n)
        assert index.entries() <= 2 * len(index) + 1024
    assert index.pop_due({0}, now=1e9, limit=3) == ["k99", "k98", "k97"]
    assert len(index.pop_due({0}, now=1e9)) == 97


def test_schedule_follows_the_engine() -> None:
    engine, state = start()
    index = DeadlineIndex()
    steps.schedule(engine, index, 3, state)
    deadline = engine.next_deadline(state)
    assert deadline is not None
    assert index.pop_due({3}, deadline.timestamp() - 1) == []
    assert index.pop_due({3}, deadline.timestamp()) == ["L1"]


# --------------------------------------------------------------------------- occupancy

OCCUPANCY_CASES = [
    # (moves (place, loan, entered)), counts given (loan, place, count), stored after)
    pytest.param([("P", "A", True)], [("A", "P", 1)], {"P": ["A"]}, id="first-car"),
    pytest.param([("P", "A", True), ("P", "B", True)], [("A", "P", 2), ("B", "P", 2)],
                 {"P": ["A", "B"]}, id="two-cars-both-told"),
    pytest.param([("P", "A", True), ("P", "A", True)], [("A", "P", 1)], {"P": ["A"]},
                 id="redelivered-enter-counts-once"),
    pytest.param([("P", "A", True), ("P", "B", True), ("P", "A", False)], [("B", "P", 1)],
                 {"P": ["B"]}, id="leaver-not-told"),
    pytest.param([("P", "A", True), ("Q", "B", True)], [("A", "P", 1), ("B", "Q", 1)],
                 {"P": ["A"], "Q": ["B"]}, id="places-apart"),
    pytest.param([("P", "Z", False)], [], {"P": []}, id="leave-unknown"),
]  # fmt: skip


@pytest.mark.parametrize(("moves", "counts", "stored"), OCCUPANCY_CASES)
def test_place_counts(
    moves: list[tuple[str, str, bool]],
    counts: list[tuple[str, str, int]],
    stored: dict[str, list[str]],
) -> None:
    occupancy: dict[str, bytes] = {}
    counter = steps.PlaceCounter(occupancy)
    for place_id, loan_id, entered in moves:
        counter.move(place_id, PlaceMove(loan_id, entered, at=1.0))
    assert list(counter.counts()) == [(lo, PlaceCount(p, n)) for lo, p, n in counts]
    occupancy.update(counter.writes())
    assert {p: list(orjson.loads(v)) for p, v in occupancy.items()} == stored


def test_place_counts_carry_over_batches_and_reject_bad_storage() -> None:
    occupancy = {"P": orjson.dumps({"A": 1.0}), "BAD": b'{"A": "x"}'}
    counter = steps.PlaceCounter(occupancy)
    counter.move("P", PlaceMove("B", True, 2.0))
    assert list(counter.counts()) == [("A", PlaceCount("P", 2)), ("B", PlaceCount("P", 2))]
    with pytest.raises(ValueError, match="stored occupancy"):
        counter.move("BAD", PlaceMove("C", True, 2.0))


def test_place_moves_leave_before_enter() -> None:
    moves = list(steps.place_moves("L1", ("P", "Q", 5.0)))
    assert moves == [("P", PlaceMove("L1", False, 5.0)), ("Q", PlaceMove("L1", True, 5.0))]
    assert list(steps.place_moves("L1", (None, None, 5.0))) == []


# ---------------------------------------------------------------- evaluate and advance


def test_evaluate_reports_the_place_move_once_the_car_dwelt() -> None:
    engine, state = start()
    now = at(hours=1)
    first = steps.evaluate(engine, state, ping(now, USED_CAR_MARKET), now)
    assert first.move is None  # not a stay yet
    dwell = dt.timedelta(seconds=engine.config.occupancy_min_dwell_s)
    assert steps.advance(engine, state, now + dwell / 2).move is None  # still not
    later = now + dwell + dt.timedelta(minutes=10)
    effects = steps.advance(engine, state, later)
    assert effects.move is not None
    assert effects.move[:2] == (None, "cd-ucm-001")


# ---------------------------------------------------------------- the backtest on the steps


def hours(h: float) -> dt.datetime:
    return at(hours=h)


def test_backtest_releases_devices_of_closed_loans_and_moved_trackers() -> None:
    backtest = Backtest(fresh_engine(), lambda alert: None)
    backtest.feed(ping(hours(0), device="W1"))  # before the loan: kept
    assert backtest.unbound_pings() == 1
    backtest.feed(loan("L1", devices=[("W1", "wired")]))
    assert backtest.unbound_pings() == 0  # forwarded to L1 with its binding
    assert steps.loan_bound(backtest.bindings, "W1") == "L1"
    backtest.feed(ping(hours(1), device="W1"))
    # the tracker moves to L2, then L1 closes: W1 stays with L2
    backtest.feed(loan("L1", devices=[], status="active"))
    backtest.feed(loan("L2", devices=[("W1", "wired")]))
    backtest.feed(loan("L1", devices=[("W1", "wired")], status="closed"))
    assert steps.loan_bound(backtest.bindings, "W1") == "L2"
    backtest.feed(loan("L2", devices=[("W1", "wired")], status="closed"))
    assert steps.loan_bound(backtest.bindings, "W1") is None
    backtest.feed(ping(hours(2), device="W1"))  # no loan now: kept, not given to L1 or L2
    assert backtest.unbound_pings() == 1
    assert backtest.summary()["unbound_pings"] == 1


def test_backtest_caps_pending_pings() -> None:
    backtest = Backtest(fresh_engine(), lambda alert: None)
    for n in range(MAX_PENDING_PINGS_PER_DEVICE + 30):
        backtest.feed(ping(hours(n / 60), device="W1"))
    assert backtest.unbound_pings() == MAX_PENDING_PINGS_PER_DEVICE
    events_before = backtest.engine.stats["events"]
    backtest.feed(loan("L1", devices=[("W1", "wired")]))
    # the loan record and the newest pings (evaluated on the binding)
    assert backtest.engine.stats["events"] - events_before == 1 + MAX_PENDING_PINGS_PER_DEVICE

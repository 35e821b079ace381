"""The worker's clock holds any event time, and a quarantine marks keys without stopping anything
(issue 14, items 1 and 3)."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from prometheus_client import CollectorRegistry

from rules.clock import LATEST_TS, EngineClock
from services.ops import Heartbeat
from streams.app import out_of_bounds
from streams.health import worker_ready
from streams.metrics import WorkerMetrics
from streams.quarantine import Quarantine
from tests.unit.streams.test_health import FakeClock, faust_app

pytestmark = pytest.mark.unit

WALL = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()
YEAR_10000 = dt.datetime.fromisoformat("9999-12-31T23:59:59-14:00").timestamp()


def bound(event_ts: float, entered_ts: float | None) -> str | None:
    return out_of_bounds(event_ts, entered_ts, WALL, 86_400.0)


def test_a_far_future_event_time_is_out_of_bounds_and_named() -> None:
    why = bound(YEAR_10000, entered_ts=WALL)
    assert why is not None and "after the record entered Kafka (2026-03-01T00:00:00+00:00)" in why
    assert bound(WALL + 3600, entered_ts=WALL) is None
    assert bound(math.nan, entered_ts=WALL) == "event time nan is not a number"
    # a record timestamp set far ahead by its producer does not widen the bound: the wall clock
    assert bound(WALL + 10 * 86_400, entered_ts=YEAR_10000) is not None
    assert bound(WALL - 10 * 365 * 86_400, entered_ts=WALL) is None  # old: fine


@pytest.mark.parametrize("ts", [YEAR_10000, math.inf, math.nan, 1e300, -1e300])
def test_the_event_clock_stays_a_datetime_whatever_it_is_given(ts: float) -> None:
    clock = EngineClock("event", 0.0)
    clock.released(WALL)
    clock.released(ts)
    now = clock.record_now(WALL)
    assert dt.datetime.fromtimestamp(now, dt.UTC) == dt.datetime.fromtimestamp(WALL, dt.UTC)
    assert clock.sweep_now(WALL, caught_up=True) == WALL


def test_the_wall_clock_is_clamped_too() -> None:
    clock = EngineClock("wall", 0.0)
    assert clock.record_now(YEAR_10000) == LATEST_TS
    assert clock.sweep_now(YEAR_10000, caught_up=True) == LATEST_TS
    assert dt.datetime.fromtimestamp(clock.record_now(YEAR_10000), dt.UTC).year == 9999


def quarantine() -> tuple[Quarantine, WorkerMetrics]:
    metrics = WorkerMetrics.create(CollectorRegistry())
    return Quarantine(metrics.quarantined, metrics.quarantined_keys, capacity=3), metrics


def test_quarantine_marks_counts_and_stays_bounded() -> None:
    marks, metrics = quarantine()
    for n in range(5):
        marks.add(f"L{n}", "evaluate", "unencodable_state", "in_.0.3 is inf", at=float(n))
    assert len(marks) == 3 and "L0" not in marks and "L4" in marks
    assert metrics.quarantined.labels("evaluate", "unencodable_state")._value.get() == 5
    assert metrics.quarantined_keys._value.get() == 3
    assert marks.summary(show=2) == (
        "3 quarantined: L4 (unencodable_state in evaluate), "
        "L3 (unencodable_state in evaluate) and 1 more"
    )
    with pytest.raises(AssertionError):  # metric labels stay bounded
        marks.add("L9", "evaluate", "some new reason", "", at=0.0)


def test_a_worker_with_quarantined_loans_is_still_ready_and_names_them() -> None:
    marks, _ = quarantine()
    heartbeat = Heartbeat(60, FakeClock())
    heartbeat.beat()
    app = faust_app()
    check = worker_ready(app, heartbeat, marks)
    assert (check.ok, check.detail) == (True, "processing")
    marks.add("L-poison", "deadline_rebuild", "state_undecodable", "in_.0.3 is null", at=1.0)
    check = worker_ready(app, heartbeat, marks)
    assert check.ok
    assert (
        check.detail
        == "processing; 1 quarantined: L-poison (state_undecodable in deadline_rebuild)"
    )

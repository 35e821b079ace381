"""Cross-loan occupancy counts a car at a risk place only after it dwelt there (defect 3 of
issue 12): a car driving past never counts; a parked car's count does not flap."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.backtest import run_backtest
from rules.engine import InputEvent
from rules.events import AlertStatus, GpsPing
from tests.unit.rules.rules_factories import (
    HOME,
    USED_CAR_MARKET,
    at,
    fresh_engine,
    loan,
    ping,
    start,
)

pytestmark = pytest.mark.unit

LOT = "cd-ucm-001"  # USED_CAR_MARKET, radius 400 m
BEYOND = (USED_CAR_MARKET[0] + 0.02, USED_CAR_MARKET[1])  # ~2.2 km away


def place_after_each(events: list[GpsPing], until: dt.datetime) -> list[str | None]:
    """Engine.place_of after each event and at ``until`` (deadlines run)."""
    engine, state = start()
    out: list[str | None] = []
    for event in events:
        engine.apply(state, event, event.ts)
        out.append(engine.place_of(state))
    engine.advance(state, until)
    out.append(engine.place_of(state))
    return out


def minutes(*stops: tuple[float, tuple[float, float]]) -> list[GpsPing]:
    return [ping(at(minutes=m), where) for m, where in stops]


@pytest.mark.parametrize(
    ("events", "until_min", "expected"),
    [
        pytest.param(minutes((0, HOME), (60, USED_CAR_MARKET), (61, BEYOND)), 120,
                     [None, None, None, None], id="drive-past-one-minute"),
        pytest.param(minutes((0, HOME), (60, USED_CAR_MARKET), (75, USED_CAR_MARKET)), 79,
                     [None, None, None, None], id="fifteen-minutes-is-not-a-stay"),
        # No ping needed at minute 80: the dwell ending is a deadline.
        pytest.param(minutes((0, HOME), (60, USED_CAR_MARKET), (75, USED_CAR_MARKET)), 81,
                     [None, None, None, LOT], id="counted-after-20-minutes"),
        # Parked, a glitch away and back within the grace: still counted, the same stay.
        pytest.param(minutes((0, HOME), (60, USED_CAR_MARKET), (90, BEYOND),
                             (95, USED_CAR_MARKET)), 96,
                     [None, None, LOT, LOT, LOT], id="glitch-within-grace"),
        # Gone for good: counted for the grace, then not.
        pytest.param(minutes((0, HOME), (60, USED_CAR_MARKET), (90, BEYOND)), 106,
                     [None, None, LOT, None], id="left-after-grace"),
    ],
)  # fmt: skip
def test_place_of_requires_dwell(
    events: list[GpsPing], until_min: float, expected: list[str | None]
) -> None:
    assert place_after_each(events, at(minutes=until_min)) == expected


@settings(max_examples=60, deadline=None)
@given(
    inside=st.lists(st.floats(0, 17.9), min_size=1, max_size=20),
    after=st.floats(20.5, 600),
)
def test_a_pass_through_shorter_than_the_dwell_never_counts(
    inside: list[float], after: float
) -> None:
    """Pings inside the lot's radius, the first fix outside less than the dwell after the first
    fix inside: place_of is never the lot (after every event and every deadline between)."""
    offsets = sorted(set(inside))
    events = [ping(at(0), HOME)]
    events += [ping(at(1, minutes=m), USED_CAR_MARKET) for m in offsets]
    events.append(ping(at(1, minutes=offsets[-1] + 2), BEYOND))  # 2.2 km in 2 min
    engine, state = start()
    for event in events:
        engine.apply(state, event, event.ts)
        assert engine.place_of(state) is None
    for step in range(1, 40):
        engine.advance(state, at(1, minutes=offsets[-1] + step * after / 40))
        assert engine.place_of(state) is None


def test_parked_cars_cluster_warning_does_not_flap_as_cars_drive_past() -> None:
    """Three cars parked at the lot for hours; two others drive through it every 30 min. The
    parked cars' cluster warning fires once each and never resolves; the passers-by never
    get it."""
    parked, passing = ["P1", "P2", "P3"], ["D1", "D2"]
    events: list[InputEvent] = []
    for loan_id in parked + passing:
        events.append(loan(loan_id, devices=((f"{loan_id}-W", "wired"),)))
    timeline: list[GpsPing] = []
    for minute in range(0, 360, 10):
        for loan_id in parked:
            timeline.append(ping(at(minutes=minute), USED_CAR_MARKET, device=f"{loan_id}-W"))
    for minute in range(15, 360, 30):
        for loan_id in passing:
            timeline.append(ping(at(minutes=minute), USED_CAR_MARKET, device=f"{loan_id}-W"))
            timeline.append(ping(at(minutes=minute + 2), BEYOND, device=f"{loan_id}-W"))
    events += sorted(timeline, key=lambda e: e.ts)
    result = run_backtest(events, fresh_engine())
    cluster = [a for a in result.alerts if a.rule_id == "financed-cars-cluster-at-lot"]
    assert sorted(a.loan_id for a in cluster if a.status is AlertStatus.FIRING) == parked
    assert not [a for a in cluster if a.status is AlertStatus.RESOLVED]

"""Resident points (常驻点, issue 12): where a car usually parks by night and by day, learned
per loan, bounded in the state, shown in evidence, and used by a rule."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.events import GpsPing
from rules.signals.vehicle import night_seconds
from tests.unit.rules.rules_factories import (
    CST,
    FIRST_OVERDUE_H,
    HOME,
    at,
    contact,
    firing,
    open_alerts,
    ping,
    run,
    start,
)

pytestmark = pytest.mark.unit

OFFICE = (HOME[0] + 0.03, HOME[1] + 0.03)  # ~4 km away, inside the home region
FRIEND = (HOME[0] - 0.05, HOME[1] + 0.05)  # ~7 km away, inside the home region
RULE = "away-from-resident-points-overdue"


def local(day: int, hour: float) -> dt.datetime:
    return dt.datetime(2024, 3, day, tzinfo=CST) + dt.timedelta(hours=hour)


@pytest.mark.parametrize(
    ("start_", "end", "hours"),
    [
        pytest.param(local(2, 20), local(3, 8), 8, id="evening-to-morning"),
        pytest.param(local(2, 9), local(2, 17), 0, id="office-hours"),
        pytest.param(local(2, 23), local(3, 5), 6, id="inside-the-night"),
        pytest.param(local(2, 12), local(4, 12), 16, id="two-whole-days"),
        pytest.param(local(2, 5), local(2, 23), 2, id="morning-and-evening-edges"),
    ],
)
def test_night_seconds(start_: dt.datetime, end: dt.datetime, hours: float) -> None:
    assert night_seconds(start_.timestamp(), end.timestamp(), "Asia/Shanghai") == hours * 3600


def parked(
    where: tuple[float, float], first: dt.datetime, last: dt.datetime, minutes: float = 60
) -> list[GpsPing]:
    out, t = [], first
    while t <= last:
        out.append(ping(t, where))
        t += dt.timedelta(minutes=minutes)
    return out


def routine(days: range) -> list[GpsPing]:
    """Home 19:00-08:00, office 09:00-18:00, every day of ``days`` (March 2024)."""
    out: list[GpsPing] = []
    for day in days:
        out += parked(HOME, local(day, -5), local(day, 8))
        out += parked(OFFICE, local(day, 9), local(day, 18))
    return out


def test_home_by_night_and_office_by_day_are_learned() -> None:
    engine, state = start()
    run(engine, state, [*routine(range(1, 5)), ping(local(4, 20), HOME)])
    points = {(p["lat"], p["lon"]): p for p in engine.resident_points(state)}
    home, office = points[HOME], points[OFFICE]
    assert home["kind"] == "night" and home["night_hours"] >= 24
    assert office["kind"] == "day" and office["night_hours"] == 0 and office["day_hours"] >= 27
    assert engine.signals(state, local(4, 20))["vehicle.resident_points"] == 2
    assert len(state.to_bytes()) < 1200


def away_after_routine(extra: list[object]) -> tuple[set[str], set[str], object, object]:
    """Routine 1-4 March, then overdue from 6 March 00:00 and parked at a friend's from
    5 March 09:00 on (in region, so no out-of-region rule)."""
    engine, state = start()
    events = [*routine(range(1, 5)), *parked(HOME, local(4, 19), local(5, 8))]
    events += parked(FRIEND, local(5, 9), local(9, 12))
    events += extra  # type: ignore[arg-type]
    events.sort(key=lambda e: e.ts)  # type: ignore[attr-defined]
    alerts = run(engine, state, events, until=local(9, 12))
    return firing(alerts), open_alerts(state), engine, state


def test_a_point_not_parked_at_for_30_days_is_forgotten() -> None:
    engine, state = start()
    events = [*routine(range(1, 5)), *parked(FRIEND, local(5, 9), local(5, 20))]
    events += parked((30.5, 104.2), local(6, 9), local(6, 20))  # learning again 1 day later
    run(engine, state, events)
    assert any(abs(p[0] - HOME[0]) < 1e-6 for p in state.usual)
    events = parked((30.55, 104.25), local(7, 9), local(7, 9) + dt.timedelta(days=31))
    events.append(ping(local(7, 10) + dt.timedelta(days=31), FRIEND))
    run(engine, state, events)
    assert not any(abs(p[0] - HOME[0]) < 1e-6 for p in state.usual)
    assert [p["lat"] for p in engine.resident_points(state)] == [30.55]


def test_not_seen_at_a_resident_point_for_3_days_while_overdue_warns() -> None:
    assert at(FIRST_OVERDUE_H) == local(6, 0)
    fired, _, engine, state = away_after_routine([])
    assert RULE in fired
    signals = engine.signals(state, local(9, 12))  # type: ignore[attr-defined]
    assert signals["vehicle.away_from_resident_for"] == pytest.approx(
        (4 * 24 + 3) * 3600
    )  # since 5 March 09:00


def test_and_critical_once_the_borrower_is_unreachable() -> None:
    calls = [contact(local(8, 10 + n), "powered_off") for n in range(4)]
    _, still_open, _, state = away_after_routine(calls)
    assert RULE in still_open
    assert state.alerts[RULE].severity == "critical"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "events",
    [
        pytest.param(routine(range(1, 10)), id="home-every-night"),
        pytest.param(parked(FRIEND, local(1, 9), local(9, 12)), id="nothing-learned-yet"),
    ],
)
def test_no_warning_while_the_car_keeps_its_routine_or_has_none(events: list[GpsPing]) -> None:
    engine, state = start()
    assert RULE not in firing(run(engine, state, events, until=local(9, 12)))


@settings(max_examples=40, deadline=None)
@given(
    stays=st.lists(
        st.tuples(st.sampled_from([HOME, OFFICE, FRIEND, (30.5, 104.2), (30.8, 103.9)]),
                  st.floats(0.5, 40)),
        min_size=1, max_size=30,
    )
)  # fmt: skip
def test_resident_points_stay_bounded_and_consistent(
    stays: list[tuple[tuple[float, float], float]],
) -> None:
    engine, state = start()
    events, t = [], at(0)
    for where, hours in stays:
        events += parked(where, t, t + dt.timedelta(hours=hours))
        t += dt.timedelta(hours=hours + 1)
    run(engine, state, events)
    assert len(state.usual) <= engine.config.usual_places_kept
    for _lat, _lon, total, night, _last in state.usual:
        assert 0 <= night <= total
    for point in engine.resident_points(state):
        assert point["parked_hours"] >= engine.config.usual_after_s / 3600


def test_leaving_a_stay_that_made_its_point_resident_resolves_at_once() -> None:
    """The failing shape of the gating bug (issue 12, the 2.5 h late resolve of seed 7): the
    car, away from its resident points while overdue, stays 30 h at a new place and leaves.
    That stay makes the place a resident point, so the car was last seen at one when it left:
    vehicle.away_from_resident_for drops to 0 on the leaving ping, which must mark the loan for
    evaluation (keep_firing_for 1h: the resolve is due 1 h later, not at the next day's
    payment deadline or the next silence)."""
    engine, state = start()
    elsewhere = [(30.60, 104.00), (30.72, 104.15), (30.70, 103.98), (30.58, 104.12)]
    events = [*routine(range(1, 5)), *parked(HOME, local(4, 19), local(5, 8))]
    # a wired tracker parked reports every 20 min (an hour's silence would be news to
    # devices.wired_left_behind_km: every ping would be evaluated)
    events += parked(FRIEND, local(5, 9), local(5, 20), 20)
    # stays shorter than usual_after_s (24 h): none makes its place resident
    events += parked(elsewhere[0], local(5, 21), local(6, 18), 20)
    events += parked(elsewhere[1], local(6, 19), local(7, 16), 20)
    events += parked(elsewhere[2], local(7, 17), local(8, 9), 20)
    events += parked(elsewhere[3], local(8, 10), local(9, 16), 20)  # 30 h: resident on leaving
    left = local(9, 16) + dt.timedelta(minutes=20)  # 20 min on: no silence on the way
    events += parked(FRIEND, left, local(10, 12), 20)
    alerts = run(engine, state, events, until=local(10, 12))
    ours = [a for a in alerts if a.rule_id == RULE]
    assert [a.status.value for a in ours] == ["firing", "resolved"]
    fired_at = ours[0].updated_at  # 72 h after it left home (5 March 09:00)
    assert local(8, 9) <= fired_at <= local(8, 9) + dt.timedelta(seconds=1)
    resolved_at = ours[1].updated_at
    assert left + dt.timedelta(hours=1) <= resolved_at <= left + dt.timedelta(hours=1, seconds=1)

"""The loan status the worker publishes for the view: built from the engine's signals and
resident points; throttled (signals at once, growing hours at most every refresh_s)."""

from __future__ import annotations

import datetime as dt

import pytest

from rules.engine import Engine
from services.loan_status import (
    LoanStatus,
    Parts,
    StatusThrottle,
    build_status,
    loan_status,
    status_parts,
)
from tests.scenarios import CHENGDU, at, contact, loan, ping

pytestmark = pytest.mark.unit


def parked_state(engine: Engine, days: int, due: str = "2026-03-01") -> tuple[object, list[Parts]]:
    """A loan overdue since 03-01; the car at home (2 km east of the centre) 19:00-08:00 and at
    an office (6 km east) 09:00-18:00, a ping an hour, from 03-02 on; its status after each."""
    state = engine.new_state("L1")
    engine.apply(state, loan("L1", due=due), at(1, 17))
    out = []
    n = 0
    for day in range(days):
        for start, hours, east in ((at(1, 19), 13, 2.0), (at(2, 9), 9, 6.0)):
            for hour in range(hours + 1):
                when = start + dt.timedelta(days=day, hours=hour)
                engine.apply(state, ping("L1-w", when, east, n, speed_kmh=0.0), when)
                out.append(status_parts(engine, state))
                n += 1
    return state, out


def status(parts: Parts) -> LoanStatus:
    return build_status("L1", 0.0, parts)


def test_status_carries_signals_and_resident_points() -> None:
    engine = Engine.default()
    state, parts = parked_state(engine, 4)
    first, last = status(parts[0]), loan_status(engine, state)  # type: ignore[arg-type]
    assert first.signals.days_past_due == 0 and not first.signals.overdue
    assert last.signals.overdue and last.signals.days_past_due >= 1
    assert not last.signals.out_of_region and not last.signals.at_risk_place
    assert first.resident_points == []  # nothing learned before 24 h parked
    kinds = {p.kind: p for p in last.resident_points}
    assert set(kinds) == {"night", "day"}
    assert kinds["night"].parked_hours >= 24 and kinds["day"].parked_hours >= 18
    assert abs(kinds["night"].lat - CHENGDU[0]) < 0.01
    assert last.signals.risk_score == engine.risk(state).score  # type: ignore[arg-type]
    assert last.as_of == at(5, 18)
    assert status(parts[-1]).resident_points == last.resident_points
    for n in range(3):
        when = at(5, 18) + dt.timedelta(minutes=n + 1)
        engine.apply(state, contact("L1", when, "no_answer", n), when)  # type: ignore[arg-type]
    assert loan_status(engine, state).signals.unreachable  # type: ignore[arg-type]
    assert last.flags() == {"overdue"}
    assert [p.kind for p in loan_status(engine, state).resident_points] == [  # type: ignore[arg-type]
        p.kind for p in last.resident_points
    ]


def test_throttle_sends_signal_changes_at_once_and_hours_every_refresh() -> None:
    engine = Engine.default()
    _, statuses = parked_state(engine, 4, due="2026-03-25")  # not overdue: the signals hold
    throttle = StatusThrottle(refresh_s=600)
    assert throttle.due("L1", statuses[0], wall=0.0)
    assert not throttle.due("L1", statuses[1], wall=1.0)  # the same signals, no point yet
    learned = next(n for n, (_, points) in enumerate(statuses) if points)
    assert throttle.due("L1", statuses[learned], wall=2.0)  # a resident point appeared: at once

    def where(parts: Parts) -> list[tuple[float, float, str]]:
        return [(p["lat"], p["lon"], p["kind"]) for p in parts[1]]

    # The next status whose points differ only in the hours parked there.
    grown = next(
        s
        for s in statuses[learned + 1 :]
        if s[1] != statuses[learned][1]
        and where(s) == where(statuses[learned])
        and s[0] == statuses[learned][0]
    )
    assert not throttle.due("L1", grown, wall=3.0)  # only the hours grew
    assert throttle.due("L1", grown, wall=700.0)  # ...sent after refresh_s
    assert not throttle.due("L1", grown, wall=2000.0)  # nothing new at all
    changed = ((True, *grown[0][1:]), grown[1])  # out of region now
    assert throttle.due("L1", changed, wall=2001.0)


def test_throttle_forgets_the_oldest_loans() -> None:
    engine = Engine.default()
    _, statuses = parked_state(engine, 1)
    throttle = StatusThrottle(remember=2)
    for n in range(3):
        assert throttle.due(f"L{n}", statuses[0], wall=0.0)
    assert not throttle.due("L2", statuses[0], wall=1.0)
    assert throttle.due("L0", statuses[0], wall=1.0)  # forgotten: sent again

"""A wireless tracker that misses its own report time (issue 12, round 4: wireless-only
`skip_offline_out_of_region` skips caught only at the 48 h wireless offline threshold, a day or
more after the first failed call). `device.wireless_overdue` and the critical
`wireless-overdue-away-unanswered`. Tables from the failing shape (a wireless-only car reports
from another city, then nothing; a call fails) and its near misses; a property for the
invariant: a tracker that keeps its schedule, with the jitter and coverage retries real ones
show, is never overdue."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.events import AlertStatus
from rules.state import LoanState
from tests.unit.rules.rules_factories import HOME, at, contact, ping, run, start

pytestmark = pytest.mark.unit

RULE = "wireless-overdue-away-unanswered"
AWAY = (31.50, 104.07)  # ~93 km north of HOME: outside the 30 km home region
WIRELESS_ONLY = (("X1", "wireless"),)
BOTH = (("W1", "wired"), ("X1", "wireless"))


def report(hours: float, where: tuple[float, float] = HOME) -> Any:
    return ping(at(hours), where, device="X1", kind="wireless", speed_kmh=0.0)


def schedule(
    first_h: float, last_h: float, hours_of_day: tuple[float, ...] = (0.0, 12.0)
) -> list[float]:
    """Report times (hours from at(0), which is 09:00 local) in [first_h, last_h]: one per
    ``hours_of_day`` offset (hours after 09:00) per day."""
    out = []
    day = 0
    while 24 * day <= last_h:
        out += [24 * day + h for h in hours_of_day if first_h <= 24 * day + h <= last_h]
        day += 1
    return sorted(out)


def lived(until_h: float = 108.0) -> list[Any]:
    """Days at home, a report at 09:00 and 21:00 (both times in the schedule from their 5th
    report: 09:00 at 96 h, 21:00 at 108 h)."""
    return [report(h) for h in schedule(0, until_h)]


def fires(
    events: list[Any], until_h: float, devices: tuple[tuple[str, str], ...] = WIRELESS_ONLY
) -> float | None:
    engine, state = start(devices=devices)
    alerts = [a for a in run(engine, state, events, until=at(until_h)) if a.rule_id == RULE]
    first = next((a for a in alerts if a.status is AlertStatus.FIRING), None)
    if first is None:
        return None
    return round((first.updated_at - at(0)).total_seconds() / 3600, 2)


def by_time(*groups: Any) -> list[Any]:
    events = [e for g in groups for e in (g if isinstance(g, list) else [g])]
    return sorted(events, key=lambda e: e.ts)


@pytest.mark.parametrize(
    ("events", "until_h", "fires_at_h"),
    [
        # The failing shape: the 21:00 report at 108 h shows the car in another city, the 09:00
        # one (120 h) never comes, the first failed call at 122 h. Before: nothing until 48 h
        # of silence (device.all_offline, `offline-day-out-of-region`).
        pytest.param(
            by_time(lived(96), report(108, AWAY), contact(at(122), "no_answer")),
            130,
            122.0,
            id="away-missed-report-then-call-fails",
        ),
        # The call failed before the report was due: fires once it is 90 min overdue.
        pytest.param(
            by_time(lived(96), report(108, AWAY), contact(at(115), "powered_off")),
            130,
            121.5,
            id="call-fails-first-then-report-overdue",
        ),
        # The 09:00 wake-up was retried 30 min late and came through: overdue only after the
        # 21:00 one (132 h) is missed too.
        pytest.param(
            by_time(
                lived(96), report(108, AWAY), report(120.5, AWAY), contact(at(122), "no_answer")
            ),
            140,
            133.5,
            id="retried-report-then-silence",
        ),
        # Near misses.
        pytest.param(  # one report lost to coverage; the borrower answers
            by_time(
                lived(96),
                report(108, AWAY),
                contact(at(121), "no_answer"),
                contact(at(121.3), "reached"),
                report(132, AWAY),
            ),
            140,
            None,
            id="lost-report-borrower-answers",
        ),
        pytest.param(  # the report missed at home: the car is not away
            by_time(lived(108), contact(at(122), "no_answer")),
            130,
            None,
            id="missed-at-home",
        ),
        pytest.param(  # a schedule not learned yet (three reports a time): nothing to miss
            by_time(
                [report(h) for h in schedule(0, 36)], report(48, AWAY), contact(at(62), "busy")
            ),
            70,
            None,
            id="schedule-not-learned",
        ),
    ],
)
def test_wireless_overdue_away_unanswered(
    events: list[Any], until_h: float, fires_at_h: float | None
) -> None:
    assert fires(events, until_h) == fires_at_h


def test_a_car_with_a_wired_tracker_is_judged_on_it() -> None:
    """The same silence of the wireless tracker beside a wired one that keeps reporting is not
    this rule's business (the wired tracker shows the car)."""
    wired = [
        ping(at(minutes=m), HOME if m < 100 * 60 else AWAY, speed_kmh=0.0)
        for m in range(0, 130 * 60, 20)
    ]
    events = by_time(wired, lived(96), report(108, AWAY), contact(at(122), "no_answer"))
    assert fires(events, 130, devices=BOTH) is None


def signals_at(events: list[Any], hours: list[float]) -> list[bool]:
    """device.wireless_overdue at each of ``hours`` (ascending), given the events up to then."""
    engine, state = start(devices=WIRELESS_ONLY)
    pending = sorted(events, key=lambda e: e.ts)
    out = []
    for h in hours:
        due = [e for e in pending if e.ts <= at(h)]
        pending = pending[len(due) :]
        run(engine, state, due)
        out.append(engine.signals(state, at(h))["device.wireless_overdue"])
    return out


def test_overdue_turns_on_at_the_margin_and_off_with_the_next_report() -> None:
    events = lived()  # the last report at 108 h (21:00): 09:00 (120 h) is next
    assert signals_at(events, [108.0, 121.0, 121.49, 121.51, 125.0]) == [
        False,
        False,
        False,
        True,
        True,
    ]
    retried = [*events, report(121.0)]  # 09:00 retried an hour late: 21:00 (132 h) is next
    assert signals_at(retried, [121.0, 133.49, 133.51]) == [False, False, True]


def test_a_reconfigured_schedule_is_followed() -> None:
    """After ten days at 09:00 and 21:00 the tracker reports once a day at 15:00 from 246 h:
    overdue at the first old time it misses, never again once the old times have left the
    schedule and the new one has joined it (its 5th report, 342 h)."""
    events = [*lived(240), *[report(h) for h in schedule(246, 24 * 16, (6.0,))]]
    assert signals_at(events, [246.5, 253.49, 253.51]) == [False, False, True]
    assert not any(signals_at(events, [342.5 + k for k in range(0, 24 * 2)]))


def test_schedule_survives_storage() -> None:
    engine, state = start(devices=WIRELESS_ONLY)
    run(engine, state, lived())
    restored = LoanState.from_bytes(state.to_bytes())
    assert restored.devices["X1"].slots == state.devices["X1"].slots
    assert engine.signals(restored, at(121.49))["device.wireless_overdue"] is False
    assert engine.signals(restored, at(121.51))["device.wireless_overdue"] is True


@settings(max_examples=40, deadline=None)
@given(
    hours_of_day=st.lists(
        st.sampled_from((0.0, 1.5, 3.0, 6.0, 10.0, 12.5)), min_size=1, max_size=3, unique=True
    ),
    seed=st.integers(0, 2**16),
)
def test_a_tracker_that_keeps_its_schedule_is_never_overdue(
    hours_of_day: list[float], seed: int
) -> None:
    """Ten days of reports at the configured times, each ±10 min, some retried up to 40 min
    late: device.wireless_overdue never turns on, checked every 20 min."""
    import random

    rng = random.Random(seed)
    times = []
    for h in schedule(0, 240, tuple(sorted(hours_of_day))):
        late = rng.uniform(5, 40) / 60 if rng.random() < 0.1 else 0.0
        times.append(h + rng.uniform(-10, 10) / 60 + late)
    events = [report(h) for h in sorted(max(0.0, t) for t in times)]
    checks = [k / 3 for k in range(0, 3 * 240)]
    assert not any(signals_at(events, checks))


def test_off_schedule_reports_do_not_pile_up_in_the_state() -> None:
    """Ten days at 09:00 and 21:00 with an off-schedule report (an alarm, a retry) every day
    at a different time: the state keeps the two scheduled slots and only the strays of the last
    2 days, and the schedule still holds."""
    strays = [24 * d + 3 + 1.3 * d for d in range(10)]  # 12:00, 13:18, ... never the same slot
    events = sorted([*lived(240), *(report(h) for h in strays)], key=lambda e: e.ts)
    engine, state = start(devices=WIRELESS_ONLY)
    run(engine, state, events)
    slots = state.devices["X1"].slots
    assert slots is not None
    assert len(slots) <= 2 + 3
    assert engine.signals(state, at(240 + 13.49))["device.wireless_overdue"] is False
    assert engine.signals(state, at(240 + 13.51))["device.wireless_overdue"] is True

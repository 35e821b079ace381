"""`contact.recent_failures`: failures of the current streak made in the last 3 days (issue 12,
round 4). Rules that take "the borrower does not answer" as corroboration of a tracker or
vehicle anomaly (`wired-overdue-unanswered`, `wired-left-behind-unanswered`, the 2 h branch of
`wired-silent-away`, `risk-place-stay-unanswered`, `wireless-overdue-away-unanswered`) read it;
before, they read `contact.consecutive_failures >= 1`, and a reminder call missed weeks earlier
counted until someone was reached. `consecutive_failures` itself keeps DESIGN's meaning
(failures since the last reached / promise_to_pay, however far apart)."""

from __future__ import annotations

from typing import Any

import pytest

from rules.events import AlertStatus
from tests.unit.rules.rules_factories import at, contact, run, start
from tests.unit.rules.test_wired_overdue import WIRED_ONLY, by_time, lived_in

pytestmark = pytest.mark.unit


def signals(events: list[Any], hours: float) -> dict[str, Any]:
    engine, state = start()
    run(engine, state, events)
    return engine.signals(state, at(hours))


def test_recent_failures_count_the_last_three_days_of_the_streak() -> None:
    events = [contact(at(10), "no_answer"), contact(at(20), "powered_off", party="guarantor")]
    assert signals(events, 20)["contact.recent_failures"] == 2
    assert signals(events, 10 + 71.9)["contact.recent_failures"] == 2
    assert signals(events, 10 + 72.1)["contact.recent_failures"] == 1
    late = signals(events, 20 + 72.1)
    assert late["contact.recent_failures"] == 0
    # The streak itself is DESIGN's: failures since the last reach, however old.
    assert late["contact.consecutive_failures"] == 2
    assert late["contact.parties_failed"] == 2


def test_a_reach_clears_recent_failures() -> None:
    events = [contact(at(0), "no_answer"), contact(at(1), "reached"), contact(at(2), "busy")]
    assert signals(events, 3)["contact.recent_failures"] == 1
    assert signals(events, 3)["contact.consecutive_failures"] == 1


def test_failures_days_apart_are_still_consecutive() -> None:
    events = [contact(at(h), "no_answer") for h in (0, 100, 200)]
    now = signals(events, 201)
    assert now["contact.consecutive_failures"] == 3
    assert now["contact.recent_failures"] == 1


def wired_overdue_alerts(call_h: float, until_h: float) -> list[Any]:
    """Home a resident point, the wired tracker silent from 119:40 (overdue at 120:40); one
    failed call at ``call_h`` and none since; nothing falls due (the rule's payment branch)."""
    engine, state = start(devices=WIRED_ONLY, installments=0)
    events = by_time(lived_in(home_until_h=120.0), contact(at(call_h), "no_answer"))
    alerts = run(engine, state, events, until=at(until_h))
    return [a for a in alerts if a.rule_id == "wired-overdue-unanswered"]


def test_a_reminder_missed_days_before_does_not_corroborate_a_silent_tracker() -> None:
    assert wired_overdue_alerts(call_h=36, until_h=130) == []  # 84 h before


def test_a_recent_failure_corroborates_and_its_expiry_resolves_by_deadline() -> None:
    alerts = wired_overdue_alerts(call_h=60, until_h=140)  # 60 h before the silence
    assert [a.status for a in alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    fired, resolved = (round((a.updated_at - at(0)).total_seconds() / 3600, 2) for a in alerts)
    assert fired == pytest.approx(120.67, abs=0.01)
    assert resolved == pytest.approx(132.0, abs=0.01)  # 72 h after the call, no event needed

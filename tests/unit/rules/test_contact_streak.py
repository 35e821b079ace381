"""A failure streak lapses after 3 days without a failed attempt (issue 12, round 4). Rules that
take "the borrower's latest attempt failed" as corroboration of a tracker or vehicle anomaly
(`wired-overdue-unanswered`, `wired-left-behind-unanswered`, `wired-silent-away`,
`risk-place-stay-unanswered`, `wireless-overdue-away-unanswered`) read the streak; before, a
reminder call missed weeks earlier counted for ever, until someone was reached."""

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


def test_a_streak_lapses_three_days_after_its_newest_failure() -> None:
    events = [contact(at(10), "no_answer"), contact(at(20), "powered_off", party="guarantor")]
    held = signals(events, 20 + 71.9)
    assert held["contact.consecutive_failures"] == 2
    assert held["contact.parties_failed"] == 2
    assert held["contact.unreachable_for"] == pytest.approx(81.9 * 3600)
    lapsed = signals(events, 20 + 72.1)
    assert lapsed["contact.consecutive_failures"] == 0
    assert lapsed["contact.parties_failed"] == 0
    assert lapsed["contact.unreachable_for"] == 0


def test_a_gap_longer_than_three_days_starts_a_new_streak() -> None:
    events = [contact(at(0), "no_answer"), contact(at(80), "busy"), contact(at(90), "no_answer")]
    now = signals(events, 91)
    assert now["contact.consecutive_failures"] == 2
    assert now["contact.unreachable_for"] == pytest.approx(11 * 3600)


def test_a_dead_line_run_lapses_too() -> None:
    events = [contact(at(h), "powered_off") for h in (0, 24, 48)]
    assert signals(events, 48 + 71.9)["contact.unreachable_line"] == 3
    assert signals(events, 48 + 72.1)["contact.unreachable_line"] == 0
    gap = [contact(at(0), "suspended"), contact(at(100), "powered_off")]
    assert signals(gap, 101)["contact.unreachable_line"] == 1


def wired_overdue_alerts(call_h: float, until_h: float) -> list[Any]:
    """Home a resident point, the wired tracker silent from 119:40 (overdue at 120:40); one
    failed call at ``call_h`` and none since; nothing falls due (the rule's payment branch)."""
    engine, state = start(devices=WIRED_ONLY, installments=0)
    events = by_time(lived_in(home_until_h=120.0), contact(at(call_h), "no_answer"))
    alerts = run(engine, state, events, until=at(until_h))
    return [a for a in alerts if a.rule_id == "wired-overdue-unanswered"]


def test_a_reminder_missed_days_before_does_not_corroborate_a_silent_tracker() -> None:
    assert wired_overdue_alerts(call_h=36, until_h=130) == []  # 84 h before: lapsed


def test_a_recent_failure_corroborates_and_its_lapse_resolves_by_deadline() -> None:
    alerts = wired_overdue_alerts(call_h=60, until_h=140)  # 60 h before the silence
    assert [a.status for a in alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    fired, resolved = (round((a.updated_at - at(0)).total_seconds() / 3600, 2) for a in alerts)
    assert fired == pytest.approx(120.67, abs=0.01)
    assert resolved == pytest.approx(132.0, abs=0.01)  # 72 h after the call, no event needed

"""Alert decisions: fire once, hold without duplicates, resolve; ids; inhibition; escalation;
evidence; restart."""

from __future__ import annotations

from typing import Any

import pytest

from rules.events import AlertEvent, AlertStatus, Severity
from rules.state import LoanState
from tests.unit.rules.rules_factories import (
    FAR,
    FIRST_OVERDUE_H,
    T0,
    at,
    contact,
    every,
    fresh_engine,
    hourly_pings,
    loan,
    ping,
    run,
    start,
)

pytestmark = pytest.mark.unit

SEED = "seed-missed-unreachable-out-of-region"


def seed_events() -> list[Any]:
    return [
        *hourly_pings(0, FIRST_OVERDUE_H),
        contact(at(112), "powered_off"),
        contact(at(113), "powered_off"),
        contact(at(113.5), "powered_off"),
        *hourly_pings(114, 130, FAR),
    ]


def of_rule(alerts: list[AlertEvent], rule_id: str) -> list[AlertEvent]:
    return [a for a in alerts if a.rule_id == rule_id]


def test_fires_once_while_condition_holds_then_resolves() -> None:
    engine, state = start()
    alerts = run(engine, state, seed_events())
    seed = of_rule(alerts, SEED)
    assert [a.status for a in seed] == [AlertStatus.FIRING]
    # `for: 30m`: condition true at 114:00 (first fix out of region) -> fires at 114:30.
    assert seed[0].started_at == at(114.5)
    alerts = run(engine, state, hourly_pings(130, 133))  # back home
    resolved = of_rule(alerts, SEED)
    assert [a.status for a in resolved] == [AlertStatus.RESOLVED]
    assert resolved[0].alert_id == seed[0].alert_id
    assert resolved[0].fingerprint == seed[0].fingerprint
    assert resolved[0].started_at == seed[0].started_at


def test_condition_clearing_before_for_elapses_fires_nothing() -> None:
    engine, state = start()
    just_out = (30.66 + 31.0 / 111.195, 104.07)  # 1 km beyond the 30 km region (and margin)
    events = [*seed_events()[:-16], ping(at(114), just_out), ping(at(114, minutes=20))]
    alerts = run(engine, state, events, until=at(120))
    assert of_rule(alerts, SEED) == []


def test_same_inputs_same_alert_ids() -> None:
    events = seed_events()
    first = run(*start(), events)
    second = run(*start(), events)
    assert of_rule(first, SEED)
    assert [a.model_dump() for a in first] == [a.model_dump() for a in second]


def test_restart_from_bytes_reemits_the_same_alert_id() -> None:
    """A worker that dies after the state was saved but before its output was committed
    replays the event from the saved state: it must emit the same alert."""
    events = seed_events()
    engine, state = start()
    uninterrupted = run(engine, state, events)
    engine2, state2 = start()
    cut = len(events) - 16  # just before the car leaves
    run(engine2, state2, events[:cut])
    saved = state2.to_bytes()
    first_try = run(engine2, state2, events[cut:])
    restored = LoanState.from_bytes(saved)
    replay = run(fresh_engine(), restored, events[cut:])
    assert [a.alert_id for a in replay] == [a.alert_id for a in first_try]
    assert of_rule(replay, SEED)[0].alert_id == of_rule(uninterrupted, SEED)[0].alert_id
    assert restored.to_bytes() == state.to_bytes()


def test_redelivered_event_emits_nothing() -> None:
    engine, state = start()
    events = seed_events()
    run(engine, state, events)
    assert run(engine, state, events[-3:]) == []


def test_higher_severity_inhibits_lower_and_releases_it() -> None:
    engine, state = start()
    alerts = run(engine, state, seed_events())
    phone = of_rule(alerts, "phone-dead-overdue")
    # Fired as a warning at the third dead-line attempt, then superseded by the critical seed.
    assert [a.status for a in phone] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert phone[1].labels["note"] == f"inhibited by {SEED}"
    assert state.alerts["phone-dead-overdue"].status == "inhibited"
    # The car comes back: the critical resolves, the warning still holds and fires again.
    alerts = run(engine, state, hourly_pings(130, 132))
    assert [a.status for a in of_rule(alerts, SEED)] == [AlertStatus.RESOLVED]
    again = of_rule(alerts, "phone-dead-overdue")
    assert [a.status for a in again] == [AlertStatus.FIRING]
    assert again[0].alert_id != phone[0].alert_id  # a new episode


def test_escalation_is_a_severity_change_of_the_same_alert() -> None:
    engine, state = start()
    events = [*hourly_pings(0, 5), *every(6, 120, 130 + 24 * 14, FAR)]
    alerts = of_rule(run(engine, state, events), "overdue-out-of-region")
    assert [(a.status, a.severity) for a in alerts[:2]] == [
        (AlertStatus.FIRING, Severity.WARNING),
        (AlertStatus.FIRING, Severity.CRITICAL),
    ]
    assert alerts[0].alert_id == alerts[1].alert_id
    assert alerts[1].started_at == alerts[0].started_at
    assert alerts[1].updated_at > alerts[0].updated_at


def test_evidence_names_every_value_and_the_events() -> None:
    engine, state = start()
    alert = of_rule(run(engine, state, seed_events()), SEED)[0]
    values = {e["name"]: e["value"] for e in alert.evidence if e["kind"] == "state"}
    assert set(values) == set(engine.rules.by_id(SEED).inputs)
    assert values["payment.days_past_due"] == 1
    assert values["contact.unreachable_line"] == 3
    assert values["vehicle.outside_home_region"] is True
    events = {e["event_id"] for e in alert.evidence if e["kind"] == "event"}
    assert state.region_event in events and state.contact_event in events
    risk = next(e for e in alert.evidence if e["kind"] == "risk")
    assert risk["score"] == alert.risk_score > 0 and risk["reasons"]
    assert alert.location is not None and alert.location.lat == FAR[0]


def test_closing_the_loan_resolves_its_alerts() -> None:
    engine, state = start()
    run(engine, state, seed_events())
    assert state.alerts
    closed = engine.apply(state, loan(status="closed"), at(130))
    assert {a.status for a in closed} == {AlertStatus.RESOLVED}
    assert not any(a.status == "firing" for a in state.alerts.values())


def test_alerts_never_fire_for_a_registered_loan_with_nothing_wrong() -> None:
    engine, state = start()
    assert run(engine, state, hourly_pings(0, 50)) == []
    assert state.clock is not None and state.clock >= T0.timestamp()

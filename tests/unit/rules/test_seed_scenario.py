"""The seed scenario (tests/scenarios.py) through the engine with the default catalog: exactly one
critical, the seed rule, with its evidence (issue 12: no regression)."""

from __future__ import annotations

import datetime as dt

import pytest

from rules.events import AlertStatus, Severity
from tests.scenarios import seed_case
from tests.unit.rules.rules_factories import fresh_engine

pytestmark = pytest.mark.unit


def test_seed_case_fires_exactly_one_critical_with_its_evidence() -> None:
    engine = fresh_engine()
    registered, events = seed_case("seed-1")
    state = engine.new_state("seed-1")
    alerts = engine.apply(state, registered, events[0].ts)  # type: ignore[union-attr]
    for event in events:
        alerts += engine.apply(state, event, event.ts)  # type: ignore[union-attr]
    alerts += engine.advance(state, events[-1].ts + dt.timedelta(hours=1))  # type: ignore[union-attr]
    criticals = [
        a for a in alerts if a.severity is Severity.CRITICAL and a.status is AlertStatus.FIRING
    ]
    assert [a.rule_id for a in criticals] == ["seed-missed-unreachable-out-of-region"]
    evidence = {e.get("name"): e.get("value") for e in criticals[0].evidence}
    assert evidence["payment.days_past_due"] >= 1
    assert evidence["vehicle.outside_home_region"] is True
    assert evidence["contact.unreachable_line"] >= 2
    kinds = {e["kind"] for e in criticals[0].evidence}
    assert {"state", "event", "risk"} <= kinds

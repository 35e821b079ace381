"""Loan labels (branch, region, team, ...): validated on the Loan, kept in the state, copied onto
the loan's alerts (a rule's own label of the same name wins), changed by a loan update."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from rules.events import AlertStatus, Loan
from rules.state import LoanState
from tests.scenarios import seed_case
from tests.unit.rules.rules_factories import fresh_engine, loan

pytestmark = pytest.mark.unit


def labelled(labels: dict[str, str]) -> Loan:
    return Loan.model_validate({**loan("L1").model_dump(mode="json"), "labels": labels})


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        pytest.param({"severity": "low"}, "reserved for the alert itself: severity", id="reserved"),
        pytest.param({"Branch": "x"}, "pattern", id="upper-case-key"),
        pytest.param({"branch": ""}, "at least 1 character", id="empty-value"),
        pytest.param({"branch": "x" * 65}, "at most 64 characters", id="long-value"),
        pytest.param({f"k{n}": "v" for n in range(17)}, "at most 16 items", id="too-many"),
    ],
)
def test_bad_labels_are_refused_naming_the_field(labels: dict[str, str], problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        labelled(labels)
    text = str(caught.value)
    assert "labels" in text and problem in text, text


def test_labels_survive_the_state_encoding() -> None:
    state = LoanState(loan_id="L1", labels={"branch": "chengdu", "team": "east-2"})
    assert LoanState.from_bytes(state.to_bytes()).labels == {"branch": "chengdu", "team": "east-2"}
    assert b'"lb"' not in LoanState(loan_id="L2").to_bytes()  # empty: not stored


def run_seed(registered: Loan) -> list[dt.datetime | object]:
    engine = fresh_engine()
    _, events = seed_case(registered.loan_id)
    state = engine.new_state(registered.loan_id)
    alerts = engine.apply(state, registered, events[0].ts)  # type: ignore[union-attr]
    for event in events:
        alerts += engine.apply(state, event, event.ts)  # type: ignore[union-attr]
    return alerts  # type: ignore[return-value]


def test_alerts_carry_the_loans_labels_and_the_rules_win() -> None:
    registered, _ = seed_case("seed-1")
    with_labels = Loan.model_validate(
        {
            **registered.model_dump(mode="json"),
            "labels": {"branch": "chengdu", "team": "loan-team", "product": "used-car"},
        }
    )
    alerts = [a for a in run_seed(with_labels) if a.status is AlertStatus.FIRING]  # type: ignore[attr-defined]
    assert alerts
    for alert in alerts:
        assert alert.labels["branch"] == "chengdu"
        assert alert.labels["product"] == "used-car"
        rule_team = fresh_engine().rules.by_id(alert.rule_id).labels.get("team")
        assert alert.labels["team"] == (rule_team or "loan-team")
    without = [a for a in run_seed(registered) if a.status is AlertStatus.FIRING]  # type: ignore[attr-defined]
    assert [a.rule_id for a in without] == [a.rule_id for a in alerts]  # labels change no decision
    assert all("branch" not in a.labels for a in without)


def test_a_loan_update_changes_the_labels() -> None:
    engine = fresh_engine()
    state = engine.new_state("L1")
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    engine.apply(state, labelled({"branch": "chengdu"}), now)
    assert state.labels == {"branch": "chengdu"}
    engine.apply(state, labelled({"branch": "shenzhen"}), now)
    assert state.labels == {"branch": "shenzhen"}
    engine.apply(state, labelled({}), now)
    assert state.labels == {}

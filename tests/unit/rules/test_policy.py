"""The severity policy (rules/policy.py), enforced at rule load and by `skipwatch rules check`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rules.policy import FAMILIES, ways
from rules.spec import RuleLoadError, load_rules
from services.cli_rules import app

pytestmark = pytest.mark.unit


def rule_file(
    tmp_path: Path, condition: str, severity: str = "critical", escalate: str = ""
) -> Path:
    body = (
        "rules:\n  - id: r1\n"
        f"    severity: {severity}\n    title: T\n    description: D\n"
        f"    condition: >-\n      {condition}\n"
    )
    if escalate:
        body += (
            f"    escalate:\n      - when: >-\n          {escalate}\n        severity: critical\n"
        )
    (tmp_path / "r.yaml").write_text(body, encoding="utf-8")
    return tmp_path


ACCEPTED = [
    pytest.param("payment.days_past_due >= 1 && contact.consecutive_failures >= 3", id="pay+contact"),
    pytest.param("payment.days_past_due >= 1 && vehicle.outside_home_region", id="pay+vehicle"),
    pytest.param("contact.unreachable_line >= 2 && devices.silent_kind == 'wired'", id="contact+trk"),
    pytest.param("vehicle.at_risk_place && 'removal' in device.alarms", id="tamper-at-place"),
    pytest.param("vehicle.outside_home_region && device.silent_for >= duration('24h')",
                 id="silent-away"),
    pytest.param("devices.silent_kind == 'wired' && (vehicle.outside_home_region"
                 " || contact.consecutive_failures >= 4)", id="each-way-qualifies"),
    pytest.param("payment.days_past_due >= 1 && (contact.unreachable_line >= 2"
                 " || vehicle.outside_home_region)", id="either-second-family"),
]  # fmt: skip

REJECTED = [
    # (condition, missing family named in the error)
    pytest.param("vehicle.risk_place_kind == 'second_pledge_lot'"
                 " && vehicle.risk_place_dwell >= duration('6h')", "payment or contact",
                 id="vehicle-only"),
    pytest.param("devices.separated_km >= 2.0 && vehicle.outside_home_region",
                 "payment or contact", id="vehicle+tracker-is-the-car-alone"),
    pytest.param("payment.days_past_due >= 30", "contact or vehicle or tracker", id="payment-only"),
    pytest.param("devices.separated_km >= 2.0 && (vehicle.outside_home_region"
                 " || payment.days_past_due >= 1)", "payment or contact", id="one-way-fails"),
    pytest.param("'low_battery' in device.alarms && vehicle.at_risk_place", "payment or contact",
                 id="low-battery-is-no-tamper"),
    pytest.param("payment.days_past_due == 0 && vehicle.outside_home_region",
                 "payment or contact", id="current-loan-is-no-payment-evidence"),
    pytest.param("!(contact.consecutive_failures < 3) && vehicle.known", "payment or contact",
                 id="negation-and-guard-prove-nothing"),
    pytest.param("vehicle.outside_home_region && !device.all_offline", "payment or contact",
                 id="not-offline-is-no-tamper"),
    pytest.param("vehicle.outside_home_region && devices.silent_kind == 'wireless'",
                 "payment or contact", id="wireless-battery-flat-is-no-tamper"),
]  # fmt: skip


@pytest.mark.parametrize("condition", ACCEPTED)
def test_critical_with_corroboration_or_tamper_loads(tmp_path: Path, condition: str) -> None:
    assert load_rules(rule_file(tmp_path, condition)).rules[0].severity.value == "critical"


@pytest.mark.parametrize(("condition", "missing"), REJECTED)
def test_uncorroborated_critical_is_rejected(tmp_path: Path, condition: str, missing: str) -> None:
    directory = rule_file(tmp_path, condition)
    with pytest.raises(RuleLoadError) as caught:
        load_rules(directory)
    error = caught.value
    assert (error.file, error.rule_id, error.field) == (str(directory / "r.yaml"), "r1", "severity")
    assert f"missing family {missing}" in error.message
    # the same condition as a warning is fine
    assert load_rules(rule_file(tmp_path, condition, "warning")).rules[0].id == "r1"


@pytest.mark.parametrize(
    ("condition", "escalate", "ok"),
    [
        pytest.param("devices.separated_km >= 2.0", "vehicle.outside_home_region", False,
                     id="separated-escalated-on-away"),
        pytest.param("devices.separated_km >= 2.0", "payment.days_past_due >= 1", True,
                     id="separated-escalated-on-overdue"),
        pytest.param("vehicle.at_risk_place && vehicle.cars_at_place >= 3",
                     "vehicle.cars_at_place >= 5", False, id="cluster-by-count-alone"),
    ],
)  # fmt: skip
def test_escalation_to_critical_must_satisfy_the_policy(
    tmp_path: Path, condition: str, escalate: str, ok: bool
) -> None:
    directory = rule_file(tmp_path, condition, "warning", escalate)
    if ok:
        rule = load_rules(directory).rules[0]
        assert set(rule.escalation_evidence[0]) >= {"payment", "tracker"}
        return
    with pytest.raises(RuleLoadError, match="missing family payment or contact") as caught:
        load_rules(directory)
    assert caught.value.field == "escalate[0].severity"


def test_rules_check_rejects_and_names_file_rule_and_family(tmp_path: Path) -> None:
    directory = rule_file(tmp_path, "vehicle.at_risk_place && vehicle.cars_at_place >= 5")
    result = CliRunner().invoke(app, ["check", str(directory)])
    assert result.exit_code == 1
    assert "r.yaml: rule 'r1': severity:" in result.output
    assert "missing family payment or contact" in result.output


def test_rules_check_prints_each_rules_evidence() -> None:
    result = CliRunner().invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    line = next(x for x in lines if " first-missed-all-contacts" in x)
    assert line.split()[-1] == "payment+contact"
    line = next(x for x in lines if " long-dwell-second-pledge-lot" in x)
    assert line.endswith("vehicle  -> critical payment+vehicle")
    line = next(x for x in lines if " trackers-separated" in x)
    assert line.endswith("tracker  -> critical payment+tracker | contact+tracker")
    line = next(x for x in lines if " risk-place-stay-unanswered" in x)
    assert line.split()[1:] == ["critical", "risk-place-stay-unanswered", "contact+vehicle"]
    line = next(x for x in lines if " tracker-tamper-at-risk-place" in x)
    assert line.endswith("vehicle+tracker(tamper)")


def test_every_shipped_critical_satisfies_the_policy() -> None:
    for rule in load_rules().rules:
        levels = [(rule.severity.value, rule.condition.source, "true")]
        levels += [(sev.value, rule.condition.source, e.source) for e, sev in rule.escalations]
        for severity, condition, when in levels:
            if severity == "critical":
                assert all(w.allows_critical for w in ways(condition, when)), rule.id


LEAVES = [
    "payment.days_past_due >= 1",
    "contact.consecutive_failures >= 3",
    "vehicle.outside_home_region",
    "devices.separated_km >= 2.0",
    "vehicle.known",
]


@st.composite
def conditions(draw: st.DrawFn, depth: int = 0) -> str:
    if depth >= 3 or draw(st.booleans()):
        return draw(st.sampled_from(LEAVES))
    op = draw(st.sampled_from([" && ", " || "]))
    return "(" + draw(conditions(depth + 1)) + op + draw(conditions(depth + 1)) + ")"


@settings(max_examples=100, deadline=None)
@given(condition=conditions())
def test_each_way_reads_only_families_of_its_terms(condition: str) -> None:
    """Invariant: a way's families are exactly those of the terms it is made of, and adding a
    conjunct never removes evidence from any way."""
    for way in ways(condition):
        for family in way.families:
            assert family in FAMILIES
        terms = way.text.split(" && ")
        assert all(t in LEAVES for t in terms)
        expected = {
            {"payment": "payment", "contact": "contact", "vehicle": "vehicle"}.get(
                t.split(".")[0], "tracker"
            )
            for t in terms
            if t != "vehicle.known"
        }
        assert way.families == expected
    narrowed = ways(condition, "payment.days_past_due >= 1")
    assert all("payment" in w.families for w in narrowed)

"""Rule files: strict validation at load, errors naming file, rule and field; the check CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rules.spec import RuleLoadError, load_rules, missing_chinese, parse_duration
from services.cli_rules import app

pytestmark = pytest.mark.unit

GOOD = """
rules:
  - id: overdue
    severity: warning
    title: Overdue
    title_zh: 逾期
    description: Overdue.
    description_zh: 已逾期。
    condition: payment.days_past_due >= 3
    for: 1h
"""


def write(tmp_path: Path, body: str, name: str = "rules.yaml") -> Path:
    (tmp_path / name).write_text(body, encoding="utf-8")
    return tmp_path


def rule(**fields: str) -> str:
    base = {
        "id": "r1",
        "severity": "warning",
        "title": "T",
        "description": "D",
        "condition": "payment.days_past_due >= 3",
    }
    base.update(fields)
    lines = "\n".join(f"    {k}: {v}" for k, v in base.items())
    return "rules:\n  - " + lines.lstrip()


def test_default_catalog_loads_with_at_least_12_rules() -> None:
    rules = load_rules()
    assert len(rules) >= 12
    assert "seed-missed-unreachable-out-of-region" in {r.id for r in rules.rules}


def test_good_file_loads(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, GOOD))
    assert rules.rules[0].for_seconds == 3600.0
    assert rules.thresholds == {"payment.days_past_due": (3.0,)}


@pytest.mark.parametrize(
    ("body", "rule_id", "field", "message"),
    [
        pytest.param(rule(extra="1"), "r1", "extra", "Extra inputs", id="unknown-key"),
        pytest.param(rule(title_cn="逾期"), "r1", "title_cn", "Extra inputs", id="zh-misspelt"),
        pytest.param(rule(title_zh="''"), "r1", "title_zh", "at least 1", id="zh-empty"),
        pytest.param(rule(description_zh="[1]"), "r1", "description_zh", "string", id="zh-list"),
        pytest.param(rule(severity="urgent"), "r1", "severity", "Input should be", id="severity"),
        pytest.param(rule(id="'Bad Id'"), "Bad Id", "id", "pattern", id="bad-id"),
        pytest.param(
            rule(condition="'payment.days_past_due >='"),
            "r1",
            "condition",
            "does not compile",
            id="syntax",
        ),
        pytest.param(
            rule(condition="vehicle.atrisk"),
            "r1",
            "condition",
            "unknown variable 'vehicle.atrisk'",
            id="unknown-var",
        ),
        pytest.param(
            rule(condition="foo > 1"),
            "r1",
            "condition",
            "unknown variable 'foo'",
            id="unknown-root",
        ),
        pytest.param(
            rule(condition="device.offline_for > duration('1h')"),
            "r1",
            "condition",
            "is a map",
            id="map-without-key",
        ),
        pytest.param(
            rule(condition="vehicle.stationary_for * 2 > duration('1h')"),
            "r1",
            "condition",
            "may only be compared with a constant",
            id="time-based-arithmetic",
        ),
        pytest.param(
            rule(condition="vehicle.stationary_for > vehicle.risk_place_dwell"),
            "r1",
            "condition",
            "may only be compared with a constant",
            id="time-based-vs-variable",
        ),
        pytest.param(
            rule(condition="vehicle.stationary_for > 72"),
            "r1",
            "condition",
            "does not evaluate",
            id="type-error",
        ),
        pytest.param(
            rule(condition="payment.failed_debits"),
            "r1",
            "condition",
            "must be a bool",
            id="not-bool",
        ),
        pytest.param(rule(**{"for": "3 days"}), "r1", "for", "not a duration", id="bad-for"),
        pytest.param(
            rule(escalate="[{when: 'payment.days_past_due >= 9', severity: info}]"),
            "r1",
            "escalate[0].severity",
            "above",
            id="escalation-not-higher",
        ),
        pytest.param(
            rule(escalate="[{when: 'nope', severity: critical}]"),
            "r1",
            "escalate[0].when",
            "unknown variable",
            id="escalation-bad-cel",
        ),
        pytest.param("rules: [", None, "(yaml)", "", id="yaml-syntax"),
        pytest.param("rule: []", None, "rules", "Field required", id="missing-rules-key"),
    ],
)
def test_invalid_rule_names_file_rule_and_field(
    tmp_path: Path, body: str, rule_id: str | None, field: str, message: str
) -> None:
    with pytest.raises(RuleLoadError) as caught:
        load_rules(write(tmp_path, body, "bad.yaml"))
    error = caught.value
    assert error.file.endswith("bad.yaml")
    assert error.rule_id == rule_id
    assert error.field == field
    assert message in error.message
    assert str(error).startswith(error.file)


def test_duplicate_rule_id_across_files(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD.replace("warning", "info"), "b.yaml")
    with pytest.raises(RuleLoadError, match="duplicate id"):
        load_rules(tmp_path)


def test_cel_has_no_days_unit_but_for_does() -> None:
    assert parse_duration("3d") == 3 * 86400
    assert parse_duration("1h30m") == 5400
    with pytest.raises(ValueError):
        parse_duration("3d", allow_days=False)


def test_check_command(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["check", str(write(tmp_path, GOOD))])
    assert ok.exit_code == 0 and "1 rules OK" in ok.output
    bad = tmp_path / "bad"
    bad.mkdir()
    failed = runner.invoke(app, ["check", str(write(bad, rule(severity="urgent")))])
    assert failed.exit_code == 1
    assert "rule 'r1': severity" in failed.output
    assert runner.invoke(app, ["check"]).exit_code == 0  # the shipped catalog


def test_chinese_title_and_description_load(tmp_path: Path) -> None:
    (rule_,) = load_rules(write(tmp_path, GOOD)).rules
    assert (rule_.title_zh, rule_.description_zh) == ("逾期", "已逾期。")


def test_every_catalog_rule_carries_chinese() -> None:
    for rule_ in load_rules().rules:
        assert missing_chinese(rule_) == [], rule_.id
        assert any("\u4e00" <= ch <= "\u9fff" for ch in rule_.title_zh or ""), rule_.id
        assert any("\u4e00" <= ch <= "\u9fff" for ch in rule_.description_zh or ""), rule_.id


def test_check_command_rejects_a_rule_without_chinese(tmp_path: Path) -> None:
    """Loading accepts it (a worker still evaluates it); the check, the CI gate, does not."""
    english_only = GOOD.replace("    title_zh: 逾期\n", "").replace(
        "    description_zh: 已逾期。\n", ""
    )
    directory = write(tmp_path, english_only)
    assert missing_chinese(load_rules(directory).rules[0]) == ["title_zh", "description_zh"]
    result = CliRunner().invoke(app, ["check", str(directory)])
    assert result.exit_code == 1
    assert "rule 'overdue': title_zh, description_zh: missing (zh-CN text)" in result.output
    half = write(tmp_path, GOOD.replace("    description_zh: 已逾期。\n", ""))
    result = CliRunner().invoke(app, ["check", str(half)])
    assert result.exit_code == 1
    assert "rule 'overdue': description_zh: missing" in result.output

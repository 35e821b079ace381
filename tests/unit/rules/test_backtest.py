"""Backtest over the example recording (tests/data/rules): the worker's loop, in-process."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from rules.backtest import run_backtest
from rules.evaluation import ALL_RULES, EpisodeTracker, Evaluation, Truth
from rules.events import AlertStatus, Label, Severity, read_recording
from services.cli_rules import backtest_command
from tests.unit.rules.rules_factories import fresh_engine

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[2] / "data" / "rules"
RECORDING = DATA / "recording.jsonl"
LABELS = DATA / "labels.jsonl"


def events() -> list[object]:
    with RECORDING.open(encoding="utf-8") as handle:
        return [event for _, event in read_recording(handle)]


def labels() -> list[Label]:
    return [Label.model_validate_json(line) for line in LABELS.read_text().splitlines()]


def fired(result: object, loan_id: str) -> set[str]:
    return {
        a.rule_id
        for a in result.alerts  # type: ignore[attr-defined]
        if a.loan_id == loan_id and a.status is AlertStatus.FIRING
    }


def test_backtest_catches_both_skips_early() -> None:
    result = run_backtest(events(), fresh_engine())  # type: ignore[arg-type]
    assert "seed-missed-unreachable-out-of-region" in fired(result, "skip-seed")
    assert {"tracker-tamper-at-risk-place", "long-dwell-second-pledge-lot"} <= fired(
        result, "skip-lot"
    )
    evaluation = Evaluation({label.loan_id: Truth.from_label(label) for label in labels()})
    tracker = EpisodeTracker(evaluation.add)
    for alert in result.alerts:
        tracker.feed(alert)
    tracker.finish()
    crit = evaluation.metrics(Severity.CRITICAL, ALL_RULES, result.states, days=8)
    assert crit["recall_by_label_1h"] == 1.0 and crit["lead_h_p10"] > 0
    seed = evaluation.metrics(
        Severity.CRITICAL, "seed-missed-unreachable-out-of-region", result.states, days=8
    )
    assert seed["precision"] == 1.0 and seed["caught_at_label"] == 1


def test_cluster_rule_uses_the_cross_loan_aggregate() -> None:
    result = run_backtest(events(), fresh_engine())  # type: ignore[arg-type]
    for loan_id in ("cluster-a", "cluster-b", "cluster-c"):
        assert "financed-cars-cluster-at-lot" in fired(result, loan_id)
    assert "financed-cars-cluster-at-lot" not in fired(result, "good-home")


def test_late_backfill_raises_no_live_alert_but_is_remembered() -> None:
    result = run_backtest(events(), fresh_engine())  # type: ignore[arg-type]
    place_rules = {"long-dwell-second-pledge-lot", "risk-place-dwell-overdue"}
    assert not fired(result, "good-home") & place_rules
    assert [v[0] for v in result.states["good-home"].visits] == ["cd-2p-001"]
    assert result.summary["engine"]["late_events"] > 0


def test_pings_before_the_loan_are_bound_later() -> None:
    result = run_backtest(events(), fresh_engine())  # type: ignore[arg-type]
    assert result.summary["unbound_pings"] == 0
    assert result.states["early-pings"].devices["early-pings-W"].last_seen is not None


def test_rerun_is_identical() -> None:
    first = run_backtest(events(), fresh_engine())  # type: ignore[arg-type]
    second = run_backtest(events(), fresh_engine())  # type: ignore[arg-type]
    assert [a.model_dump_json() for a in first.alerts] == [
        a.model_dump_json() for a in second.alerts
    ]


def test_backtest_command_writes_alerts_and_summary(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(backtest_command)
    out = tmp_path / "alerts.jsonl"
    args = [str(RECORDING), "--labels", str(LABELS), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    lines = out.read_bytes().splitlines()
    assert len(lines) == summary["alert_events"] > 0
    assert {"alert_id", "evidence", "risk_score"} <= set(orjson.loads(lines[0]))
    assert summary["evaluation"]["skips"] == 2
    assert "headline: criticals recall@T+1h" in result.stderr
    bad = CliRunner().invoke(app, [str(tmp_path / "missing.jsonl")])
    assert bad.exit_code == 1 and "error:" in bad.output

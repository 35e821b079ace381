"""Metric definitions of rules/evaluation.py, table-driven: episodes and labels in, figures out."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from rules.evaluation import ALL_RULES, Episode, EpisodeTracker, Evaluation, Truth, p10
from rules.events import AlertEvent, AlertStatus, Label, Severity

pytestmark = pytest.mark.unit

H = 3600.0
T = dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()  # the skip's unreachable_at
CRIT, WARN = Severity.CRITICAL, Severity.WARNING


def episode(
    loan: str,
    phases: list[tuple[float, Severity]],
    end: float | None,
    rule: str = "r1",
    n: int = 0,
) -> Episode:
    """Times in hours relative to T."""
    return Episode(
        alert_id=f"{rule}-{loan}-{n}",
        fingerprint=f"{rule}|{loan}",
        rule_id=rule,
        loan_id=loan,
        phases=[(T + h * H, s) for h, s in phases],
        end=None if end is None else T + end * H,
    )


TRUTH = {
    "skip": Truth("skip", "skip_kind_a", T),
    "good": Truth("good", "punctual"),
}


def evaluate(*episodes: Episode) -> Evaluation:
    evaluation = Evaluation(TRUTH)
    for item in episodes:
        evaluation.add(item)
    return evaluation


# (name, episodes of the skip loan, caught at T, caught by T+1h, lead h, counts for precision)
RECALL_CASES: list[tuple[str, list[Episode], bool, bool, float | None, bool]] = [
    ("firing at T, still open", [episode("skip", [(-10, CRIT)], None)], True, True, 10.0, True),
    ("resolved a day before T", [episode("skip", [(-48, CRIT)], -24)], False, False, None, True),
    ("resolved exactly at T", [episode("skip", [(-5, CRIT)], 0)], False, False, None, True),
    ("resolved just after T", [episode("skip", [(-5, CRIT)], 0.2)], True, True, 5.0, True),
    ("starts 30 min after T", [episode("skip", [(0.5, CRIT)], None)], False, True, -0.5, True),
    ("starts exactly at T", [episode("skip", [(0, CRIT)], 3)], True, True, 0.0, True),
    ("starts 2 h after T", [episode("skip", [(2, CRIT)], None)], False, False, None, False),
    ("warning only", [episode("skip", [(-10, WARN)], None)], False, False, None, False),
    (
        "escalated to critical 2 h before T",
        [episode("skip", [(-20, WARN), (-2, CRIT)], None)],
        True,
        True,
        2.0,
        True,
    ),
    (
        "critical de-escalated to warning before T",
        [episode("skip", [(-20, CRIT), (-3, WARN)], None)],
        False,
        False,
        None,
        True,
    ),
    (
        "old resolved episode, then a new one firing at T: lead from the new one",
        [
            episode("skip", [(-300, CRIT)], -200, n=1),
            episode("skip", [(-7, CRIT)], None, n=2),
        ],
        True,
        True,
        7.0,
        True,
    ),
    (
        "two rules: the earliest start of those that catch it",
        [
            episode("skip", [(-4, CRIT)], None, rule="r1"),
            episode("skip", [(-30, CRIT)], None, rule="r2"),
        ],
        True,
        True,
        30.0,
        True,
    ),
]


@pytest.mark.parametrize(
    ("episodes", "at", "grace", "lead", "precise"),
    [case[1:] for case in RECALL_CASES],
    ids=[case[0] for case in RECALL_CASES],
)
def test_critical_recall_lead_and_precision(
    episodes: list[Episode], at: bool, grace: bool, lead: float | None, precise: bool
) -> None:
    evaluation = evaluate(*episodes)
    m = evaluation.metrics(CRIT, ALL_RULES, ["skip", "good"], days=10)
    assert m["skips"] == 1 and m["loans"] == 2
    assert m["caught_at_label"] == int(at)
    assert m["caught_by_label_1h"] == int(grace)
    assert m["recall_at_label"] == float(at) and m["recall_by_label_1h"] == float(grace)
    assert m["lead_h_median"] == lead
    assert m["true_alerted"] == int(precise)
    alerted = int(any(e.intervals(CRIT) for e in episodes))
    assert m["loans_alerted"] == alerted
    assert m["precision"] == (float(precise) if alerted else None)
    assert m["false_loans"] == 0 and m["false_loan_share"] == 0.0


def test_precision_counts_false_and_late_criticals() -> None:
    evaluation = evaluate(
        episode("skip", [(3, CRIT)], None),  # a skip alerted only after T + 1 h
        episode("good", [(-50, CRIT)], -40),  # a critical on a good loan
    )
    m = evaluation.metrics(CRIT, ALL_RULES, ["skip", "good"], days=10)
    assert (m["loans_alerted"], m["true_alerted"], m["precision"]) == (2, 0, 0.0)
    assert (m["false_loans"], m["false_loan_share"]) == (1, 1.0)
    assert evaluation.outcome("skip") == "late" and evaluation.outcome("good") == "critical"


def test_levels_are_counted_separately() -> None:
    evaluation = evaluate(
        episode("skip", [(-20, WARN), (-2, CRIT)], None),
        episode("good", [(-100, WARN)], -99),
    )
    crit = evaluation.metrics(CRIT, ALL_RULES, ["skip", "good"], days=10)
    warn = evaluation.metrics(WARN, ALL_RULES, ["skip", "good"], days=10)
    assert (crit["episodes"], crit["false_loans"], crit["lead_h_median"]) == (1, 0, 2.0)
    # The warning phase ended at the escalation, 2 h before T: not a warning firing at T.
    assert (warn["episodes"], warn["false_loans"], warn["caught_at_label"]) == (2, 1, 0)
    assert warn["precision"] == 0.5  # the skip's warning started before T + 1 h


def test_volume_and_flapping() -> None:
    evaluation = evaluate(
        episode("good", [(-100, WARN)], -99, n=1),
        episode("good", [(-90, WARN)], -89, n=2),
        episode("good", [(-80, WARN)], None, n=3),
        episode("good", [(-80, WARN)], -70, rule="r2"),
        episode("skip", [(-5, WARN)], None, rule="r2"),
    )
    m = evaluation.metrics(WARN, ALL_RULES, ["skip", "good"], days=10)
    assert m["episodes"] == 5
    assert m["episodes_per_1000_loan_days"] == 1000 * 5 / (2 * 10)
    assert (m["fingerprints"], m["flapping_fingerprints"], m["flap_share"]) == (3, 1, 0.3333)
    r1 = evaluation.metrics(WARN, "r1", ["skip", "good"], days=10)
    assert (r1["episodes"], r1["fingerprints"], r1["flap_share"]) == (3, 1, 1.0)
    by_kind = evaluation.metrics(WARN, ALL_RULES, ["good"], days=10, kind="punctual")
    assert (by_kind["episodes"], by_kind["fingerprints"], by_kind["flapping_fingerprints"]) == (
        4,
        2,
        1,
    )


def test_lead_percentiles_use_nearest_rank() -> None:
    assert p10([5.0]) == 5.0
    assert p10([float(x) for x in range(1, 11)]) == 1.0
    assert p10([float(x) for x in range(1, 12)]) == 2.0


def test_report_has_levels_rules_kinds_and_confusion() -> None:
    evaluation = evaluate(
        episode("skip", [(-10, CRIT)], None, rule="seed"),
        episode("good", [(-10, WARN)], -9, rule="noise"),
    )
    report = evaluation.report(["skip", "good", "unknown"], days=2)
    assert report["loans"] == 3 and report["skips"] == 1
    assert report["skip_kinds"] == ["skip_kind_a"]
    crit = report["levels"]["critical"]
    assert crit["overall"]["recall_by_label_1h"] == 1.0
    assert crit["rules"]["seed"]["precision"] == 1.0
    assert crit["kinds"]["skip_kind_a"]["lead_h_median"] == 10.0
    assert report["levels"]["warning"]["kinds"]["punctual"]["false_loans"] == 1
    assert report["confusion"] == {
        "(unlabelled)": {"quiet": 1},
        "punctual": {"warned": 1},
        "skip_kind_a": {"caught": 1},
    }


def _alert(
    status: AlertStatus, severity: Severity, started: float, updated: float, fp: str = "fp"
) -> AlertEvent:
    def ts(h: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(T + h * H, dt.UTC)

    return AlertEvent(
        alert_id=f"{fp}-{started}",
        fingerprint=fp,
        rule_id="r1",
        loan_id="skip",
        severity=severity,
        status=status,
        title="t",
        summary="s",
        risk_score=50,
        started_at=ts(started),
        updated_at=ts(updated),
        event_time=ts(updated),
    )


def test_tracker_turns_alert_events_into_episodes() -> None:
    closed: list[Episode] = []
    tracker = EpisodeTracker(closed.append)
    events: list[Any] = [
        _alert(AlertStatus.FIRING, WARN, -10, -10),
        _alert(AlertStatus.FIRING, CRIT, -10, -4),  # escalated: same alert id
        _alert(AlertStatus.FIRING, CRIT, -10, -3),  # a repeat of the same state
        _alert(AlertStatus.RESOLVED, CRIT, -10, 2),
        _alert(AlertStatus.FIRING, WARN, 5, 5),
        _alert(AlertStatus.RESOLVED, WARN, 99, 100, fp="other"),  # never seen firing
    ]
    for event in events:
        tracker.feed(event)
    tracker.finish()
    assert tracker.orphan_resolves == 1
    first, second = closed
    assert [(round((t - T) / H), s) for t, s in first.phases] == [(-10, WARN), (-4, CRIT)]
    assert first.end == T + 2 * H
    assert first.intervals(WARN) == [(T - 10 * H, T - 4 * H)]
    assert first.intervals(CRIT) == [(T - 4 * H, T + 2 * H)]
    assert second.end is None and second.intervals(WARN) == [(T + 5 * H, math.inf)]


def test_truth_from_labels() -> None:
    at = dt.datetime.fromtimestamp(T, dt.UTC)
    skip = Truth.from_label(Label(loan_id="a", unreachable_at=at, kind="skip_x"))
    good = Truth.from_label(Label(loan_id="b", kind="traveller"))
    old = Truth.from_label(Label(loan_id="c", unreachable_at=at))
    assert (skip.is_skip, skip.kind, skip.unreachable_at) == (True, "skip_x", T)
    assert (good.is_skip, good.kind) == (False, "traveller")
    assert (old.is_skip, old.kind) == (True, "skip")

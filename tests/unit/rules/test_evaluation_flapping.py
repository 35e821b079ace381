"""The evaluation report lists the flapping fingerprints (rule, loan, kind, episodes), most
episodes first, so the flap share names where to look."""

from __future__ import annotations

import pytest

from rules.evaluation import Episode, Evaluation, Truth
from rules.events import Severity

pytestmark = pytest.mark.unit


def episode(n: int, rule: str, loan: str, start: float) -> Episode:
    return Episode(f"a{n}", f"{rule}:{loan}", rule, loan, [(start, Severity.WARNING)], start + 60)


def test_flapping_lists_fingerprints_with_two_or_more_episodes() -> None:
    truth = {
        "L1": Truth("L1", "punctual", None),
        "L2": Truth("L2", "traveller", None),
        "L3": Truth("L3", "punctual", None),
    }
    evaluation = Evaluation(truth)
    for n, (rule, loan, start) in enumerate(
        [
            ("r-a", "L1", 0.0),
            ("r-a", "L1", 1000.0),
            ("r-b", "L2", 0.0),
            ("r-b", "L2", 1000.0),
            ("r-b", "L2", 2000.0),
            ("r-a", "L3", 0.0),  # once: not flapping
        ]
    ):
        evaluation.add(episode(n, rule, loan, start))
    assert evaluation.flapping(Severity.WARNING) == [
        {"rule": "r-b", "loan_id": "L2", "kind": "traveller", "episodes": 3},
        {"rule": "r-a", "loan_id": "L1", "kind": "punctual", "episodes": 2},
    ]
    assert evaluation.flapping(Severity.WARNING, limit=1)[0]["loan_id"] == "L2"
    assert evaluation.flapping(Severity.CRITICAL) == []
    report = evaluation.report(["L1", "L2", "L3"], days=1.0)
    assert report["levels"]["warning"]["overall"]["flapping_fingerprints"] == 2
    assert len(report["levels"]["warning"]["flapping"]) == 2

"""`keep_firing_for` (issue 12: no flapping): a firing alert whose condition stops holding
resolves only after it has not held for that long; holding again continues the same episode."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.events import AlertStatus
from rules.spec import RuleLoadError, load_rules
from tests.unit.rules.rules_factories import (
    FIRST_OVERDUE_H,
    HOME,
    USED_CAR_MARKET,
    at,
    loan,
    ping,
    run,
    start,
)

pytestmark = pytest.mark.unit

RULE = "risk-place-dwell-overdue"  # keep_firing_for: 30m
OUT = (USED_CAR_MARKET[0] + 0.006, USED_CAR_MARKET[1])  # ~670 m: beyond radius 400 m + 100 m
H = FIRST_OVERDUE_H  # overdue from here


def at_lot(start_h: float, end_h: float) -> list[object]:
    out, h = [], start_h
    while h < end_h:
        out.append(ping(at(h), USED_CAR_MARKET))
        h += 0.25
    return out


@pytest.mark.parametrize(
    ("away", "episodes", "resolved_at"),
    [
        # The failing shape: one fix outside the lot (GPS glitch), back 10 min later.
        pytest.param([(H + 3, OUT)], 1, None, id="glitch-back-within-30-min"),
        # Gone for good: resolves 30 min after the condition stopped holding.
        pytest.param([(H + 3, OUT), (H + 3.25, HOME), (H + 4, HOME), (H + 6, HOME)], 1, H + 3.5,
                     id="left-resolves-after-30-min"),
        # Away 2 h, then back: two episodes (a real second visit).
        pytest.param([(H + 3, OUT), (H + 3.25, HOME), (H + 5, OUT)], 2, H + 3.5,
                     id="second-visit-is-a-new-episode"),
    ],
)  # fmt: skip
def test_keep_firing_for(
    away: list[tuple[float, tuple[float, float]]], episodes: int, resolved_at: float | None
) -> None:
    engine, state = start()
    events: list[object] = [ping(at(0)), *at_lot(H, H + 3)]
    for h, where in away:
        events.append(ping(at(h), where))
    last = away[-1][0]
    if away[-1][1] == OUT:  # back at the lot 10 min later, for a while
        events += at_lot(last + 1 / 6, last + 4)
    events.sort(key=lambda e: e.ts)  # type: ignore[attr-defined]
    alerts = [a for a in run(engine, state, events, until=at(H + 10)) if a.rule_id == RULE]
    fired = [a for a in alerts if a.status is AlertStatus.FIRING]
    assert len({a.alert_id for a in fired}) == episodes
    resolved = [a for a in alerts if a.status is AlertStatus.RESOLVED]
    if resolved_at is None:
        assert not resolved
    else:
        assert resolved[0].updated_at == at(resolved_at)


def test_a_closed_loan_resolves_at_once() -> None:
    engine, state = start()
    run(engine, state, [ping(at(0)), *at_lot(H, H + 3)])  # type: ignore[list-item]
    alerts = engine.apply(state, loan(status="closed"), at(H + 3))
    assert [(a.rule_id, a.status) for a in alerts if a.rule_id == RULE] == [
        (RULE, AlertStatus.RESOLVED)
    ]


def test_keep_firing_for_is_parsed_and_validated(tmp_path: Path) -> None:
    body = (
        "rules:\n  - id: r1\n    severity: warning\n    title: T\n    description: D\n"
        "    condition: payment.days_past_due >= 3\n    keep_firing_for: {}\n"
    )
    (tmp_path / "r.yaml").write_text(body.format("90m"), encoding="utf-8")
    assert load_rules(tmp_path).rules[0].keep_seconds == 5400.0
    (tmp_path / "r.yaml").write_text(body.format("soon"), encoding="utf-8")
    with pytest.raises(RuleLoadError, match="keep_firing_for"):
        load_rules(tmp_path)

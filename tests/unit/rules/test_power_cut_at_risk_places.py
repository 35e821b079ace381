"""A power cut at a risk place (issue 12, round 4): every false critical of rounds 2 and 3 was a
workshop's battery swap next to a market (`repair_shop_near_risk_place`), the power-cut alarm
cleared by the tracker's next report. At a second-pledge lot a power cut pages at once
(`tracker-tamper-at-risk-place`); at a pawn shop, market or impound lot it must last 45 min
(`tracker-power-cut-at-risk-place`)."""

from __future__ import annotations

from typing import Any

import pytest

from rules.events import AlertStatus
from tests.unit.rules.rules_factories import (
    SECOND_PLEDGE_LOT,
    USED_CAR_MARKET,
    at,
    ping,
    run,
    start,
)

pytestmark = pytest.mark.unit

TAMPER, LASTING = "tracker-tamper-at-risk-place", "tracker-power-cut-at-risk-place"


def cut(where: tuple[float, float]) -> list[Any]:
    """At the place from 2 h; at 3 h the power is cut: three reports on the backup battery."""
    return [
        ping(at(0)),
        ping(at(2), where),
        *(ping(at(3, minutes=m), where, alarms=("power_cut",)) for m in (0, 5, 10)),
    ]


def swap(where: tuple[float, float], back_min: float) -> list[Any]:
    """A battery swap at 3 h: the next report, ``back_min`` later, has power again."""
    return [
        ping(at(0)),
        ping(at(2), where),
        ping(at(3), where, alarms=("power_cut",)),
        ping(at(3, minutes=back_min), where),
    ]


def first_firing(events: list[Any], until_h: float) -> dict[str, float]:
    engine, state = start()
    alerts = run(engine, state, events, until=at(until_h))
    out: dict[str, float] = {}
    for alert in alerts:
        if alert.status is AlertStatus.FIRING and alert.rule_id in (TAMPER, LASTING):
            hours = (alert.updated_at - at(0)).total_seconds() / 3600
            out.setdefault(alert.rule_id, round(hours, 2))
    return out


@pytest.mark.parametrize(
    ("events", "fired"),
    [
        pytest.param(cut(SECOND_PLEDGE_LOT), {TAMPER: 3.0}, id="cut-at-a-second-pledge-lot"),
        pytest.param(cut(USED_CAR_MARKET), {LASTING: 3.75}, id="cut-at-a-market-lasts"),
        pytest.param(swap(USED_CAR_MARKET, 30), {}, id="swap-at-a-market-30-min"),
        pytest.param(swap(USED_CAR_MARKET, 44), {}, id="swap-at-a-market-44-min"),
        pytest.param(swap(USED_CAR_MARKET, 50), {LASTING: 3.75}, id="cut-at-a-market-50-min"),
        pytest.param(swap(SECOND_PLEDGE_LOT, 30), {TAMPER: 3.0}, id="any-cut-at-a-lot-pages"),
    ],
)
def test_power_cut_at_risk_places(events: list[Any], fired: dict[str, float]) -> None:
    assert first_firing(events, 6) == fired

"""A long stay at a risk place corroborated by the borrower not answering (issue 12 tuning).

The class of miss: a borrower pledges or sells the car (second-pledge lot, pawn shop, used-car
market) before any instalment is missed, then goes dark. The stay alone is the vehicle family
(a warning at most); the first unanswered call during the stay is the contact family that makes
it a critical. Table-driven from that shape and its near misses."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.rules.rules_factories import (
    HOME,
    SECOND_PLEDGE_LOT,
    USED_CAR_MARKET,
    at,
    contact,
    hourly_pings,
    open_alerts,
    ping,
    run,
    start,
)

pytestmark = pytest.mark.unit

PAWN_SHOP = (30.6705, 104.0412)  # cd-pawn-001 in the shipped place file (radius 80 m)
IMPOUND = (30.6811, 104.1688)  # cd-imp-001 (radius 250 m)


def stay(where: tuple[float, float], hours: float) -> list[Any]:
    return [ping(at(0)), *hourly_pings(2, 2 + hours, where)]


RULES = {"risk-place-stay-unanswered", "long-dwell-second-pledge-lot"}


@pytest.mark.parametrize(
    ("events", "until", "expected"),
    [
        # The failing shape: 8 h at a pawn shop / used-car market, one unanswered call.
        pytest.param([*stay(PAWN_SHOP, 8), contact(at(9), "no_answer")], 9.5,
                     {"risk-place-stay-unanswered": "critical"}, id="pawn-shop-no-answer"),
        pytest.param([*stay(USED_CAR_MARKET, 8), contact(at(9), "powered_off")], 9.5,
                     {"risk-place-stay-unanswered": "critical"}, id="market-phone-off"),
        # Second-pledge lot: 2 h there and an unanswered call (the critical inhibits the
        # dwell warning).
        pytest.param([*stay(SECOND_PLEDGE_LOT, 3), contact(at(4), "no_answer")], 4.5,
                     {"risk-place-stay-unanswered": "critical"}, id="lot-2h-no-answer"),
        pytest.param([*stay(SECOND_PLEDGE_LOT, 8), contact(at(9), "no_answer")], 9.5,
                     {"risk-place-stay-unanswered": "critical"}, id="lot-8h-no-answer"),
        pytest.param([*stay(SECOND_PLEDGE_LOT, 1), contact(at(2.5), "no_answer")], 2.9, {},
                     id="lot-under-2h"),
        pytest.param(stay(SECOND_PLEDGE_LOT, 8), 9.5,
                     {"long-dwell-second-pledge-lot": "warning"}, id="lot-nobody-called"),
        # Near misses: too short a stay, the borrower answers, nobody called, an impound lot,
        # the car already gone from the place.
        pytest.param([*stay(PAWN_SHOP, 4), contact(at(5), "no_answer")], 5.5, {},
                     id="pawn-shop-4h"),
        pytest.param([*stay(USED_CAR_MARKET, 8), contact(at(8), "no_answer"),
                      contact(at(9), "reached")], 9.5, {}, id="market-borrower-answers"),
        pytest.param(stay(USED_CAR_MARKET, 8), 9.5, {}, id="market-nobody-called"),
        pytest.param([*stay(IMPOUND, 8), contact(at(9), "no_answer")], 9.5, {},
                     id="impound-lot"),
        pytest.param([*stay(PAWN_SHOP, 8), ping(at(10), HOME), contact(at(11), "no_answer")],
                     11.5, {}, id="left-the-pawn-shop"),
    ],
)  # fmt: skip
def test_risk_place_stay_corroborated_by_contact(
    events: list[Any], until: float, expected: dict[str, str]
) -> None:
    engine, state = start()
    alerts = run(engine, state, events, until=at(until))
    open_now = open_alerts(state) & RULES
    assert open_now == set(expected)
    last = {a.rule_id: a.severity.value for a in alerts if a.status.value == "firing"}
    for rule_id, severity in expected.items():
        assert last[rule_id] == severity

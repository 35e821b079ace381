"""Every default rule: a sequence that fires it, and a near miss that does not."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from rules.engine import Engine
from rules.events import AlertEvent
from rules.state import LoanState
from tests.unit.rules.rules_factories import (
    FAR,
    FIRST_OVERDUE_H,
    HOME,
    IMPOUND_LOT,
    SECOND_PLEDGE_LOT,
    USED_CAR_MARKET,
    at,
    contact,
    default_engine,
    firing,
    hourly_pings,
    ping,
    run,
    start,
)
from tests.unit.rules.test_resident_points import FRIEND, local, parked, routine
from tests.unit.rules.test_wired_overdue import lived_in
from tests.unit.rules.test_wireless_overdue import AWAY, WIRELESS_ONLY, lived, report

pytestmark = pytest.mark.unit

OVERDUE = FIRST_OVERDUE_H  # first hour with days_past_due >= 1
APART = (HOME[0] + 0.05, HOME[1])  # ~5.6 km from HOME
NEAR = (HOME[0] + 0.001, HOME[1])
OTHER = (31.2, 104.5)  # another unusual place, out of region


@dataclass(frozen=True)
class Case:
    events: list[Any]
    until: dt.datetime
    extra: Callable[[Engine, LoanState], list[AlertEvent]] | None = None
    devices: tuple[tuple[str, str], ...] = (("W1", "wired"), ("X1", "wireless"))


def every(
    hours: float, start_h: float, end_h: float, where: tuple[float, float], **kw: Any
) -> list[Any]:
    out, h = [], start_h
    while h < end_h:
        out.append(ping(at(h), where, **kw))
        h += hours
    return out


def wireless(h: float, where: tuple[float, float] = HOME) -> Any:
    return ping(at(h), where, device="X1", kind="wireless")


def by_time(*events: Any) -> list[Any]:
    return sorted(events, key=lambda e: e.ts)


def parked_wired(start_min: int, end_min: int) -> list[Any]:
    return [ping(at(minutes=m), HOME, speed_kmh=0.0) for m in range(start_min, end_min, 10)]


def wireless_at(minute: float, where: tuple[float, float]) -> Any:
    return ping(at(minutes=minute), where, device="X1", kind="wireless")


def place_count(
    count: int, place: str, when: dt.datetime
) -> Callable[[Engine, LoanState], list[AlertEvent]]:
    return lambda engine, state: engine.apply_place_count(state, place, count, when)


CASES: dict[str, tuple[Case, Case]] = {
    "seed-missed-unreachable-out-of-region": (
        Case(
            [
                *hourly_pings(0, OVERDUE),
                contact(at(112), "powered_off"),
                contact(at(113), "suspended"),
                *hourly_pings(114, 117, FAR),
            ],
            at(117),
        ),
        # Same, but the car stays home.
        Case(
            [
                *hourly_pings(0, OVERDUE),
                contact(at(112), "powered_off"),
                contact(at(113), "suspended"),
                *hourly_pings(114, 117),
            ],
            at(117),
        ),
    ),
    "first-missed-all-contacts-failing": (
        Case(
            [
                *hourly_pings(0, 5),
                contact(at(112), "no_answer"),
                contact(at(113), "no_answer", "guarantor"),
                contact(at(114), "busy", "emergency_contact"),
            ],
            at(115),
        ),
        # Only the borrower fails: one party is not "all contacts".
        Case(
            [*hourly_pings(0, 5), *(contact(at(112 + n), "no_answer") for n in range(3))],
            at(115),
        ),
    ),
    "offline-day-out-of-region": (
        Case([*hourly_pings(0, 10), *hourly_pings(10, 13, FAR)], at(12 + 24, minutes=1)),
        Case([*hourly_pings(0, 10), *hourly_pings(10, 13, FAR)], at(12 + 23)),
    ),
    "overdue-out-of-region": (
        Case([*hourly_pings(0, 5), *every(6, 120, 170, FAR)], at(170)),
        # Outside for 20 h only.
        Case([*hourly_pings(0, 5), *every(6, 120, 140, FAR), *every(6, 140, 170, HOME)], at(170)),
    ),
    "stationary-unusual-place-overdue": (
        Case([ping(at(0)), *every(6, 1, 120, OTHER)], at(120)),
        # Parked 3+ days, but where it already parked 30 h before: a usual place.
        Case([*hourly_pings(0, 30), *hourly_pings(31, 40, FAR), *every(6, 41, 170, HOME)], at(170)),
    ),
    # Home every night for 4 days, then at a friend's for 4 days while overdue from 6 March.
    "away-from-resident-points-overdue": (
        Case([*routine(range(1, 5)), *parked(FRIEND, local(5, 9), local(9, 12))], local(9, 12)),
        Case(routine(range(1, 10)), local(9, 12)),
    ),
    "phone-dead-overdue": (
        Case(
            [*hourly_pings(0, 5), *(contact(at(112 + n), "powered_off") for n in range(3))], at(115)
        ),
        Case(
            [
                *hourly_pings(0, 5),
                contact(at(112), "powered_off"),
                contact(at(113), "no_answer"),
                contact(at(114), "powered_off"),
                contact(at(115), "powered_off"),
            ],
            at(116),
        ),
    ),
    "tracker-tamper-at-risk-place": (
        Case(
            [
                ping(at(0)),
                ping(at(2), SECOND_PLEDGE_LOT),
                ping(at(3), SECOND_PLEDGE_LOT, alarms=("removal",)),
            ],
            at(3),
        ),
        Case([ping(at(0)), ping(at(2)), ping(at(3), alarms=("removal",))], at(3)),
    ),
    # Cut at a used-car market: three reports on the backup battery, then nothing; fires at
    # 45 min.
    "tracker-power-cut-at-risk-place": (
        Case(
            [
                ping(at(0)),
                ping(at(2), USED_CAR_MARKET),
                *(
                    ping(at(3, minutes=m), USED_CAR_MARKET, alarms=("power_cut",))
                    for m in (0, 5, 10)
                ),
            ],
            at(3.76),
        ),
        # A workshop's battery swap: the next report, 30 min later, has power again.
        Case(
            [
                ping(at(0)),
                ping(at(2), USED_CAR_MARKET),
                ping(at(3), USED_CAR_MARKET, alarms=("power_cut",)),
                ping(at(3.5), USED_CAR_MARKET),
            ],
            at(5),
        ),
    ),
    "long-dwell-second-pledge-lot": (
        Case([ping(at(0)), *hourly_pings(2, 10, SECOND_PLEDGE_LOT)], at(10)),
        Case([ping(at(0)), *hourly_pings(2, 7, SECOND_PLEDGE_LOT), *hourly_pings(7, 10)], at(10)),
    ),
    "risk-place-stay-unanswered": (
        Case(
            [ping(at(0)), *hourly_pings(2, 10, USED_CAR_MARKET), contact(at(9), "no_answer")],
            at(10),
        ),
        # The borrower answers (the streak ends): a sale the borrower can explain.
        Case(
            [
                ping(at(0)),
                *hourly_pings(2, 10, USED_CAR_MARKET),
                contact(at(8), "no_answer"),
                contact(at(9), "reached"),
            ],
            at(10),
        ),
    ),
    "risk-place-dwell-overdue": (
        Case([ping(at(0)), *hourly_pings(112, 116, USED_CAR_MARKET)], at(116)),
        # The same visit before the due date.
        Case([ping(at(0)), *hourly_pings(50, 54, USED_CAR_MARKET), *hourly_pings(54, 56)], at(116)),
    ),
    # The car counts toward the lot once it has stayed 2 h (occupancy_min_dwell_s).
    "financed-cars-cluster-at-lot": (
        Case(
            [ping(at(0)), ping(at(2), USED_CAR_MARKET), ping(at(4.5), USED_CAR_MARKET)],
            at(4.5),
            place_count(3, "cd-ucm-001", at(4.5)),
        ),
        Case(
            [ping(at(0)), ping(at(2), USED_CAR_MARKET), ping(at(4.5), USED_CAR_MARKET)],
            at(4.5),
            place_count(2, "cd-ucm-001", at(4.5)),
        ),
    ),
    "impounded": (
        Case([ping(at(0)), *every(0.5, 2, 4.1, IMPOUND_LOT)], at(4)),
        Case(
            [
                ping(at(0)),
                ping(at(2), IMPOUND_LOT),
                ping(at(2, minutes=50), IMPOUND_LOT),
                ping(at(3)),
            ],
            at(4),
        ),
    ),
    # Two independent pairs (the wired tracker parked, reporting every 10 min) an hour apart.
    "trackers-separated": (
        Case(by_time(*parked_wired(0, 130), wireless_at(5, APART), wireless_at(65, APART)), at(3)),
        # One disagreeing pair is not a separation.
        Case(by_time(*parked_wired(0, 130), wireless_at(5, APART), wireless_at(65, NEAR)), at(3)),
    ),
    "wired-silent-away": (
        Case([ping(at(0)), *(wireless(h, FAR) for h in (1, 3, 7))], at(7)),
        # The wired tracker is silent but the car is home and the borrower not sought yet.
        Case([ping(at(0)), *(wireless(h) for h in (1, 3, 7))], at(7)),
    ),
    # Parked at home; the wired tracker falls silent; 3 h later the wireless one shows the car
    # far away and a call goes unanswered.
    "wired-left-behind-unanswered": (
        Case(
            by_time(*parked_wired(0, 61), wireless_at(180, FAR), contact(at(3.5), "no_answer")),
            at(4),
        ),
        # The same, and the borrower answers.
        Case(
            by_time(*parked_wired(0, 61), wireless_at(180, FAR), contact(at(3.5), "reached")),
            at(4),
        ),
    ),
    # Home a resident point, the wired tracker reporting every 20 min there; silent from
    # 39:40 (cut), and the first call at 42 h goes unanswered.
    "wired-overdue-unanswered": (
        Case(by_time(*lived_in(), contact(at(42), "no_answer")), at(43)),
        # The same, and the borrower answers.
        Case(by_time(*lived_in(), contact(at(42), "reached")), at(43)),
    ),
    # A wireless-only car: its tracker reports at 09:00 and 21:00; the 21:00 report at 108 h
    # shows it in another city, the 09:00 one never comes, and the call at 122 h fails.
    "wireless-overdue-away-unanswered": (
        Case(
            by_time(*lived(96), report(108, AWAY), contact(at(122), "no_answer")),
            at(123),
            devices=WIRELESS_ONLY,
        ),
        # The same, and the borrower answers.
        Case(
            by_time(*lived(96), report(108, AWAY), contact(at(122), "reached")),
            at(123),
            devices=WIRELESS_ONLY,
        ),
    ),
    "wired-silent-wireless-alive": (
        Case([ping(at(0)), *(wireless(h) for h in (0, 3, 6, 9, 12))], at(12.1)),
        # Silent for a working day (an underground car park without coverage): not yet.
        Case([ping(at(0)), *(wireless(h) for h in (0, 3, 6, 9))], at(11.9)),
    ),
    "tracker-power-cut": (
        Case(every(1 / 6, 0, 0.5, HOME, alarms=("power_cut",)), at(0.5)),
        # Power back after 10 minutes (a workshop swapping the battery).
        Case(
            [*every(1 / 6, 0, 0.2, HOME, alarms=("power_cut",)), *every(1 / 6, 0.2, 0.5, HOME)],
            at(0.5),
        ),
    ),
    "tracker-removed": (
        Case([ping(at(0)), ping(at(1), alarms=("removal",))], at(1)),
        Case([ping(at(0)), ping(at(1), alarms=("vibration",))], at(1)),
    ),
    "all-trackers-offline-overdue": (
        Case(hourly_pings(0, 100), at(99 + 48, minutes=1)),
        Case(hourly_pings(0, 100), at(99 + 47)),
    ),
    "overdue-30-days": (
        Case([ping(at(0))], at(OVERDUE, days=29)),
        Case([ping(at(0))], at(OVERDUE, days=28)),
    ),
    "unreachable-3-days": (
        Case([ping(at(0)), *(contact(at(112 + 12 * n), "no_answer") for n in range(7))], at(185)),
        # Someone answered halfway: the streak restarts.
        Case(
            [
                ping(at(0)),
                *(contact(at(112 + 12 * n), "no_answer") for n in range(3)),
                contact(at(150), "reached"),
                *(contact(at(160 + 6 * n), "no_answer") for n in range(4)),
            ],
            at(185),
        ),
    ),
}


def test_every_default_rule_has_a_case() -> None:
    assert {r.id for r in default_engine().rules.rules} == set(CASES)
    assert len(CASES) >= 12


def fired_rules(case: Case) -> set[str]:
    engine, state = start(devices=case.devices)
    alerts = run(engine, state, case.events, until=case.until)
    if case.extra is not None:
        alerts += case.extra(engine, state)
    return firing(alerts)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires(rule_id: str) -> None:
    assert rule_id in fired_rules(CASES[rule_id][0])


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_near_miss_does_not_fire(rule_id: str) -> None:
    assert rule_id not in fired_rules(CASES[rule_id][1])

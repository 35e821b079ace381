"""Tracker-kind-aware offline rules (issue 12, defect 4) and the wired-silent combinations
(defect 2), table-driven from the failing shapes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.rules.rules_factories import (
    FAR,
    HOME,
    at,
    contact,
    firing,
    open_alerts,
    ping,
    run,
    start,
)

pytestmark = pytest.mark.unit

WIRELESS_ONLY = (("X1", "wireless"),)
BOTH = (("W1", "wired"), ("X1", "wireless"))


def wireless(h: float, where: tuple[float, float] = FAR) -> Any:
    return ping(at(h), where, device="X1", kind="wireless")


@pytest.mark.parametrize(
    ("devices", "events", "until", "fires"),
    [
        # The failing shape: a wireless-only car away, its daily report 6 h late.
        pytest.param(WIRELESS_ONLY, [wireless(0), wireless(24), wireless(48)], 48 + 30, False,
                     id="wireless-only-daily-report-late"),
        pytest.param(WIRELESS_ONLY, [wireless(0), wireless(24)], 24 + 47.9, False,
                     id="wireless-only-47h-silent"),
        pytest.param(WIRELESS_ONLY, [wireless(0), wireless(24)], 24 + 48.1, True,
                     id="wireless-only-48h-silent"),
        pytest.param(BOTH, [ping(at(0), FAR), wireless(0)], 24.1, True,
                     id="wired-and-wireless-silent-a-day"),
        pytest.param(BOTH, [ping(at(0), FAR), wireless(0)], 23.9, False,
                     id="wired-and-wireless-silent-under-a-day"),
        pytest.param(WIRELESS_ONLY, [wireless(0, HOME), wireless(24, HOME)], 24 + 49, False,
                     id="wireless-only-silent-at-home"),
    ],
)  # fmt: skip
def test_offline_day_out_of_region_respects_tracker_kind(
    devices: tuple[tuple[str, str], ...], events: list[Any], until: float, fires: bool
) -> None:
    engine, state = start(devices=devices)
    alerts = run(engine, state, events, until=at(until))
    assert ("offline-day-out-of-region" in firing(alerts)) is fires


@pytest.mark.parametrize(
    ("events", "until", "expected"),
    [
        # The failing shape: wired silent, wireless shows the car in another city.
        pytest.param([ping(at(0)), wireless(1), wireless(3), wireless(7)], 7,
                     {"wired-silent-away"}, id="wired-silent-car-away"),
        pytest.param([ping(at(0)), wireless(1, HOME), wireless(3, HOME), wireless(7, HOME),
                      *(contact(at(7 + n / 4), "no_answer") for n in range(4))], 8.5,
                     {"wired-silent-away"}, id="wired-silent-borrower-unreachable"),
        pytest.param([ping(at(0)), wireless(1, HOME), wireless(3, HOME), wireless(7, HOME),
                      wireless(11, HOME)], 12.5,
                     {"wired-silent-wireless-alive"}, id="wired-silent-only-a-warning"),
        # The failing shape of the flapping warning: an underground car park at work without
        # coverage, the wired tracker's fixes buffered for a working day, then uploaded.
        pytest.param([ping(at(0)), wireless(1, HOME), wireless(5, HOME), wireless(9, HOME),
                      ping(at(10.5)), *(ping(at(h), HOME, backfill=True) for h in (1, 4, 8))],
                     11, set(), id="wired-buffered-through-a-working-day"),
        pytest.param([ping(at(0)), wireless(1, HOME), wireless(5, HOME), wireless(9, HOME)], 11,
                     set(), id="wired-silent-11h-at-home"),
        pytest.param([ping(at(0)), wireless(1, HOME), wireless(3, HOME), ping(at(5)),
                      wireless(7)], 7, set(), id="wired-alive"),
    ],
)  # fmt: skip
def test_wired_silent_combinations(events: list[Any], until: float, expected: set[str]) -> None:
    engine, state = start(devices=BOTH)
    alerts = run(engine, state, events, until=at(until))
    # (the warning may fire first, at 6 h; the critical then inhibits it)
    assert open_alerts(state) & {"wired-silent-away", "wired-silent-wireless-alive"} == expected
    if expected == {"wired-silent-away"}:
        severity = {a.rule_id: a.severity.value for a in alerts}["wired-silent-away"]
        assert severity == "critical"

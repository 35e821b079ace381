"""Each state variable and each trap of DESIGN §5, table-driven."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from rules.engine import FutureEventError
from rules.events import MultiPolygonRegion, PolygonRegion
from tests.unit.rules.rules_factories import (
    FAR,
    FIRST_OVERDUE_H,
    HOME,
    IMPOUND_LOT,
    SECOND_PLEDGE_LOT,
    USED_CAR_MARKET,
    at,
    contact,
    firing,
    hourly_pings,
    payment,
    ping,
    run,
    start,
)

pytestmark = pytest.mark.unit

DAY_S = 86400.0


def signals_after(events: list[Any], when: dt.datetime, **loan_fields: Any) -> dict[str, Any]:
    engine, state = start(**loan_fields)
    run(engine, state, events, until=when)
    return engine.signals(state, when)


# ------------------------------------------------------------------ payments


@pytest.mark.parametrize(
    ("events", "when", "expected"),
    [
        pytest.param(
            [], at(FIRST_OVERDUE_H - 0.01), {"dpd": 0, "missed": 0}, id="due-day-not-over"
        ),
        pytest.param([], at(FIRST_OVERDUE_H), {"dpd": 1, "missed": 1}, id="due-passes-no-event"),
        pytest.param([], at(FIRST_OVERDUE_H, days=9), {"dpd": 10, "missed": 1}, id="ten-days"),
        pytest.param(
            [], at(FIRST_OVERDUE_H, days=31), {"dpd": 32, "missed": 2}, id="second-due-passes"
        ),
        pytest.param(
            [payment(at(50), "payment_received")],
            at(FIRST_OVERDUE_H, days=3),
            {"dpd": 0, "missed": 0},
            id="paid-before-due",
        ),
        pytest.param(
            [payment(at(50), "payment_received", amount=1000.0)],
            at(FIRST_OVERDUE_H),
            {"dpd": 1, "missed": 1, "amount": 2500.0},
            id="partial-payment-still-overdue",
        ),
        pytest.param(
            [
                payment(at(50), "payment_received", amount=1000.0),
                payment(at(51), "payment_received", amount=2500.0),
            ],
            at(FIRST_OVERDUE_H),
            {"dpd": 0, "missed": 0},
            id="two-partials-settle",
        ),
        pytest.param(
            [payment(at(50), "payment_received"), payment(at(60), "payment_reversed")],
            at(FIRST_OVERDUE_H),
            {"dpd": 1, "missed": 1},
            id="reversal-reopens",
        ),
        pytest.param(
            [payment(at(150), "payment_received")],
            at(160),
            {"dpd": 0, "missed": 0, "first": False},
            id="paid-late-cures",
        ),
        pytest.param(
            [payment(at(50), "payment_failed"), payment(at(52), "payment_failed")],
            at(60),
            {"failed": 2},
            id="failed-debits-count",
        ),
        pytest.param(
            [payment(at(50), "payment_failed"), payment(at(55), "payment_received")],
            at(60),
            {"failed": 0},
            id="failed-then-received",
        ),
    ],
)
def test_payment_signals(events: list[Any], when: dt.datetime, expected: dict[str, Any]) -> None:
    s = signals_after(events, when)
    names = {
        "dpd": "payment.days_past_due",
        "missed": "payment.missed_installments",
        "amount": "payment.overdue_amount",
        "first": "payment.first_delinquency",
        "failed": "payment.failed_debits",
    }
    assert {k: s[names[k]] for k in expected} == expected


def test_due_date_with_no_event_is_a_deadline() -> None:
    """Absence detection: the engine asks to be woken exactly when the due date ends."""
    engine, state = start()
    run(engine, state, [ping(at(1))])
    deadline = engine.next_deadline(state)
    # 2024-03-06 00:00 CST is when instalment 1 (due 03-05) becomes past due (other deadlines,
    # e.g. the wireless tracker's offline threshold, may come first).
    due_end = at(FIRST_OVERDUE_H)
    assert deadline is not None and deadline <= due_end
    engine.advance(state, due_end - dt.timedelta(seconds=1))
    assert engine.signals(state)["payment.days_past_due"] == 0
    engine.advance(state, due_end)
    assert state.clock == due_end.timestamp()
    assert engine.signals(state)["payment.days_past_due"] == 1


def test_days_past_due_follows_loan_time_zone() -> None:
    from rules.events import Loan

    engine, state = start()
    base = state.to_bytes()
    # The same schedule in UTC: past due at 2024-03-06 00:00 UTC = 08:00 CST.
    loan_utc = Loan.model_validate(
        {**_loan_json(), "timezone": "UTC"},
    )
    utc_state = engine.new_state("L1")
    engine.apply(utc_state, loan_utc, at(0))
    assert state.to_bytes() == base
    when = at(FIRST_OVERDUE_H + 4)  # 04:00 CST: past due in CST, not yet in UTC
    assert engine.signals(state, when)["payment.days_past_due"] == 1
    assert engine.signals(utc_state, when)["payment.days_past_due"] == 0


def _loan_json() -> dict[str, Any]:
    from tests.unit.rules.rules_factories import loan

    return loan().model_dump(mode="json")


# ------------------------------------------------------------------ contacts

B, G, E = "borrower", "guarantor", "emergency_contact"


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        pytest.param([(B, "no_answer")] * 3, (3, 1, 0), id="three-no-answer"),
        pytest.param(
            [(B, "no_answer"), (G, "rejected"), (E, "busy")], (3, 3, 0), id="across-parties"
        ),
        pytest.param(
            [(B, "no_answer"), (B, "reached"), (B, "no_answer")], (1, 1, 0), id="reached-resets"
        ),
        pytest.param(
            [(B, "no_answer"), (G, "promise_to_pay"), (B, "busy")], (1, 1, 0), id="ptp-resets"
        ),
        pytest.param(
            [(B, "powered_off"), (B, "suspended"), (B, "number_invalid")], (3, 1, 3), id="dead-line"
        ),
        pytest.param(
            [(B, "powered_off"), (B, "no_answer"), (B, "powered_off")],
            (3, 1, 1),
            id="dead-line-streak-broken",
        ),
        pytest.param(
            [(B, "powered_off"), (G, "no_answer"), (B, "powered_off")],
            (3, 2, 2),
            id="other-party-does-not-break-line-streak",
        ),
        pytest.param([(B, "no_answer"), (B, "delivered")], (1, 1, 0), id="delivered-neutral"),
        pytest.param([(B, "undelivered")], (1, 1, 0), id="undelivered-fails"),
    ],
)
def test_contact_streak(attempts: list[tuple[str, str]], expected: tuple[int, int, int]) -> None:
    events = [contact(at(10 + n), outcome, party) for n, (party, outcome) in enumerate(attempts)]
    s = signals_after(events, at(30))
    got = (
        s["contact.consecutive_failures"],
        s["contact.parties_failed"],
        s["contact.unreachable_line"],
    )
    assert got == expected


def test_late_failure_before_a_reset_does_not_count() -> None:
    events = [contact(at(10), "reached"), contact(at(11), "no_answer"), contact(at(5), "no_answer")]
    s = signals_after(events, at(12))
    assert s["contact.consecutive_failures"] == 1
    assert s["contact.unreachable_for"] == pytest.approx(3600.0)


def test_late_reset_clears_older_failures_only() -> None:
    events = [contact(at(10), "no_answer"), contact(at(12), "busy"), contact(at(11), "reached")]
    s = signals_after(events, at(13))
    assert s["contact.consecutive_failures"] == 1
    assert s["contact.last_reached_at"] == at(11).timestamp()


# ------------------------------------------------------------------ home region

SQUARE = PolygonRegion(
    type="Polygon",
    coordinates=[[(103.9, 30.5), (104.2, 30.5), (104.2, 30.8), (103.9, 30.8), (103.9, 30.5)]],
)
TWO_SQUARES = MultiPolygonRegion(
    type="MultiPolygon",
    coordinates=[
        [[(103.9, 30.5), (104.2, 30.5), (104.2, 30.8), (103.9, 30.8), (103.9, 30.5)]],
        [[(104.5, 30.5), (104.6, 30.5), (104.6, 30.6), (104.5, 30.6), (104.5, 30.5)]],
    ],
)
M_PER_DEG_LAT = 111_195.0
# Points north of the 30.8 border of SQUARE, by metres.
NORTH_300 = (30.8 + 300 / M_PER_DEG_LAT, 104.0)
NORTH_800 = (30.8 + 800 / M_PER_DEG_LAT, 104.0)
SOUTH_100_IN = (30.8 - 100 / M_PER_DEG_LAT, 104.0)


@pytest.mark.parametrize(
    ("region", "track", "outside", "outside_for_h"),
    [
        pytest.param("default", [HOME, FAR], True, 1.0, id="circle-leaves"),
        pytest.param("default", [HOME, FAR, HOME], False, 0.0, id="circle-returns"),
        pytest.param(SQUARE, [(30.6, 104.0), NORTH_800], True, 1.0, id="polygon-leaves"),
        pytest.param(SQUARE, [(30.6, 104.0), NORTH_300], False, 0.0, id="within-margin-stays-in"),
        pytest.param(
            SQUARE,
            [(30.6, 104.0), NORTH_800, NORTH_300],
            True,
            2.0,
            id="hysteresis-stays-out-in-band",
        ),
        pytest.param(
            SQUARE, [(30.6, 104.0), NORTH_800, SOUTH_100_IN], False, 0.0, id="back-inside"
        ),
        pytest.param(
            SQUARE,
            [(30.6, 104.0), NORTH_300, SOUTH_100_IN, NORTH_300, SOUTH_100_IN, NORTH_300],
            False,
            0.0,
            id="border-drift-never-flaps",
        ),
        pytest.param(TWO_SQUARES, [(30.55, 104.55)], False, 0.0, id="multipolygon-second-part"),
        pytest.param(TWO_SQUARES, [(30.55, 104.35)], True, 1.0, id="multipolygon-gap"),
    ],
)
def test_home_region(
    region: Any, track: list[tuple[float, float]], outside: bool, outside_for_h: float
) -> None:
    events = [ping(at(n), where) for n, where in enumerate(track)]
    s = signals_after(events, at(len(track)), region=region)
    assert s["vehicle.outside_home_region"] is outside
    assert s["vehicle.outside_home_region_for"] == pytest.approx(outside_for_h * 3600.0)


def test_border_drift_raises_no_region_change() -> None:
    engine, state = start(region=SQUARE)
    track = [(30.6, 104.0)] + [NORTH_300, SOUTH_100_IN] * 10
    run(engine, state, [ping(at(n), w) for n, w in enumerate(track)])
    assert state.inside is True and state.outside_since is None


def test_cell_tower_fix_needs_a_wider_margin() -> None:
    events = [ping(at(0), (30.6, 104.0)), ping(at(1), NORTH_800, fix="lbs")]
    s = signals_after(events, at(2), region=SQUARE)
    assert s["vehicle.outside_home_region"] is False


def test_fix_none_is_proof_of_life_not_position() -> None:
    events = [ping(at(0)), ping(at(10), FAR, fix="none")]
    s = signals_after(events, at(10))
    assert s["vehicle.outside_home_region"] is False
    assert s["device.offline_for.wired"] == 0.0


# ------------------------------------------------------------------ risk places


@pytest.mark.parametrize(
    ("track", "kind", "dwell_h"),
    [
        pytest.param([HOME, SECOND_PLEDGE_LOT], "second_pledge_lot", 1.0, id="enters-lot"),
        pytest.param(
            [HOME, SECOND_PLEDGE_LOT, SECOND_PLEDGE_LOT, SECOND_PLEDGE_LOT],
            "second_pledge_lot",
            3.0,
            id="dwell-grows",
        ),
        pytest.param([HOME, SECOND_PLEDGE_LOT, HOME], "", 0.0, id="leaves"),
        pytest.param(
            [HOME, SECOND_PLEDGE_LOT, (SECOND_PLEDGE_LOT[0] + 200 / M_PER_DEG_LAT, 104.0335)],
            "second_pledge_lot",
            2.0,
            id="exit-margin-hysteresis",
        ),
        pytest.param([HOME, USED_CAR_MARKET], "used_car_market", 1.0, id="used-car-market"),
        pytest.param([HOME, IMPOUND_LOT], "impound_lot", 1.0, id="impound"),
        pytest.param([(SECOND_PLEDGE_LOT[0] + 0.01, 104.0335)], "", 0.0, id="near-but-outside"),
    ],
)
def test_risk_places(track: list[tuple[float, float]], kind: str, dwell_h: float) -> None:
    events = [ping(at(n), where) for n, where in enumerate(track)]
    s = signals_after(events, at(len(track)))
    assert s["vehicle.risk_place_kind"] == kind
    assert s["vehicle.at_risk_place"] is bool(kind)
    assert s["vehicle.risk_place_dwell"] == pytest.approx(dwell_h * 3600.0)


def test_cell_tower_fix_never_places_a_car_at_a_lot() -> None:
    s = signals_after([ping(at(0)), ping(at(1), SECOND_PLEDGE_LOT, fix="lbs")], at(2))
    assert s["vehicle.at_risk_place"] is False


# ------------------------------------------------------------------ trackers


@pytest.mark.parametrize(
    ("events", "hours", "expected"),
    [
        pytest.param(
            [ping(at(0)), ping(at(0), device="X1", kind="wireless")],
            5.9,
            {"device.offline.wired": False, "device.offline.wireless": False},
            id="both-fresh",
        ),
        pytest.param(
            [ping(at(0)), ping(at(0), device="X1", kind="wireless")],
            6.1,
            {
                "device.offline.wired": True,
                "device.offline.wireless": False,
                "devices.silent_kind": "wired",
            },
            id="wired-6h-threshold",
        ),
        pytest.param(
            [ping(at(47)), ping(at(0), device="X1", kind="wireless")],
            48.1,
            {
                "device.offline.wired": False,
                "device.offline.wireless": True,
                "devices.silent_kind": "wireless",
            },
            id="wireless-48h-threshold",
        ),
        pytest.param(
            [ping(at(0))],
            49.0,
            {
                "device.offline.wireless": True,
                "device.all_offline": True,
                "devices.silent_kind": "",
            },
            id="never-reported-counts-from-binding",
        ),
    ],
)
def test_offline_thresholds(events: list[Any], hours: float, expected: dict[str, Any]) -> None:
    s = signals_after(events, at(hours))
    assert {k: s[k] for k in expected} == expected


def test_offline_crossing_is_a_deadline() -> None:
    engine, state = start(devices=(("W1", "wired"),))
    run(engine, state, [ping(at(0))])
    assert engine.signals(state, at(6) - dt.timedelta(seconds=1))["device.offline.wired"] is False
    deadlines = []
    while (deadline := engine.next_deadline(state)) is not None and deadline <= at(7):
        deadlines.append(deadline)
        engine.advance(state, deadline)
    assert any(abs((d - at(6)).total_seconds()) < 0.01 for d in deadlines)


@pytest.mark.parametrize(
    ("alarm_pings", "hours", "active"),
    [
        pytest.param([(0, ("power_cut",))], 30.0, ["power_cut"], id="power-cut-lasts"),
        pytest.param([(0, ("power_cut",)), (1, ())], 2.0, [], id="power-restored"),
        pytest.param([(0, ("removal",)), (1, ())], 2.0, ["removal"], id="removal-latches"),
        pytest.param([(0, ("removal",))], 24.01, [], id="removal-expires-after-24h"),
        pytest.param(
            [(0, ("tamper",)), (20, ("tamper",))], 30.0, ["tamper"], id="re-raised-extends"
        ),
    ],
)
def test_alarms(
    alarm_pings: list[tuple[float, tuple[str, ...]]], hours: float, active: list[str]
) -> None:
    events = [ping(at(h), alarms=alarms) for h, alarms in alarm_pings]
    assert signals_after(events, at(hours))["device.alarms"] == active


@pytest.mark.parametrize("alarm_first", [True, False], ids=["alarm-first", "periodic-first"])
def test_an_alarm_report_in_the_same_second_as_a_periodic_report_counts(alarm_first: bool) -> None:
    """Trackers send an alarm report at once, which may fall in the second of a periodic one;
    either may arrive first. (A later or same-second report without the alarm is otherwise
    taken for a copy of the first, and its alarms were dropped.)"""
    alarm, periodic = ping(at(1), alarms=("removal",)), ping(at(1))
    same_second = [alarm, periodic] if alarm_first else [periodic, alarm]
    engine, state = start()
    alerts = run(engine, state, [ping(at(0)), *same_second])
    assert engine.signals(state, at(1))["device.alarms"] == ["removal"]
    assert "tracker-removed" in firing(alerts)


def test_a_same_second_report_raises_an_alarm_once_and_clears_none() -> None:
    engine, state = start()
    run(engine, state, [ping(at(0)), ping(at(1), alarms=("power_cut",))])
    before = state.to_bytes()
    # resent under a new id, and a report of the same second without the alarm: no change
    run(engine, state, [ping(at(1), alarms=("power_cut",)), ping(at(1))])
    assert state.to_bytes() == before
    assert engine.signals(state, at(1))["device.alarms"] == ["power_cut"]


# Late and backfilled alarms (issue 12, defect 5: they used to be ignored):
# tests/unit/rules/test_late_alarms.py


# Wired vs wireless separation: tests/unit/rules/test_separation.py


def test_live_wired_tracker_drives_vehicle_position() -> None:
    events = [ping(at(0)), ping(at(1), FAR, device="X1", kind="wireless")]
    s = signals_after(events, at(1))
    assert s["vehicle.outside_home_region"] is False  # the wired one is live and at home


# ------------------------------------------------------------------ late data, drift, duplicates


def test_backfill_updates_history_not_current_state() -> None:
    engine, state = start()
    run(engine, state, [ping(at(0)), ping(at(5))])
    before = (state.position, state.place_id, state.devices["W1"].last_seen)
    alerts = run(engine, state, [ping(at(2), SECOND_PLEDGE_LOT, backfill=True)])
    assert (state.position, state.place_id, state.devices["W1"].last_seen) == before
    assert [v[0] for v in state.visits] == ["cd-2p-001"]  # history knows the visit
    assert alerts == []
    assert engine.signals(state, at(5))["vehicle.risk_place_visits"] == 1


def test_buffered_upload_after_an_outage_waits_for_live_data() -> None:
    """Pings buffered during an outage are newer than the device's last one, so they do update
    the position — but the decision waits for the live ping, which here shows the car home."""
    engine, state = start()
    run(engine, state, [ping(at(0))])
    buffered = [ping(at(h), SECOND_PLEDGE_LOT, backfill=True) for h in (1, 3, 8)]
    alerts = []
    for event in buffered:  # they arrive at hour 10, when the device reconnects
        alerts += engine.apply(state, event, at(10))
    assert alerts == [] and state.pending_eval is not None
    alerts += engine.apply(state, ping(at(10)), at(10))
    assert not any(a.rule_id == "long-dwell-second-pledge-lot" for a in alerts)
    assert state.place_id == ""


def test_buffered_upload_with_no_live_ping_is_evaluated_after_settling() -> None:
    engine, state = start()
    run(engine, state, [ping(at(0))])
    alerts = []
    for h in (1, 3, 8):
        alerts += engine.apply(state, ping(at(h), SECOND_PLEDGE_LOT, backfill=True), at(10))
    assert alerts == []
    alerts = engine.advance(state, at(10, minutes=5))
    assert "long-dwell-second-pledge-lot" in {a.rule_id for a in alerts}


def test_impossible_jump_is_drift() -> None:
    engine, state = start()
    run(engine, state, [ping(at(0)), ping(at(0, minutes=1), FAR), ping(at(0, minutes=2))])
    assert state.position is not None and state.position[1:3] == [HOME[0], HOME[1]]
    assert engine.stats["drift_discarded"] == 1


def test_two_agreeing_jumps_are_a_real_move() -> None:
    engine, state = start()
    run(engine, state, [ping(at(0)), ping(at(0, minutes=1), FAR), ping(at(0, minutes=2), FAR)])
    assert state.position is not None and state.position[1:3] == [FAR[0], FAR[1]]


def test_long_silence_then_far_away_is_not_drift() -> None:
    engine, state = start()
    run(engine, state, [ping(at(0)), ping(at(5), FAR)])
    assert state.inside is False


@pytest.mark.parametrize("backfill", [False, True])
def test_drift_fix_redelivered_after_the_seen_window_changes_nothing(backfill: bool) -> None:
    """Found by test_duplicates_change_nothing: a fix discarded as drift at a risk place, then
    redelivered once the duplicate filter has forgotten its id, must not become a visit."""
    engine, state = start()
    jump = ping(at(0, minutes=1), SECOND_PLEDGE_LOT, backfill=backfill)  # ~6 km in a minute
    run(engine, state, [ping(at(0)), jump, *hourly_pings(1, 20)])
    assert engine.stats["drift_discarded"] == 1
    # Buffered data feeds history whether it is judged drift or not (late, it cannot be judged).
    assert len(state.visits) == int(backfill)
    snapshot = state.to_bytes()
    run(engine, state, [jump])
    assert state.to_bytes() == snapshot


def test_wireless_fix_not_driving_the_vehicle_redelivered_changes_nothing() -> None:
    engine, state = start()
    wireless = ping(at(0, minutes=5), SECOND_PLEDGE_LOT, device="X1", kind="wireless")
    run(engine, state, [ping(at(0)), wireless, *hourly_pings(1, 20)])
    run(engine, state, [ping(at(20, minutes=1), device="X1", kind="wireless")])
    snapshot = state.to_bytes()
    run(engine, state, [wireless])
    assert state.to_bytes() == snapshot


def test_old_visit_dropped_from_the_kept_four_stays_dropped() -> None:
    engine, state = start()
    lots = [
        SECOND_PLEDGE_LOT,
        USED_CAR_MARKET,
        IMPOUND_LOT,
        (30.6921, 104.1306),
        (30.6705, 104.0412),
    ]
    first = ping(at(1), lots[0], backfill=True)
    later = [ping(at(2 + n), where, backfill=True) for n, where in enumerate(lots[1:])]
    run(engine, state, [ping(at(10)), first, *later, *hourly_pings(11, 30)], until=at(30))
    assert "cd-2p-001" not in [v[0] for v in state.visits]  # the oldest of five
    snapshot = state.to_bytes()
    run(engine, state, [first], until=at(30))
    assert state.to_bytes() == snapshot


def test_repeated_event_id_is_ignored_even_with_other_content() -> None:
    engine, state = start()
    run(engine, state, [ping(at(0), event_id="same")])
    snapshot = state.to_bytes()
    run(engine, state, [ping(at(1), FAR, event_id="same")])
    assert state.to_bytes() == snapshot
    assert engine.stats["duplicates"] == 1


def test_event_from_the_far_future_is_refused_aloud_and_changes_nothing() -> None:
    """Issue 14: the engine used to drop such an event silently (counted only in its stats);
    it raises instead, so that the caller dead-letters it with the reason."""
    engine, state = start()
    engine.apply(state, ping(at(0)), at(0))
    snapshot = state.to_bytes()
    far = ping(at(0, days=400), event_id="far")
    with pytest.raises(FutureEventError, match=r"event far: event time .* is 34556400 s ahead"):
        engine.apply(state, far, at(1))
    assert state.to_bytes() == snapshot
    assert state.devices["W1"].last_seen == at(0).timestamp()
    assert engine.stats["future_rejected"] == 1
    # one day ahead exactly is still taken
    engine.apply(state, ping(at(1, days=1), event_id="edge"), at(1))
    assert state.devices["W1"].last_seen == at(1, days=1).timestamp()


# ------------------------------------------------------------------ stationary


def test_stationary_and_usual_place_learning() -> None:
    engine, state = start()
    # Parked at home 30 h, drives away, comes back: home is now a usual place.
    events = [*hourly_pings(0, 30), ping(at(30, minutes=30), FAR), ping(at(40), FAR)]
    events += [ping(at(50)), ping(at(51))]
    run(engine, state, events)
    s = engine.signals(state, at(60))
    assert s["vehicle.at_usual_place"] is True
    assert s["vehicle.stationary_for"] == pytest.approx(10 * 3600.0)
    far_state = signals_after([ping(at(0), FAR)], at(80))
    assert far_state["vehicle.at_usual_place"] is False
    assert far_state["vehicle.stationary_for"] == pytest.approx(80 * 3600.0)

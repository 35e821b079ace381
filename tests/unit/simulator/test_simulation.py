"""The simulator core: determinism, valid records, arrival order, labels and scenarios."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from rules.events import GpsPing, Label, Loan, PaymentEvent, read_recording
from rules.places import Place, PlaceKind
from services.simulator import (
    DEFAULT_START,
    LABELLED_AT_FIRST_FAILED,
    NOISE_SCENARIOS,
    SKIP_SCENARIOS,
    Record,
    Scenario,
    Simulation,
    SimulationConfig,
    distance_km,
    format_ts,
    generate_places,
    simulate,
    simulate_recording,
    vin_check_digit,
)

pytestmark = pytest.mark.unit

CONFIG = SimulationConfig(
    loans=40,
    days=8,
    seed=7,
    skip_fraction=0.25,
    noise_fraction=0.4,
    duplicate_rate=0.01,
    out_of_order_rate=0.02,
)


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return Simulation(CONFIG)


@pytest.fixture(scope="module")
def records(sim: Simulation) -> list[Record]:
    return list(sim.records())


def _lines(records: list[Record]) -> list[str]:
    return [r.line().decode() for r in records]


def _region(loan: dict[str, Any]) -> tuple[float, float, float]:
    """Centre and radius of a loan's home region (the polygons are drawn around a circle)."""
    region = loan["home_region"]
    if "center" in region:
        return region["center"][0], region["center"][1], region["radius_km"]
    ring = region["coordinates"][0][:-1]
    lat = sum(p[1] for p in ring) / len(ring)
    lon = sum(p[0] for p in ring) / len(ring)
    return lat, lon, distance_km(lat, lon, ring[0][1], ring[0][0])


def test_same_seed_same_bytes_and_another_seed_differs() -> None:
    small = SimulationConfig(loans=12, days=3, seed=3, skip_fraction=0.5)
    first = _lines(list(Simulation(small).records()))
    again = _lines(list(Simulation(small).records()))
    other = _lines(list(Simulation(SimulationConfig(loans=12, days=3, seed=4)).records()))
    assert first == again
    assert first != other
    assert Simulation(small).labels == Simulation(small).labels


def test_a_loan_does_not_change_when_the_portfolio_grows() -> None:
    # Same scenario (all punctual): loan 3 is the same loan in a portfolio of 5 or of 50.
    punctual = SimulationConfig(
        loans=5, days=2, skip_fraction=0.0, late_fraction=0.0, noise_fraction=0.0
    )
    small = Simulation(punctual)
    large = Simulation(replace(punctual, loans=50))
    assert small.loans == large.loans[:5]
    small_events = [r.line() for r in small.records() if r.key in ("dev-3-w", "loan-000003")]
    large_events = [r.line() for r in large.records() if r.key in ("dev-3-w", "loan-000003")]
    assert small_events == large_events


def test_every_record_validates_against_the_event_models(records: list[Record]) -> None:
    decoded = list(read_recording(_lines(records)))
    assert len(decoded) == len(records)
    by_topic = Counter(topic for topic, _ in decoded)
    assert by_topic["loans"] == CONFIG.loans
    assert by_topic["gps.raw"] > 1000
    assert by_topic["payments"] > 0 and by_topic["contacts"] > 0
    loans = [event for topic, event in decoded if topic == "loans"]
    assert all(isinstance(loan, Loan) for loan in loans)
    for loan in loans:
        assert isinstance(loan, Loan)
        assert 12 <= len(loan.schedule) <= 36
        assert loan.timezone == "Asia/Shanghai"
        assert loan.borrower.phone.startswith("+86 1")
        assert vin_check_digit(loan.vehicle.vin) == loan.vehicle.vin[8]
        assert {d.device_id for d in loan.devices} <= {
            f"dev-{int(loan.loan_id.split('-')[1])}-w",
            f"dev-{int(loan.loan_id.split('-')[1])}-x",
        }


def test_keys_are_device_for_gps_and_loan_for_the_rest(records: list[Record]) -> None:
    for record in records:
        field = "device_id" if record.topic == "gps.raw" else "loan_id"
        assert record.key == record.value[field]


def test_vin_check_digit_matches_the_iso_3779_example() -> None:
    assert vin_check_digit("1M8GDM9AXKP042788") == "X"
    assert vin_check_digit("11111111111111111") == "1"


def test_loans_come_first_then_events_in_arrival_order(records: list[Record]) -> None:
    topics = [r.topic for r in records]
    assert topics[: CONFIG.loans] == ["loans"] * CONFIG.loans
    assert "loans" not in topics[CONFIG.loans :]
    arrivals = [r.arrival for r in records]
    assert arrivals == sorted(arrivals)
    assert all(r.arrival >= r.event_time for r in records)
    start, end = DEFAULT_START.timestamp(), DEFAULT_START.timestamp() + CONFIG.days * 86400
    events = records[CONFIG.loans :]
    assert all(start <= r.event_time < end for r in events)


def test_backfill_arrives_after_newer_live_pings(sim: Simulation, records: list[Record]) -> None:
    gap_devices = {
        f"dev-{int(loan_id.split('-')[1])}-w"
        for loan_id, s in sim.scenarios.items()
        # Coverage gaps, and cars parked underground at work: buffered and uploaded later.
        if s in (Scenario.TRACKER_GAP, Scenario.BUFFERED_ALARM, Scenario.UNDERGROUND_GARAGE)
    }
    newest_live: dict[str, float] = {}
    backfilled = 0
    for record in records:
        if record.topic != "gps.raw":
            continue
        device = record.key
        if record.value["backfill"]:
            backfilled += 1
            assert device in gap_devices
            # Delivered late: a newer live ping of the same tracker was already delivered.
            assert newest_live[device] > record.event_time
        else:
            newest_live[device] = max(newest_live.get(device, 0.0), record.event_time)
    assert backfilled > 10


def test_duplicates_repeat_the_event_id_and_value(records: list[Record]) -> None:
    seen: dict[str, dict[str, Any]] = {}
    repeats = 0
    for record in records[CONFIG.loans :]:
        event_id = record.value["event_id"]
        if event_id in seen:
            repeats += 1
            assert seen[event_id] == record.value
        seen[event_id] = record.value
    assert repeats > 0


def test_some_live_pings_arrive_out_of_order(records: list[Record]) -> None:
    last: dict[str, float] = {}
    reordered = 0
    for record in records:
        if record.topic == "gps.raw" and not record.value["backfill"]:
            if record.event_time < last.get(record.key, 0.0):
                reordered += 1
            last[record.key] = max(last.get(record.key, 0.0), record.event_time)
    assert reordered > 0


def test_labels_only_for_skip_loans_at_times_inside_the_window(sim: Simulation) -> None:
    labels = sim.labels
    skips = {loan_id for loan_id, s in sim.scenarios.items() if s in SKIP_SCENARIOS}
    assert {label.loan_id for label in labels} == skips
    assert len(skips) == round(CONFIG.loans * CONFIG.skip_fraction)
    start = DEFAULT_START
    for label in labels:
        assert start + timedelta(days=1) <= label.unreachable_at < start + timedelta(days=8)
        assert label.unreachable_at.utcoffset() == timedelta(hours=8)


def test_skip_loans_pay_nothing_after_they_become_unreachable(
    sim: Simulation, records: list[Record]
) -> None:
    gone = {label.loan_id: label.unreachable_at.timestamp() for label in sim.labels}
    for record in records:
        if record.topic == "payments" and record.value["type"] == "payment_received":
            assert record.event_time < gone.get(record.key, float("inf"))
    # And collections keep failing: nobody reaches a skipped borrower afterwards.
    for record in records:
        if record.topic == "contacts" and record.event_time > gone.get(record.key, float("inf")):
            assert record.value["outcome"] not in ("reached", "promise_to_pay")


def _pings_by_loan(records: list[Record]) -> dict[str, list[Record]]:
    by_loan: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        if record.topic == "gps.raw":
            by_loan[f"loan-{int(record.key.split('-')[1]):06d}"].append(record)
    for pings in by_loan.values():
        pings.sort(key=lambda r: r.event_time)
    return by_loan


def test_out_of_region_skips_leave_at_the_label_and_stay_out(
    sim: Simulation, records: list[Record]
) -> None:
    loans = {loan["loan_id"]: loan for loan in sim.loans}
    pings = _pings_by_loan(records)
    labels = {label.loan_id: label.unreachable_at.timestamp() for label in sim.labels}
    checked = 0
    for loan_id, scenario in sim.scenarios.items():
        if scenario is not Scenario.SKIP_OUT_OF_REGION:
            continue
        lat, lon, radius = _region(loans[loan_id])
        t = labels[loan_id]
        before = [p for p in pings[loan_id] if p.event_time < t - 600]
        after = [p for p in pings[loan_id] if p.event_time > t + 600]
        assert before and after
        assert all(distance_km(p.value["lat"], p.value["lon"], lat, lon) < radius for p in before)
        assert all(distance_km(p.value["lat"], p.value["lon"], lat, lon) > radius for p in after)
        checked += 1
    assert checked >= 1


def test_skips_started_by_the_car_are_unreachable_from_the_first_failed_attempt(
    sim: Simulation, records: list[Record]
) -> None:
    """Parked at a lot, a tracker gone quiet, a drive away with paid-up instalments: the borrower
    goes dark then, and is unreachable from the first collection attempt that fails (no call
    fails before the borrower has gone; none succeeds after)."""
    loans = {loan["loan_id"]: loan for loan in sim.loans}
    labels = {label.loan_id: label.unreachable_at.timestamp() for label in sim.labels}
    pings = _pings_by_loan(records)
    checked = 0
    for loan_id, scenario in sim.scenarios.items():
        if scenario not in LABELLED_AT_FIRST_FAILED:
            continue
        calls = sorted(
            r.event_time
            for r in records
            if r.topic == "contacts"
            and r.key == loan_id
            and r.value["party"] == "borrower"
            and r.value["channel"] == "call"
        )
        assert calls and calls[0] == labels[loan_id]
        if scenario is Scenario.SKIP_OFFLINE_OUT_OF_REGION:
            # The car had already left when the first call failed.
            lat, lon, radius = _region(loans[loan_id])
            before = [p for p in pings[loan_id] if p.event_time <= labels[loan_id]]
            assert distance_km(before[-1].value["lat"], before[-1].value["lon"], lat, lon) > radius
        checked += 1
    assert checked >= 2


def test_seed_case_misses_an_instalment_and_goes_dark_before_leaving(
    sim: Simulation, records: list[Record]
) -> None:
    labels = {label.loan_id: label.unreachable_at.timestamp() for label in sim.labels}
    seed_loans = [i for i, s in sim.scenarios.items() if s is Scenario.SKIP_OUT_OF_REGION]
    assert seed_loans
    for loan_id in seed_loans:
        loan = next(loan for loan in sim.loans if loan["loan_id"] == loan_id)
        gone = labels[loan_id]
        missed = [
            i["due_date"]
            for i in loan["schedule"]
            if DEFAULT_START.date().isoformat() <= i["due_date"] < format_ts(gone)[:10]
        ]
        assert missed
        outcomes = [
            r.value["outcome"]
            for r in records
            if r.topic == "contacts" and r.key == loan_id and r.event_time < labels[loan_id]
        ]
        assert outcomes and "reached" not in outcomes
        assert "powered_off" in outcomes or "no_answer" in outcomes
        received = [
            r
            for r in records
            if r.topic == "payments" and r.key == loan_id and r.value["type"] == "payment_received"
        ]
        assert not received


def test_tracker_cut_is_a_power_cut_alarm_at_a_risk_place_at_the_label(
    sim: Simulation, records: list[Record]
) -> None:
    labels = {label.loan_id: label.unreachable_at.timestamp() for label in sim.labels}
    pings = _pings_by_loan(records)
    cuts = [i for i, s in sim.scenarios.items() if s is Scenario.SKIP_TRACKER_CUT]
    assert cuts
    for loan_id in cuts:
        wired = [p for p in pings[loan_id] if p.value["device_kind"] == "wired"]
        alarm = [p for p in wired if "power_cut" in p.value["alarms"]]
        assert alarm and alarm[0].event_time == labels[loan_id]
        assert wired[-1].value["alarms"] == ["power_cut"]  # silent after the backup battery
        place_lat, place_lon = alarm[0].value["lat"], alarm[0].value["lon"]
        near = [
            p
            for p in sim_places(sim)
            if distance_km(p.lat, p.lon, place_lat, place_lon) * 1000 <= p.radius_m
        ]
        assert near, "the cut happens inside a risk place"


def sim_places(sim: Simulation) -> list[Place]:
    return list(generate_places(sim.config.seed, sim.config.cities))


def test_separated_trackers_wired_silent_while_wireless_reports_far_away(
    sim: Simulation, records: list[Record]
) -> None:
    loans = {loan["loan_id"]: loan for loan in sim.loans}
    labels = {label.loan_id: label.unreachable_at.timestamp() for label in sim.labels}
    pings = _pings_by_loan(records)
    separated = [i for i, s in sim.scenarios.items() if s is Scenario.SKIP_SEPARATED]
    assert separated
    for loan_id in separated:
        lat, lon, radius = _region(loans[loan_id])
        wired = [p for p in pings[loan_id] if p.value["device_kind"] == "wired"]
        wireless = [p for p in pings[loan_id] if p.value["device_kind"] == "wireless"]
        assert max(p.event_time for p in wired) <= labels[loan_id]
        late = [p for p in wireless if p.event_time > labels[loan_id] + 86400]
        assert late
        assert all(distance_km(p.value["lat"], p.value["lon"], lat, lon) > radius for p in late)


def test_places_passed_in_are_where_skipping_cars_park() -> None:
    lot = Place("lot-1", PlaceKind.SECOND_PLEDGE_LOT, "测试二押点", 30.70, 104.10, radius_m=250)
    config = SimulationConfig(loans=30, days=6, seed=2, skip_fraction=0.5, places=(lot,))
    sim = Simulation(config)
    parked = [
        i
        for i, s in sim.scenarios.items()
        if s in (Scenario.SKIP_TRACKER_CUT, Scenario.SKIP_RISK_PLACE_DWELL)
        and sim.loans[int(i.split("-")[1]) - 1]["vehicle"]["plate"].startswith("川")
    ]
    assert parked
    pings = _pings_by_loan(list(sim.records()))
    for loan_id in parked:
        last = pings[loan_id][-1].value
        assert distance_km(last["lat"], last["lon"], lot.lat, lot.lon) * 1000 < lot.radius_m + 100


def test_noise_loans_are_never_labelled_and_short_trips_come_home(
    sim: Simulation, records: list[Record]
) -> None:
    labelled = {label.loan_id for label in sim.labels}
    noise = {i for i, s in sim.scenarios.items() if s in NOISE_SCENARIOS}
    assert noise and not noise & labelled
    loans = {loan["loan_id"]: loan for loan in sim.loans}
    pings = _pings_by_loan(records)
    trips = [i for i, s in sim.scenarios.items() if s is Scenario.SHORT_TRIP]
    went_out = 0
    for loan_id in trips:
        lat, lon, radius = _region(loans[loan_id])
        out_by_day: dict[str, list[float]] = defaultdict(list)
        for p in pings[loan_id]:
            if distance_km(p.value["lat"], p.value["lon"], lat, lon) > radius:
                out_by_day[format_ts(p.event_time)[:10]].append(p.event_time)
        went_out += bool(out_by_day)
        # Out for a few hours on a day, then back inside.
        assert all(max(ts) - min(ts) < 8 * 3600 for ts in out_by_day.values())
        last = pings[loan_id][-1].value
        assert distance_km(last["lat"], last["lon"], lat, lon) < radius
    assert went_out


def test_border_drift_crosses_the_border_back_and_forth(
    sim: Simulation, records: list[Record]
) -> None:
    loans = {loan["loan_id"]: loan for loan in sim.loans}
    pings = _pings_by_loan(records)
    drifting = [i for i, s in sim.scenarios.items() if s is Scenario.BORDER_DRIFT]
    assert drifting
    for loan_id in drifting:
        lat, lon, radius = _region(loans[loan_id])
        sides = [
            distance_km(p.value["lat"], p.value["lon"], lat, lon) > radius for p in pings[loan_id]
        ]
        assert any(sides) and not all(sides)
        crossings = sum(a != b for a, b in itertools.pairwise(sides))
        assert crossings >= 4
        # ...but never far: within a couple of kilometres of the border.
        assert all(
            distance_km(p.value["lat"], p.value["lon"], lat, lon) < radius + 2
            for p in pings[loan_id]
            if not p.value["acc_on"]
        )


def test_wired_trackers_ping_every_minute_driving_and_every_10_to_30_min_parked(
    records: list[Record],
) -> None:
    by_device: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        value = record.value
        # (not the extra alarm reports; a buffered cadence ping may carry an alarm)
        wired = record.topic == "gps.raw" and value["device_kind"] == "wired"
        if wired and "-alarm-" not in value["event_id"]:
            by_device[record.key].append(record)
    driving_gaps: list[float] = []
    parked_gaps: list[float] = []
    for pings in by_device.values():
        unique = sorted({p.event_time: p for p in pings}.values(), key=lambda p: p.event_time)
        for a, b in itertools.pairwise(unique):
            gap = b.event_time - a.event_time
            if a.value["acc_on"] and b.value["acc_on"]:
                driving_gaps.append(gap)
            elif not a.value["acc_on"] and not b.value["acc_on"]:
                parked_gaps.append(gap)
    assert driving_gaps and parked_gaps
    assert Counter(driving_gaps).most_common(1)[0][0] == 60
    assert all(gap <= 1800 + 21 for gap in parked_gaps)
    assert sorted(parked_gaps)[len(parked_gaps) // 2] >= 600 - 21


def test_payments_on_or_before_due_dates_for_punctual_payers() -> None:
    # A month: every loan has an instalment due in the window.
    sim = simulate(loans=8, days=31, seed=3, skip_fraction=0.0, late_fraction=0.0)
    punctual = {i for i, s in sim.scenarios.items() if s is Scenario.PUNCTUAL}
    checked = 0
    records = [r for r in sim.records() if r.topic == "payments"]
    for _, event in read_recording(_lines(records)):
        if (
            isinstance(event, PaymentEvent)
            and event.loan_id in punctual
            and event.type == "payment_received"
        ):
            assert event.due_date is not None
            days_early = (event.due_date - event.ts.date()).days
            assert 0 <= days_early <= 3
            checked += 1
    assert checked


def test_simulate_recording_yields_records_then_labels() -> None:
    items = list(simulate_recording(loans=10, days=3, seed=5, skip_fraction=0.3))
    kinds = [type(item) for item in items]
    first_label = kinds.index(Label)
    assert set(kinds[:first_label]) == {Record}
    assert set(kinds[first_label:]) == {Label}
    assert len(kinds) - first_label == 3


def test_wireless_pings_carry_no_ignition_and_a_battery(records: list[Record]) -> None:
    wireless = [
        GpsPing.model_validate(r.value)
        for r in records
        if r.topic == "gps.raw" and r.value["device_kind"] == "wireless"
    ]
    assert wireless
    assert all(p.acc_on is None and p.battery_pct is not None for p in wireless)


@pytest.mark.parametrize(
    "options",
    [
        {"skip_fraction": 0.7, "late_fraction": 0.4},
        {"days": 0},
        {"loans": -1},
    ],
)
def test_invalid_configuration_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        simulate(**options)


def test_short_windows_have_no_skips_and_still_validate() -> None:
    sim = simulate(loans=10, days=1, skip_fraction=0.5)
    assert sim.labels == []
    assert len(list(read_recording(_lines(list(sim.records()))))) > 10
    assert not math.isnan(sim.end)

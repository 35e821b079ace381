"""The simulator's borrower, car and tracker behaviours: each one's label and event shapes."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from rules.events import Label, read_recording
from rules.places import Place
from services.simulator import (
    _FACTORY_POSITIONS,
    CN_TZ,
    NOISE_SCENARIOS,
    SKIP_SCENARIOS,
    Record,
    Scenario,
    Simulation,
    SimulationConfig,
    _rings,
    distance_km,
)

pytestmark = pytest.mark.unit

# 18 days around 劳动节 (May 1–5): every kind twice.
CONFIG = SimulationConfig(
    loans=72,
    days=18,
    seed=5,
    start=datetime(2026, 4, 20, tzinfo=CN_TZ),
    skip_fraction=1 / 6,
    late_fraction=0.0,
    noise_fraction=0.5,
)


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return Simulation(CONFIG)


@pytest.fixture(scope="module")
def by_loan(sim: Simulation) -> dict[str, list[Record]]:
    """Every record of each loan (pings by device), in arrival order."""
    device_loan = {d["device_id"]: loan["loan_id"] for loan in sim.loans for d in loan["devices"]}
    out: dict[str, list[Record]] = defaultdict(list)
    for record in sim.records():
        out[device_loan.get(record.key, record.key)].append(record)
    return out


def loans_of(sim: Simulation, scenario: Scenario) -> list[str]:
    loans = [loan for loan, s in sim.scenarios.items() if s is scenario]
    assert loans, f"no {scenario} loan in the test portfolio"
    return loans


def pings(records: list[Record], kind: str | None = None) -> list[dict[str, Any]]:
    return [
        r.value
        for r in records
        if r.topic == "gps.raw" and (kind is None or r.value["device_kind"] == kind)
    ]


def ts(value: dict[str, Any]) -> float:
    return datetime.fromisoformat(value["ts"]).timestamp()


def home_of(records: list[Record]) -> tuple[float, float]:
    first = pings(records)[0]
    return first["lat"], first["lon"]


def near(place: Place, lat: float, lon: float, radii: float) -> bool:
    return distance_km(place.lat, place.lon, lat, lon) * 1000 <= place.radius_m * radii


def test_every_loan_is_labelled_with_its_kind(sim: Simulation) -> None:
    truth = sim.truth
    assert [label.loan_id for label in truth[len(sim.labels) :]] == sorted(
        label.loan_id for label in truth if label.unreachable_at is None
    )
    assert {label.kind for label in truth} == {s.value for s in sim.scenarios.values()}
    assert set(sim.scenarios.values()) >= set(NOISE_SCENARIOS) | set(SKIP_SCENARIOS)
    for label in truth:
        is_skip = Scenario(label.kind).is_skip
        assert (label.unreachable_at is not None) == is_skip
    assert sim.labels == [label for label in truth if label.unreachable_at is not None]
    assert all(Label.model_validate_json(x.model_dump_json()) == x for x in truth)


def test_records_validate(by_loan: dict[str, list[Record]]) -> None:
    lines = [r.line().decode() for records in by_loan.values() for r in records]
    assert len(list(read_recording(lines))) == len(lines)


def test_wireless_only_loans_have_one_wireless_tracker_reporting_once_to_three_times_a_day(
    sim: Simulation, by_loan: dict[str, list[Record]]
) -> None:
    loans = {loan["loan_id"]: loan for loan in sim.loans}
    for loan_id in loans_of(sim, Scenario.WIRELESS_ONLY):
        assert [d["kind"] for d in loans[loan_id]["devices"]] == ["wireless"]
        reports = pings(by_loan[loan_id])
        assert reports and all(p["device_kind"] == "wireless" for p in reports)
        per_day = len({p["event_id"] for p in reports}) / CONFIG.days
        assert 0.8 <= per_day <= 3.2


@pytest.mark.parametrize(
    ("scenario", "min_days", "comes_back"),
    [
        (Scenario.TRAVELLER, 1.5, True),
        (Scenario.SEASONAL_WORKER, 8.0, False),  # a month away: longer than this window
        (Scenario.HOLIDAY_TRIP, 3.0, True),
    ],
)
def test_people_who_travel_leave_for_another_city_and_are_not_skips(
    sim: Simulation,
    by_loan: dict[str, list[Record]],
    scenario: Scenario,
    min_days: float,
    comes_back: bool,
) -> None:
    for loan_id in loans_of(sim, scenario):
        records = by_loan[loan_id]
        home = home_of(records)
        far = [ts(p) for p in pings(records) if distance_km(*home, p["lat"], p["lon"]) > 150]
        assert far, f"{loan_id} never left"
        assert (max(far) - min(far)) / 86400 >= min_days
        last = pings(records)[-1]
        assert (distance_km(*home, last["lat"], last["lon"]) < 60) == comes_back
        assert loan_id not in {label.loan_id for label in sim.labels}
        if scenario is Scenario.HOLIDAY_TRIP:  # leaves the day before 劳动节
            assert datetime.fromtimestamp(min(far), CN_TZ).date() in (
                date(2026, 4, 30),
                date(2026, 5, 1),
            )


@pytest.mark.parametrize(
    ("scenario", "min_h", "max_h"),
    [(Scenario.REPAIR_SHOP, 20.0, 80.0), (Scenario.CAR_WASH, 0.2, 1.0)],
)
def test_repair_shops_and_car_washes_sit_next_to_risk_places(
    sim: Simulation,
    by_loan: dict[str, list[Record]],
    scenario: Scenario,
    min_h: float,
    max_h: float,
) -> None:
    for loan_id in loans_of(sim, scenario):
        wired = pings(by_loan[loan_id], "wired")
        stay = [
            ts(p)
            for p in wired
            if not p["acc_on"] and any(near(pl, p["lat"], p["lon"], 2.2) for pl in sim.places)
        ]
        assert stay, f"{loan_id} never stopped next to a risk place"
        visits: list[list[float]] = [[stay[0]]]
        for t in stay[1:]:  # parked reports within 2 h of each other: one visit
            if t - visits[-1][-1] > 2 * 3600:
                visits.append([])
            visits[-1].append(t)
        hours = [(v[-1] - v[0]) / 3600 for v in visits]
        if scenario is Scenario.REPAIR_SHOP:
            assert any(min_h <= h <= max_h for h in hours), hours
        else:
            assert all(h <= max_h for h in hours), hours
        cut = [p for p in wired if "power_cut" in p["alarms"]]
        for alarm in cut:  # the mechanic's disconnect: reported at the shop, then live again
            assert any(near(pl, alarm["lat"], alarm["lon"], 2.2) for pl in sim.places)
            assert any(ts(p) > ts(alarm) + 3600 and not p["alarms"] for p in wired)


def test_underground_garages_lose_the_fix_and_upload_the_buffer_when_the_car_leaves(
    sim: Simulation, by_loan: dict[str, list[Record]]
) -> None:
    for loan_id in loans_of(sim, Scenario.UNDERGROUND_GARAGE):
        records = [r for r in by_loan[loan_id] if r.topic == "gps.raw"]
        buffered = [r for r in records if r.value["fix"] == "none" and r.value["backfill"]]
        assert buffered
        for record in buffered:
            newer_live = [
                r
                for r in records[: records.index(record)]
                if not r.value["backfill"] and r.event_time > record.event_time
            ]
            assert newer_live and newer_live[-1].value["acc_on"] in (True, None)


def test_trackers_reboot_to_their_factory_position_then_report_real_fixes(
    sim: Simulation, by_loan: dict[str, list[Record]]
) -> None:
    for loan_id in loans_of(sim, Scenario.TRACKER_REBOOT):
        wired = pings(by_loan[loan_id], "wired")
        factory = _FACTORY_POSITIONS[wired[0]["vendor"]]
        at_factory = [n for n, p in enumerate(wired) if (p["lat"], p["lon"]) == factory]
        assert at_factory, loan_id
        assert len(at_factory) <= 3 * 4  # 1–3 reboots, 2–4 reports each
        home = home_of(by_loan[loan_id])
        after = wired[at_factory[-1] + 1 :]
        assert after and distance_km(*home, after[-1]["lat"], after[-1]["lon"]) < 60


def test_buffered_alarms_arrive_late_after_newer_live_pings(
    sim: Simulation, by_loan: dict[str, list[Record]]
) -> None:
    for loan_id in loans_of(sim, Scenario.BUFFERED_ALARM):
        records = [r for r in by_loan[loan_id] if r.topic == "gps.raw"]
        alarmed = [r for r in records if r.value["alarms"]]
        assert alarmed
        for record in alarmed:
            assert record.value["backfill"]
            before = records[: records.index(record)]
            assert any(r.event_time > record.event_time + 600 for r in before)


def payments(records: list[Record]) -> list[dict[str, Any]]:
    return [r.value for r in records if r.topic == "payments"]


def contacts(records: list[Record]) -> list[dict[str, Any]]:
    return [r.value for r in records if r.topic == "contacts"]


def test_payment_reversal_is_paid_again(sim: Simulation, by_loan: dict[str, list[Record]]) -> None:
    seen = 0
    for loan_id in loans_of(sim, Scenario.PAYMENT_REVERSAL):
        pays = payments(by_loan[loan_id])
        reversed_ = [p for p in pays if p["type"] == "payment_reversed"]
        for rev in reversed_:
            seen += 1
            same = [p for p in pays if p["installment_no"] == rev["installment_no"]]
            received = [p["ts"] for p in same if p["type"] == "payment_received"]
            assert len(set(received)) == 2 and min(received) < rev["ts"] < max(received)
            assert len({p["event_id"] for p in same}) == len(same)
    assert seen, "no instalment fell due in the window"


def test_changed_phone_goes_invalid_then_is_reached(
    sim: Simulation, by_loan: dict[str, list[Record]]
) -> None:
    for loan_id in loans_of(sim, Scenario.CHANGED_PHONE):
        calls = contacts(by_loan[loan_id])
        invalid = [c["ts"] for c in calls if c["outcome"] == "number_invalid"]
        reached = [c["ts"] for c in calls if c["outcome"] == "reached"]
        assert len(invalid) >= 2 and reached and max(reached) > max(invalid)


def test_guarantor_answers_while_the_borrower_is_dark_and_the_instalment_is_paid(
    sim: Simulation, by_loan: dict[str, list[Record]]
) -> None:
    seen = 0
    for loan_id in loans_of(sim, Scenario.GUARANTOR_ANSWERS):
        calls = contacts(by_loan[loan_id])
        guarantor = [c for c in calls if c["party"] == "guarantor"]
        if not guarantor:
            continue  # no instalment in the window
        seen += 1
        assert all(c["outcome"] in ("reached", "promise_to_pay") for c in guarantor)
        dark = [c for c in calls if c["party"] == "borrower"]
        assert dark and all(c["outcome"] in ("powered_off", "no_answer") for c in dark)
        paid = [p for p in payments(by_loan[loan_id]) if p["type"] == "payment_received"]
        assert paid and max(p["ts"] for p in paid) > max(c["ts"] for c in guarantor)
    assert seen


def test_fraud_rings_gather_cars_of_one_city_at_one_lot(
    sim: Simulation, by_loan: dict[str, list[Record]]
) -> None:
    labels = {label.loan_id: label for label in sim.labels}
    final: dict[str, tuple[float, float]] = {}
    for loan_id in loans_of(sim, Scenario.SKIP_FRAUD_RING):
        last = pings(by_loan[loan_id])[-1]
        final[loan_id] = (last["lat"], last["lon"])
        assert loan_id in labels
        arrived = labels[loan_id].unreachable_at
        assert arrived is not None
        here = [p for p in pings(by_loan[loan_id]) if ts(p) >= arrived.timestamp() + 60]
        assert here and all(distance_km(*final[loan_id], p["lat"], p["lon"]) < 1 for p in here)
    spots = list(final.values())
    assert len(spots) >= 2
    assert max(distance_km(*spots[0], *s) for s in spots) < 1.0  # the same lot
    times = [labels[x].unreachable_at for x in final]
    assert max(t for t in times if t) - min(t for t in times if t) < timedelta(days=2.5)


def test_closed_loans_turn_closed_then_lose_their_trackers(
    sim: Simulation, by_loan: dict[str, list[Record]]
) -> None:
    for loan_id in loans_of(sim, Scenario.CLOSED):
        records = by_loan[loan_id]
        closure = [r for r in records if r.topic == "loans" and r.value["status"] == "closed"]
        assert len(closure) == 1
        closed_at = closure[0].event_time
        removals = [p for p in pings(records) if "removal" in p["alarms"]]
        assert removals and all(ts(p) > closed_at for p in removals)
        assert max(ts(p) for p in pings(records)) <= max(ts(p) for p in removals)
        assert all(
            datetime.fromisoformat(p["ts"]).timestamp() < closed_at for p in payments(records)
        )


def test_charged_off_loans_are_written_off_and_pay_nothing(
    sim: Simulation, by_loan: dict[str, list[Record]]
) -> None:
    loans = {loan["loan_id"]: loan for loan in sim.loans}
    for loan_id in loans_of(sim, Scenario.CHARGED_OFF):
        assert loans[loan_id]["status"] == "charged_off"
        assert not [p for p in payments(by_loan[loan_id]) if p["type"] == "payment_received"]
        assert contacts(by_loan[loan_id])


def test_some_skips_and_travellers_are_wireless_only() -> None:
    sim = Simulation(SimulationConfig(loans=120, days=6, seed=2, skip_fraction=0.5))
    kinds = {d["kind"] for loan in sim.loans for d in loan["devices"]}
    assert kinds == {"wired", "wireless"}
    scenarios = sim.scenarios
    wireless_only = {
        scenarios[loan["loan_id"]]
        for loan in sim.loans
        if [d["kind"] for d in loan["devices"]] == ["wireless"]
    }
    assert wireless_only & set(SKIP_SCENARIOS)
    cut = [label for label in sim.labels if label.kind == Scenario.SKIP_TRACKER_CUT.value]
    assert cut


@pytest.mark.parametrize("ring_loans", [1, 2, 4, 5, 9, 13, 33])
def test_every_fraud_ring_loan_is_in_a_ring_of_two_to_five_in_one_city(ring_loans: int) -> None:
    scenarios = [Scenario.PUNCTUAL, Scenario.SKIP_FRAUD_RING] * ring_loans
    rings = _rings(scenarios, 3)
    members = [i for i, s in enumerate(scenarios) if s is Scenario.SKIP_FRAUD_RING]
    assert sorted(rings) == members
    groups: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for group, rank, city in rings.values():
        groups[group].append((rank, city))
    for group in groups.values():
        assert len({city for _, city in group}) == 1
        assert sorted(rank for rank, _ in group) == list(range(len(group)))
        assert len(group) <= 5 and (len(group) >= 2 or ring_loans == 1)

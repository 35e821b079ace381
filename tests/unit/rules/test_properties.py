"""Properties (hypothesis): duplicates change nothing, independent loans don't interact, late
backfill never undoes newer state (it may only add the event alarms it carries)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.engine import Engine, InputEvent
from rules.events import AlertEvent, ContactAttempt, GpsPing, PaymentEvent
from rules.state import LoanState
from tests.unit.rules.rules_factories import (
    FAR,
    HOME,
    SECOND_PLEDGE_LOT,
    USED_CAR_MARKET,
    at,
    default_engine,
    loan,
)

pytestmark = pytest.mark.unit

PLACES = [HOME, FAR, SECOND_PLEDGE_LOT, USED_CAR_MARKET, (30.70, 104.10)]
OUTCOMES = ["reached", "no_answer", "powered_off", "busy", "promise_to_pay", "delivered"]
PROFILE = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def loan_events(draw: st.DrawFn, loan_id: str = "L1") -> list[InputEvent]:
    """A loan's events over ~10 days, time-ordered, with unique event ids."""
    count = draw(st.integers(min_value=1, max_value=40))
    hours = sorted(draw(st.lists(st.floats(0, 240), min_size=count, max_size=count)))
    out: list[InputEvent] = []
    for n, h in enumerate(hours):
        kind = draw(st.sampled_from(["wired", "wired", "wired", "wireless", "contact", "payment"]))
        event_id = f"{loan_id}-{n}"
        if kind in ("wired", "wireless"):
            alarms = draw(st.sampled_from([(), (), ("power_cut",), ("removal",)]))
            out.append(
                GpsPing(
                    event_id=event_id,
                    device_id=f"{loan_id}-{'W' if kind == 'wired' else 'X'}",
                    vendor="t",
                    ts=at(h),
                    lat=draw(st.sampled_from(PLACES))[0],
                    lon=draw(st.sampled_from(PLACES))[1],
                    device_kind=kind,
                    alarms=alarms,
                )
            )
        elif kind == "contact":
            out.append(
                ContactAttempt(
                    event_id=event_id,
                    loan_id=loan_id,
                    ts=at(h),
                    party=draw(st.sampled_from(["borrower", "guarantor"])),
                    channel="call",
                    outcome=draw(st.sampled_from(OUTCOMES)),
                )
            )
        else:
            out.append(
                PaymentEvent(
                    event_id=event_id,
                    loan_id=loan_id,
                    ts=at(h),
                    type=draw(st.sampled_from(["payment_received", "payment_reversed"])),
                    installment_no=draw(st.integers(1, 2)),
                    amount=3500.0,
                )
            )
    return out


def new_loan_state(engine: Engine, loan_id: str) -> LoanState:
    state = engine.new_state(loan_id)
    registered = loan(loan_id, devices=((f"{loan_id}-W", "wired"), (f"{loan_id}-X", "wireless")))
    engine.apply(state, registered, at(0))
    return state


def replay(engine: Engine, state: LoanState, events: list[InputEvent]) -> list[AlertEvent]:
    """now = the latest event time seen so far (a zero-lateness watermark for this loan)."""
    out: list[AlertEvent] = []
    now = at(0)
    for event in events:
        assert not hasattr(event, "schedule")
        now = max(now, event.ts)  # type: ignore[union-attr]
        out += engine.apply(state, event, now)
    out += engine.advance(state, now + dt.timedelta(days=2))
    return out


def outcome(alerts: list[AlertEvent]) -> list[tuple[Any, ...]]:
    return [(a.rule_id, a.status, a.severity, a.alert_id, a.updated_at) for a in alerts]


@PROFILE
@given(events=loan_events(), data=st.data())
def test_duplicates_change_nothing(events: list[InputEvent], data: st.DataObject) -> None:
    engine = default_engine()
    plain_state = new_loan_state(engine, "L1")
    plain = replay(engine, plain_state, events)
    with_dups = list(events)
    for _ in range(data.draw(st.integers(1, 10))):
        original = data.draw(st.sampled_from(events))
        position = data.draw(st.integers(with_dups.index(original) + 1, len(with_dups)))
        with_dups.insert(position, original)
    dup_state = new_loan_state(engine, "L1")
    assert outcome(replay(engine, dup_state, with_dups)) == outcome(plain)
    assert dup_state.to_bytes() == plain_state.to_bytes()


@PROFILE
@given(first=loan_events("A"), second=loan_events("B"), data=st.data())
def test_interleaving_independent_loans_changes_nothing(
    first: list[InputEvent], second: list[InputEvent], data: st.DataObject
) -> None:
    engine = default_engine()
    alone = {}
    for loan_id, events in (("A", first), ("B", second)):
        state = new_loan_state(engine, loan_id)
        alone[loan_id] = (outcome(replay(engine, state, events)), state.to_bytes())
    # Interleave arbitrarily, keeping each loan's own order.
    merged: list[InputEvent] = []
    a, b = list(first), list(second)
    while a or b:
        take_a = bool(a) and (not b or data.draw(st.booleans()))
        merged.append(a.pop(0) if take_a else b.pop(0))
    states = {"A": new_loan_state(engine, "A"), "B": new_loan_state(engine, "B")}
    alerts: dict[str, list[AlertEvent]] = {"A": [], "B": []}
    nows = {"A": at(0), "B": at(0)}
    for event in merged:
        loan_id = event.event_id.split("-")[0]  # type: ignore[union-attr]
        nows[loan_id] = max(nows[loan_id], event.ts)  # type: ignore[union-attr]
        alerts[loan_id] += engine.apply(states[loan_id], event, nows[loan_id])
    for loan_id, state in states.items():
        alerts[loan_id] += engine.advance(state, nows[loan_id] + dt.timedelta(days=2))
        assert (outcome(alerts[loan_id]), state.to_bytes()) == alone[loan_id]


def current(state: LoanState) -> tuple[Any, ...]:
    """What the newest data says now (history fields such as visits excluded)."""
    devices = {k: (d.last_seen, d.fix) for k, d in state.devices.items()}
    return (
        state.position,
        state.inside,
        state.outside_since,
        state.place_id,
        state.place_since,
        state.anchor,
        state.separated_m,
        devices,
    )


@PROFILE
@given(
    live_hours=st.lists(st.floats(0, 240), min_size=2, max_size=30, unique=True),
    late=st.lists(
        st.tuples(st.floats(0, 1), st.sampled_from(PLACES), st.sampled_from([(), ("removal",)])),
        min_size=1,
        max_size=15,
    ),
    places=st.lists(st.sampled_from(PLACES), min_size=30, max_size=30),
    data=st.data(),
)
def test_late_backfill_never_undoes_newer_state(
    live_hours: list[float],
    late: list[tuple[float, tuple[float, float], tuple[str, ...]]],
    places: list[tuple[float, float]],
    data: st.DataObject,
) -> None:
    engine = default_engine()
    live = [
        GpsPing(
            event_id=f"live-{n}",
            device_id="L1-W",
            vendor="t",
            ts=at(h),
            lat=places[n][0],
            lon=places[n][1],
            device_kind="wired",
        )
        for n, h in enumerate(sorted(live_hours))
    ]
    only_live = new_loan_state(engine, "L1")
    replay(engine, only_live, live)
    # Each backfill ping arrives after some live ping, with an older timestamp than it.
    mixed: list[InputEvent] = list(live)
    for n, (fraction, where, alarms) in enumerate(late):
        after = data.draw(st.integers(0, len(live) - 1))
        ts = at(0) + (live[after].ts - at(0)) * fraction
        backfill = GpsPing(
            event_id=f"late-{n}",
            device_id="L1-W",
            vendor="t",
            ts=ts,
            lat=where[0],
            lon=where[1],
            device_kind="wired",
            alarms=alarms,
            backfill=True,
        )
        mixed.insert(mixed.index(live[after]) + 1, backfill)
    with_backfill = new_loan_state(engine, "L1")
    replay(engine, with_backfill, mixed)
    assert current(with_backfill) == current(only_live)
    # Alarms: none of the live state's is undone; the only additions are event alarms that late
    # pings carried, kept with their own time (issue 12: a late removal still holding fires).
    live_alarms = only_live.devices["L1-W"].alarms
    late_alarms = with_backfill.devices["L1-W"].alarms
    assert live_alarms.items() <= late_alarms.items()
    carried = {(p.alarms[0].value, p.ts.timestamp()) for p in mixed if p.backfill and p.alarms}
    assert {(a, t) for a, t in late_alarms.items() if a not in live_alarms} <= carried

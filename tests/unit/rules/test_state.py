"""LoanState serialisation: exact round trip, and small enough (≤ 2 KiB per active loan)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from rules.engine import Engine, InputEvent
from rules.state import LoanState
from tests.unit.rules.rules_factories import (
    CST,
    FAR,
    at,
    contact,
    event_time,
    every,
    loan,
    payment,
    ping,
    run,
    start,
)

pytestmark = pytest.mark.unit


YEAR_H = 24 * 365.0  # a year into the loan


def busy_loan() -> tuple[Engine, LoanState]:
    """A typical active loan mid-life: 36-month schedule, 12 instalments paid on time, the 13th
    missed; two trackers, days of pings, collection calls, open alerts; UUID event ids as
    vendors send them."""
    engine, state = start(installments=36)

    def uid() -> str:
        return str(uuid.uuid4())

    def h(hours: float) -> float:
        return YEAR_H + hours

    events: list[InputEvent] = []
    for n in range(12):
        due = dt.datetime.combine(_due(n + 1), dt.time(10), tzinfo=CST)
        events.append(payment(due, "payment_received", n + 1, event_id=uid()))
    events += [ping(at(h(x)), event_id=uid()) for x in range(100)]
    events += [
        ping(at(h(x)), device="X1", kind="wireless", event_id=uid()) for x in (0, 24, 48, 72)
    ]
    events += [contact(at(h(100 + n)), "powered_off", event_id=uid()) for n in range(6)]
    events += [ping(at(h(x)), FAR, event_id=uid()) for x in range(110, 140)]
    run(engine, state, sorted(events, key=event_time))
    return engine, state


def _due(number: int) -> dt.date:
    return loan(installments=36).schedule[number - 1].due_date


def test_round_trip_is_exact() -> None:
    _, state = busy_loan()
    data = state.to_bytes()
    assert LoanState.from_bytes(data).to_bytes() == data


def test_restored_state_behaves_identically() -> None:
    engine, state = busy_loan()
    restored = LoanState.from_bytes(state.to_bytes())
    later = [*every(1, YEAR_H + 140, YEAR_H + 150, FAR), contact(at(YEAR_H + 150), "reached")]
    assert [a.alert_id for a in run(engine, restored, later)] == [
        a.alert_id for a in run(engine, state, later)
    ]
    assert restored.to_bytes() == state.to_bytes()


def test_typical_active_loan_fits_in_2_kib() -> None:
    _, state = busy_loan()
    size = len(state.to_bytes())
    assert state.alerts, "the sample loan should have open alerts"
    assert state.settled_through >= 9  # long-settled instalments are compacted away
    assert size <= 2048, size


def test_fresh_state_is_tiny() -> None:
    assert len(LoanState("L1").to_bytes()) < 32

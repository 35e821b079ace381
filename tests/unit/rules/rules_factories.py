"""Event factories for rules tests: a Chengdu loan, pings, payments, contacts, and a runner."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from rules.engine import Engine, InputEvent
from rules.events import (
    AlertEvent,
    AlertStatus,
    Borrower,
    CircleRegion,
    ContactAttempt,
    DeviceBinding,
    GpsPing,
    Installment,
    Loan,
    PaymentEvent,
)
from rules.state import LoanState

CST = dt.timezone(dt.timedelta(hours=8))
T0 = dt.datetime(2024, 3, 1, 9, 0, tzinfo=CST)
HOME = (30.66, 104.07)  # Chengdu centre; home region radius 30 km
FAR = (31.50, 104.07)  # ~93 km north: clearly out of region
SECOND_PLEDGE_LOT = (30.7142, 104.0335)  # cd-2p-001 in the shipped place file (radius 150 m)
USED_CAR_MARKET = (30.7268, 104.0521)  # cd-ucm-001 (radius 400 m)
IMPOUND_LOT = (30.6811, 104.1688)  # cd-imp-001
FIRST_DUE = dt.date(2024, 3, 5)  # days_past_due is 1 from 2024-03-06 00:00 CST = at(hours=111)
FIRST_OVERDUE_H = 111

_ids = itertools.count()


def at(hours: float = 0.0, *, days: float = 0.0, minutes: float = 0.0) -> dt.datetime:
    return T0 + dt.timedelta(days=days, hours=hours, minutes=minutes)


def eid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def loan(
    loan_id: str = "L1",
    *,
    devices: Sequence[tuple[str, str]] = (("W1", "wired"), ("X1", "wireless")),
    region: Any = "default",
    installments: int = 12,
    status: str = "active",
) -> Loan:
    home = CircleRegion(center=HOME, radius_km=30) if region == "default" else region
    schedule = tuple(
        Installment(installment_no=n, due_date=_add_months(FIRST_DUE, n - 1), amount=3500.0)
        for n in range(1, installments + 1)
    )
    return Loan(
        loan_id=loan_id,
        status=status,
        borrower=Borrower(name="张三", phone="+8613800000000"),
        vehicle={"vin": "LSVAB12C3DE456789", "plate": "川A12345"},
        devices=tuple(DeviceBinding(device_id=d, kind=k) for d, k in devices),
        home_region=home,
        schedule=schedule,
    )


def _add_months(day: dt.date, months: int) -> dt.date:
    month = day.month - 1 + months
    return day.replace(year=day.year + month // 12, month=month % 12 + 1)


def ping(
    ts: dt.datetime,
    where: tuple[float, float] = HOME,
    *,
    device: str = "W1",
    kind: str = "wired",
    event_id: str | None = None,
    **fields: Any,
) -> GpsPing:
    return GpsPing(
        event_id=event_id or eid("p"),
        device_id=device,
        vendor="test",
        ts=ts,
        lat=where[0],
        lon=where[1],
        device_kind=kind,
        **fields,
    )


def payment(
    ts: dt.datetime,
    type_: str,
    installment_no: int = 1,
    amount: float = 3500.0,
    *,
    loan_id: str = "L1",
    event_id: str | None = None,
    **fields: Any,
) -> PaymentEvent:
    return PaymentEvent(
        event_id=event_id or eid("pay"),
        loan_id=loan_id,
        ts=ts,
        type=type_,
        installment_no=installment_no,
        amount=amount,
        **fields,
    )


def contact(
    ts: dt.datetime,
    outcome: str,
    party: str = "borrower",
    channel: str = "call",
    *,
    loan_id: str = "L1",
    event_id: str | None = None,
) -> ContactAttempt:
    return ContactAttempt(
        event_id=event_id or eid("c"),
        loan_id=loan_id,
        ts=ts,
        party=party,
        channel=channel,
        outcome=outcome,
    )


def hourly_pings(
    start_h: float, end_h: float, where: tuple[float, float] = HOME, **fields: Any
) -> list[GpsPing]:
    return [ping(at(h), where, **fields) for h in _frange(start_h, end_h, 1.0)]


def every(
    hours: float, start_h: float, end_h: float, where: tuple[float, float], **fields: Any
) -> list[GpsPing]:
    """Pings every ``hours`` from start_h (inclusive) to end_h (exclusive)."""
    return [ping(at(h), where, **fields) for h in _frange(start_h, end_h, hours)]


def _frange(start: float, end: float, step: float) -> Iterable[float]:
    value = start
    while value < end:
        yield value
        value += step


@cache
def default_engine() -> Engine:
    return Engine.default()


def fresh_engine() -> Engine:
    """A new engine over the default catalog (own memo and stats)."""
    base = default_engine()
    return Engine(base.rules, base.places, base.config)


def event_time(event: InputEvent) -> dt.datetime:
    return event.ts if not isinstance(event, Loan) else T0


def run(
    engine: Engine,
    state: LoanState,
    events: Iterable[InputEvent],
    *,
    until: dt.datetime | None = None,
) -> list[AlertEvent]:
    """Apply events with now = each event's time (a zero-lateness watermark), then advance."""
    out: list[AlertEvent] = []
    last = T0
    for event in events:
        now = max(last, event_time(event))
        out += engine.apply(state, event, now)
        last = now
    if until is not None:
        out += engine.advance(state, until)
    return out


def start(engine: Engine | None = None, **loan_fields: Any) -> tuple[Engine, LoanState]:
    engine = engine or fresh_engine()
    registered = loan(**loan_fields)
    state = engine.new_state(registered.loan_id)
    engine.apply(state, registered, T0)
    return engine, state


def firing(alerts: Iterable[AlertEvent]) -> set[str]:
    return {a.rule_id for a in alerts if a.status is AlertStatus.FIRING}


def open_alerts(state: LoanState) -> set[str]:
    return {rule for rule, a in state.alerts.items() if a.status == "firing"}

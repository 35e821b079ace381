"""Payments: the schedule, what was paid, days past due by event time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from rules.events.loan import Installment
from rules.events.payment import PaymentEvent, PaymentType
from rules.state import InstallmentState, LoanState

DAY = 86400.0
# Settled instalments this many days past due are dropped from the state (kept small); money
# events for them still work: see apply_payment.
COMPACT_AFTER_DAYS = 90
MAX_FAILED_DEBITS = 8


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


# Per time zone, the last local day looked up: (start instant, end instant, ordinal). Evaluations
# of many loans at nearby instants ask for the same day over and over.
_DAYS: dict[str, tuple[float, float, int]] = {}


def local_day(ts: float, timezone: str) -> int:
    """The date (as an ordinal) at instant ``ts`` in the loan's time zone."""
    known = _DAYS.get(timezone)
    if known is not None and known[0] <= ts < known[1]:
        return known[2]
    zone = _zone(timezone)
    local = dt.datetime.fromtimestamp(ts, zone)
    ordinal = local.date().toordinal()
    start, end = day_start(ordinal, timezone), day_start(ordinal + 1, timezone)
    # Remember the day only where it is plainly [local midnight, next local midnight) with one
    # UTC offset (a DST change inside the day could make local dates non-monotonic).
    first = dt.datetime.fromtimestamp(start, zone)
    if (
        start <= ts < end
        and first.time() == dt.time(0)
        and first.date().toordinal() == ordinal
        and first.utcoffset() == dt.datetime.fromtimestamp(end, zone).utcoffset()
    ):
        _DAYS[timezone] = (start, end, ordinal)
    return ordinal


@lru_cache(maxsize=4096)
def day_start(ordinal: int, timezone: str) -> float:
    """The instant local midnight starts day ``ordinal``."""
    day = dt.date.fromordinal(ordinal)
    return dt.datetime.combine(day, dt.time(0), tzinfo=_zone(timezone)).timestamp()


def merge_schedule(state: LoanState, schedule: Iterable[Installment]) -> bool:
    """Take the loan system's schedule; keep what was paid. Returns whether anything changed."""
    by_number = {i.number: i for i in state.installments}
    changed = False
    for item in schedule:
        if item.installment_no <= state.settled_through:
            continue
        due = item.due_date.toordinal()
        existing = by_number.get(item.installment_no)
        if existing is None:
            by_number[item.installment_no] = InstallmentState(item.installment_no, due, item.amount)
            changed = True
        elif (existing.due, existing.amount) != (due, item.amount):
            existing.due, existing.amount = due, item.amount
            changed = True
    if changed:
        state.installments = sorted(by_number.values(), key=lambda i: i.number)
    return changed


def _compact(state: LoanState, today: int) -> None:
    """Drop the settled, long-past prefix of the schedule (1..n), remembering only n."""
    rows = state.installments
    while (
        rows
        and rows[0].number == state.settled_through + 1
        and rows[0].settled
        and rows[0].due < today - COMPACT_AFTER_DAYS
    ):
        state.settled_through = rows.pop(0).number


def _overdue(state: LoanState, today: int) -> list[InstallmentState]:
    return [i for i in state.installments if i.due < today and not i.settled]


def apply_payment(state: LoanState, event: PaymentEvent, ts: float, event_hash: int) -> bool:
    """Apply a payment event; returns whether the state changed. Sums of money events are
    order-independent and deduplicated by event hash, so late or repeated events are safe."""
    today = local_day(max(ts, state.clock or ts), state.timezone)
    row = next((i for i in state.installments if i.number == event.installment_no), None)
    if row is None:
        if event.installment_no <= state.settled_through and event.type in (
            PaymentType.INSTALLMENT_DUE,
            PaymentType.PAYMENT_RECEIVED,
        ):
            return False  # long settled; nothing to learn
        due = event.due_date or dt.datetime.fromtimestamp(ts, _zone(state.timezone)).date()
        # A reversal of a compacted instalment reopens just the reversed amount.
        amount = event.amount
        row = InstallmentState(event.installment_no, due.toordinal(), amount)
        state.installments.append(row)
        state.installments.sort(key=lambda i: i.number)
        if event.type is PaymentType.INSTALLMENT_DUE:
            return True
    if event.type is PaymentType.INSTALLMENT_DUE:
        return False  # the schedule already has it
    if event.type is PaymentType.PAYMENT_FAILED:
        if any(h == event_hash for _, h in state.failed_debits):
            return False
        if state.last_received is not None and ts <= state.last_received:
            return False  # a retry that already succeeded later
        state.failed_debits.append([ts, event_hash])
        state.failed_debits = sorted(state.failed_debits)[-MAX_FAILED_DEBITS:]
        state.payment_event = event.event_id
        return True
    if event_hash in row.events:
        return False
    missed_before = len(_overdue(state, today))
    row.events.append(event_hash)
    if event.type is PaymentType.PAYMENT_RECEIVED:
        row.paid += event.amount
        if state.last_received is None or ts > state.last_received:
            state.last_received = ts
            state.failed_debits = [f for f in state.failed_debits if f[0] > ts]
    else:  # reversed
        row.paid -= event.amount
    row.paid = round(row.paid, 2)
    state.payment_event = event.event_id
    if missed_before and not _overdue(state, today):
        state.cured += 1
    if row.settled:
        row.events = [] if row.due < today - COMPACT_AFTER_DAYS else row.events
    _compact(state, today)
    return True


def derive(state: LoanState, now: float, out: dict[str, Any]) -> None:
    today = local_day(now, state.timezone)
    overdue = _overdue(state, today)
    if overdue:
        out["payment.days_past_due"] = today - min(i.due for i in overdue)
        out["payment.missed_installments"] = len(overdue)
        out["payment.overdue_amount"] = round(sum(i.amount - i.paid for i in overdue), 2)
        out["payment.first_delinquency"] = state.cured == 0
    else:
        out["payment.days_past_due"] = 0
        out["payment.missed_installments"] = 0
        out["payment.overdue_amount"] = 0
        out["payment.first_delinquency"] = False
    last = state.last_received
    failed = state.failed_debits
    out["payment.failed_debits"] = (
        sum(1 for ts, _ in failed if last is None or ts > last) if failed else 0
    )


def deadline(state: LoanState, now: float, max_days_past_due: int) -> float | None:
    """Next local midnight at which a payment variable changes: a due date ends unpaid, or the
    days past due count up (only while below the largest threshold a rule compares it with)."""
    if not state.installments:
        return None
    today = local_day(now, state.timezone)
    first: int | None = None  # the earliest day after an unsettled due date still to come
    oldest: int | None = None  # the oldest unsettled due date already past
    for row in state.installments:
        if row.paid >= row.amount - 0.005:  # settled
            continue
        due = row.due
        if due >= today:
            if first is None or due + 1 < first:
                first = due + 1  # passes unpaid then
        elif oldest is None or due < oldest:
            oldest = due
    if oldest is not None and today - oldest <= max_days_past_due:
        first = today + 1 if first is None else min(first, today + 1)
    return day_start(first, state.timezone) if first is not None else None

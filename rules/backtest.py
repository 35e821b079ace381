"""Backtest: the engine over a recording, in-process, exactly as the worker drives it.

A recording is in arrival order (DESIGN §4), so late ``backfill`` uploads come after newer
pings, as in production. This module does what the worker does around the engine:
- binds pings to loans through the Loan's devices, keeping pings of unbound devices until
  their Loan arrives;
- keeps a watermark (max event time seen minus ``lateness``) and passes it as ``now``;
- keeps a deadline index and sweeps only loans that are due;
- keeps ``PlaceOccupancy`` per place and gives each loan at a place the count of cars there.

It streams: events are fed one at a time (``Backtest.feed``) and alert state changes go to a
sink as they happen, so memory grows with the number of loans, never with the recording.

The deadline index holds one live entry per loan: ``_due`` maps a loan to the instant of its
entry in the heap. An entry whose instant no longer matches ``_due`` is stale and skipped when
popped (lazy deletion); a deadline that moved later keeps its earlier entry, which wakes the
loan early and is then moved to the real deadline (cheaper than a push per engine call). The
heap is rebuilt from ``_due`` when stale entries outnumber live ones.

Pure: events and labels in, alerts and a summary out. The CLI does the file IO.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rules.engine import Engine, InputEvent
from rules.events.alert import AlertEvent
from rules.events.gps import GpsPing
from rules.events.loan import Loan
from rules.events.payment import PaymentEvent
from rules.places import PlaceOccupancy
from rules.state import LoanState

AlertSink = Callable[[AlertEvent], None]


@dataclass
class BacktestResult:
    alerts: list[AlertEvent]
    summary: dict[str, Any]
    states: dict[str, LoanState] = field(default_factory=dict)


class Backtest:
    """The worker's loop around the engine, fed one event at a time.

    ``sink`` receives every alert state change in the order the engine produced it.
    """

    def __init__(self, engine: Engine, sink: AlertSink, *, lateness_s: float = 0.0) -> None:
        self.engine = engine
        self.sink = sink
        self.lateness_s = lateness_s
        self.states: dict[str, LoanState] = {}
        self.device_loan: dict[str, str] = {}
        self.unbound: dict[str, list[GpsPing]] = defaultdict(list)
        self.waiting_loans: list[Loan] = []
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}  # loan -> instant of its live heap entry
        self.occupancy: dict[str, PlaceOccupancy] = {}
        self.watermark: float | None = None
        self.max_ts: float | None = None
        self.counts: Counter[str] = Counter()
        self.by_rule: dict[str, Counter[str]] = defaultdict(Counter)
        self.alert_events = 0

    # -------------------------------------------------------------- bookkeeping

    def _now(self) -> dt.datetime:
        assert self.watermark is not None
        return dt.datetime.fromtimestamp(self.watermark, dt.UTC)

    def _state(self, loan_id: str) -> LoanState:
        state = self.states.get(loan_id)
        if state is None:
            state = self.states[loan_id] = self.engine.new_state(loan_id)
        return state

    def _emit(self, alerts: list[AlertEvent]) -> None:
        for alert in alerts:
            self.alert_events += 1
            self.by_rule[alert.rule_id][alert.status.value] += 1
            self.sink(alert)

    def _schedule(self, loan_id: str) -> None:
        deadline = self.engine.next_deadline(self.states[loan_id])
        if deadline is None:
            return  # an existing entry wakes the loan once more and is dropped then
        at = deadline.timestamp()
        current = self._due.get(loan_id)
        if current is not None and current <= at:
            return  # the earlier entry stays; it is moved on when it pops
        self._due[loan_id] = at
        heapq.heappush(self._heap, (at, loan_id))
        if len(self._heap) > 2 * len(self._due) + 1024:
            self._heap = [(t, loan) for loan, t in self._due.items()]
            heapq.heapify(self._heap)

    def _sweep(self) -> None:
        """Advance every loan whose deadline has passed the watermark (and only those), in
        deadline order."""
        assert self.watermark is not None
        watermark = self.watermark
        heap, due = self._heap, self._due
        now: dt.datetime | None = None
        while heap and heap[0][0] <= watermark:
            at, loan_id = heapq.heappop(heap)
            if due.get(loan_id) != at:
                continue  # stale: the loan has a newer entry
            del due[loan_id]
            state = self.states[loan_id]
            deadline = self.engine.next_deadline(state)
            if deadline is None:
                continue
            real = deadline.timestamp()
            if real > at:  # woke early: the deadline moved later; queue it at the real one
                due[loan_id] = real
                heapq.heappush(heap, (real, loan_id))
                continue
            if now is None:
                now = self._now()
            before = self.engine.place_of(state)
            self._after(state, before, self.engine.advance(state, now))

    def _after(self, state: LoanState, before: str | None, alerts: list[AlertEvent]) -> None:
        """After one engine call (``before``: the loan's place before it): emit the alerts, do
        the place bookkeeping the worker also does, reschedule the loan."""
        self._emit(alerts)
        loan_id = state.loan_id
        after = self.engine.place_of(state)
        if before != after:
            ts = state.clock or 0.0
            if before is not None:
                self._place_count(before, self._occupancy(before).leave(loan_id))
            if after is not None:
                self._place_count(after, self._occupancy(after).enter(loan_id, ts))
        self._schedule(loan_id)

    def _occupancy(self, place_id: str) -> PlaceOccupancy:
        if place_id not in self.occupancy:
            self.occupancy[place_id] = PlaceOccupancy(place_id)
        return self.occupancy[place_id]

    def _place_count(self, place_id: str, count: int) -> None:
        now = self._now()
        for loan_id in list(self._occupancy(place_id).loans):
            other = self.states[loan_id]
            self._emit(self.engine.apply_place_count(other, place_id, count, now))
            self._schedule(loan_id)

    # -------------------------------------------------------------- input

    def feed(self, event: InputEvent) -> None:
        if isinstance(event, Loan):
            self.counts["loans"] += 1
            if self.watermark is None:
                self.waiting_loans.append(event)
            else:
                self._apply_loan(event)
            return
        ts = event.ts.timestamp()
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
        mark = ts - self.lateness_s
        if self.watermark is None or mark > self.watermark:
            self.watermark = mark
        if self.waiting_loans:
            for loan in self.waiting_loans:
                self._apply_loan(loan)
            self.waiting_loans.clear()
        if self._heap and self._heap[0][0] <= self.watermark:
            self._sweep()
        if isinstance(event, GpsPing):
            self.counts["gps.raw"] += 1
            loan_id = self.device_loan.get(event.device_id)
            if loan_id is None:
                self.unbound[event.device_id].append(event)
                return
        else:
            self.counts["payments" if isinstance(event, PaymentEvent) else "contacts"] += 1
            loan_id = event.loan_id
        self._apply_event(loan_id, event)

    def _apply_event(self, loan_id: str, event: InputEvent) -> None:
        state = self._state(loan_id)
        before = self.engine.place_of(state)
        self._after(state, before, self.engine.apply(state, event, self._now()))

    def _apply_loan(self, loan: Loan) -> None:
        for device in loan.devices:
            self.device_loan[device.device_id] = loan.loan_id
        self._apply_event(loan.loan_id, loan)
        for device in loan.devices:  # pings that arrived before the binding
            for ping in self.unbound.pop(device.device_id, []):
                self._apply_event(loan.loan_id, ping)

    def finish(self) -> None:
        """End of the recording: let the watermark catch up with the last event."""
        if self.max_ts is None:
            return
        self.watermark = self.max_ts
        for loan in self.waiting_loans:
            self._apply_loan(loan)
        self.waiting_loans.clear()
        self._sweep()

    def summary(self) -> dict[str, Any]:
        return {
            "records": dict(self.counts),
            "loans": len(self.states),
            "unbound_pings": sum(len(v) for v in self.unbound.values()),
            "alert_events": self.alert_events,
            "by_rule": {rule: dict(c) for rule, c in sorted(self.by_rule.items())},
            "engine": dict(self.engine.stats),
        }


def run_backtest(
    events: Iterable[InputEvent], engine: Engine, *, lateness_s: float = 0.0
) -> BacktestResult:
    """Run a whole (small) recording and keep its alerts in a list (tests, examples)."""
    alerts: list[AlertEvent] = []
    backtest = Backtest(engine, alerts.append, lateness_s=lateness_s)
    for event in events:
        backtest.feed(event)
    backtest.finish()
    return BacktestResult(alerts, backtest.summary(), backtest.states)

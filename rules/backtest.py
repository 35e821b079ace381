"""Backtest: the engine over a recording, in-process, through the worker's own steps.

A recording is in arrival order (DESIGN §4), so late ``backfill`` uploads come after newer
pings, as in production. The backtest runs the steps of rules/pipeline/steps.py the worker
runs, over dicts instead of Faust tables, and hands each record a step sends straight to the
step that consumes it (the worker sends it through Kafka):
- a loan record is evaluated, then its device bindings and releases (`rebind`) go to `bind`,
  which forwards the device's pending pings to the loan;
- a ping goes to the loan its device is bound to (`loan_bound`), or waits in `PendingPings`
  (at most `MAX_PENDING_PINGS_PER_DEVICE` per device) until a binding comes;
- `now` is the worker's event clock (rules/clock.py `EngineClock`): the newest event time
  minus ``lateness``;
- a `DeadlineIndex` (one partition) gives the loans whose deadline fell due, in deadline
  order, to `advance`;
- a place move goes to a `PlaceCounter`, and the count to every loan at the place.

It streams: events are fed one at a time (``Backtest.feed``) and alert state changes go to a
sink as they happen, so memory grows with the number of loans, never with the recording.

Pure: events and labels in, alerts and a summary out. The CLI does the file IO.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rules.clock import EngineClock
from rules.engine import Engine, InputEvent
from rules.events.alert import AlertEvent
from rules.events.gps import GpsPing
from rules.events.loan import Loan
from rules.events.payment import PaymentEvent
from rules.pipeline import steps
from rules.pipeline.deadlines import DeadlineIndex
from rules.pipeline.pending import PendingPings
from rules.pipeline.records import PlaceCount, PlaceMove
from rules.state import LoanState

AlertSink = Callable[[AlertEvent], None]
PARTITION = 0  # one partition: every deadline in one heap, swept in deadline order


@dataclass
class BacktestResult:
    alerts: list[AlertEvent]
    summary: dict[str, Any]
    states: dict[str, LoanState] = field(default_factory=dict)


class Backtest:
    """The worker's steps around the engine, fed one event at a time.

    ``sink`` receives every alert state change in the order the engine produced it.
    """

    def __init__(self, engine: Engine, sink: AlertSink, *, lateness_s: float = 0.0) -> None:
        self.engine = engine
        self.sink = sink
        self.clock = EngineClock("event", lateness_s)
        # the worker's tables
        self.states: dict[str, LoanState] = {}
        self.loan_devices: dict[str, bytes] = {}
        self.bindings: dict[str, bytes] = {}
        self.pending_index: dict[str, bytes] = {}
        self.pending = PendingPings(self.pending_index, {})
        # pings of unbound devices not yet in `pending` (the worker's batch): kept there a
        # chunk of `limit` at a time, so the pending index stays short
        self.waiting: dict[str, list[bytes]] = {}
        self.occupancy: dict[str, bytes] = {}
        self.deadlines = DeadlineIndex()
        # per loan, the deadline (the state's own float) last given to `deadlines`, until the
        # loan is popped: the same object again would change nothing there
        self._scheduled: dict[str, float] = {}
        self._due = self.deadlines.heap(PARTITION)  # its earliest entry, looked at per event
        # loans read before the first event with a time, with their binding versions
        self.waiting_loans: list[tuple[Loan, int]] = []
        self.max_ts: float | None = None
        self.records = 0  # a loan record's binding version: its place in the recording
        self._now_s = 0.0  # `now`, epoch seconds and as a datetime (moves with the clock)
        self._now = dt.datetime.fromtimestamp(0.0, dt.UTC)
        self.counts: Counter[str] = Counter()
        self.by_rule: dict[str, Counter[str]] = defaultdict(Counter)
        self.alert_events = 0

    @property
    def watermark(self) -> float | None:
        """`now` (epoch seconds), None before the first event with a time."""
        return None if self.max_ts is None else self.clock.record_now(0.0)

    # -------------------------------------------------------------- bookkeeping

    def _tick(self) -> None:
        """The clock moved: `now` is what it gives."""
        now = self.clock.record_now(0.0)
        if now != self._now_s:
            self._now_s, self._now = now, dt.datetime.fromtimestamp(now, dt.UTC)

    def _state(self, loan_id: str) -> LoanState:
        state = self.states.get(loan_id)
        if state is None:
            state = self.states[loan_id] = self.engine.new_state(loan_id)
        return state

    def _after(self, state: LoanState, effects: steps.Effects) -> None:
        """After one step on a loan: emit the alerts, count the place move, reschedule."""
        for alert in effects.alerts:
            self.alert_events += 1
            self.by_rule[alert.rule_id][alert.status.value] += 1
            self.sink(alert)
        if effects.move is not None:
            for place_id, move in steps.place_moves(state.loan_id, effects.move):
                self._count(place_id, move)
        self._schedule(state)

    def _schedule(self, state: LoanState) -> None:
        """`steps.schedule`, unless the loan's deadline is the one scheduled last (the same
        object: not recomputed since) and the loan was not popped since: most events."""
        deadline = state.deadline
        if deadline is None or self._scheduled.get(state.loan_id) is not deadline:
            steps.schedule(self.engine, self.deadlines, PARTITION, state)
            scheduled = state.deadline  # (computed by the call if it was unknown)
            assert scheduled is not None
            self._scheduled[state.loan_id] = scheduled

    def _evaluate(self, loan_id: str, event: InputEvent | PlaceCount) -> None:
        state = self._state(loan_id)
        self._after(state, steps.evaluate(self.engine, state, event, self._now, None, self._now_s))

    def _count(self, place_id: str, move: PlaceMove) -> None:
        counter = steps.PlaceCounter(self.occupancy)
        counter.move(place_id, move)
        for place, value in counter.writes():
            self.occupancy[place] = value
        for loan_id, count in counter.counts():
            self._evaluate(loan_id, count)

    def _sweep(self) -> None:
        """Advance every loan whose deadline has passed `now` (and only those), in deadline
        order."""
        now_s, now = self._now_s, self._now
        deadlines, due = self.deadlines, self._due
        while due and due[0][0] <= now_s:
            for loan_id in deadlines.pop_due((PARTITION,), now_s, limit=1):
                self._scheduled.pop(loan_id, None)  # unscheduled by the pop
                state = self.states[loan_id]
                self._after(state, steps.advance(self.engine, state, now, fallback_at=now_s))

    # -------------------------------------------------------------- input

    def feed(self, event: InputEvent) -> None:
        self.records += 1
        if isinstance(event, Loan):
            self.counts["loans"] += 1
            if self.max_ts is None:
                self.waiting_loans.append((event, self.records))
            else:
                self._apply_loan(event, self.records)
            return
        ts = self.engine.epoch(event.ts)  # (apply() reads it again, without converting again)
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
            self.clock.released(ts)
            now = self.clock.record_now(0.0)  # (`_tick`, inline: most events move the clock)
            if now != self._now_s:
                self._now_s, self._now = now, dt.datetime.fromtimestamp(now, dt.UTC)
        if self.waiting_loans:
            self._apply_waiting()
        if self._due and self._due[0][0] <= self._now_s:
            self._sweep()
        if isinstance(event, GpsPing):
            self.counts["gps.raw"] += 1
            loan_id = steps.loan_bound(self.bindings, event.device_id)
            if loan_id is None:
                waiting = self.waiting.setdefault(event.device_id, [])
                waiting.append(event.model_dump_json().encode())
                if len(waiting) >= self.pending.limit:
                    self.pending.add(event.device_id, waiting)
                    del self.waiting[event.device_id]
                return
        else:
            self.counts["payments" if isinstance(event, PaymentEvent) else "contacts"] += 1
            loan_id = event.loan_id
        state = self.states.get(loan_id) or self._state(loan_id)  # (`_evaluate`, inline)
        effects = steps.evaluate(self.engine, state, event, self._now, None, self._now_s)
        if effects.alerts or effects.move is not None:
            self._after(state, effects)
        else:  # (`_after` with nothing to emit or count: most events)
            deadline = state.deadline
            if deadline is None or self._scheduled.get(loan_id) is not deadline:
                self._schedule(state)

    def _apply_waiting(self) -> None:
        for loan, version in self.waiting_loans:
            self._apply_loan(loan, version)
        self.waiting_loans.clear()

    def _apply_loan(self, loan: Loan, version: int) -> None:
        """The loan record, then its device bindings and releases; a device's pending pings
        reach the loan when its binding does."""
        self._evaluate(loan.loan_id, loan)
        rebind = steps.rebind(self.loan_devices, loan, version)
        if rebind.devices is not None:
            self.loan_devices[loan.loan_id] = rebind.devices
        for device_id, change in rebind.changes:
            waiting = self.waiting.get(device_id)
            bound = steps.bind(self.bindings, self.pending, device_id, change, waiting)
            if bound is None:
                continue
            self.waiting.pop(device_id, None)
            if bound.forget:
                self.pending.forget(device_id)
            for raw in bound.pings:
                self._evaluate(bound.loan_id, GpsPing.model_validate_json(raw))

    def finish(self) -> None:
        """End of the recording: let `now` catch up with the last event."""
        if self.max_ts is None:
            return
        self.clock = EngineClock("event", 0.0, frontier=self.max_ts)
        self._tick()
        self._apply_waiting()
        self._sweep()

    def unbound_pings(self) -> int:
        """Pings kept for devices not bound to a loan."""
        devices = set(self.pending_index) | set(self.waiting)
        limit = self.pending.limit
        return sum(
            min(limit, len(self.pending.held(device)) + len(self.waiting.get(device, [])))
            for device in devices
        )

    def summary(self) -> dict[str, Any]:
        return {
            "records": dict(self.counts),
            "loans": len(self.states),
            "unbound_pings": self.unbound_pings(),
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

"""Backtest: the engine over a recording, in-process, exactly as the worker drives it.

A recording is in arrival order (DESIGN §4), so late ``backfill`` uploads come after newer
pings, as in production. This module does what the worker does around the engine:
- binds pings to loans through the Loan's devices, keeping pings of unbound devices until
  their Loan arrives;
- keeps a watermark (max event time seen minus ``lateness``) and passes it as ``now``;
- keeps a deadline index (a heap of ``next_deadline``) and sweeps only loans that are due;
- keeps ``PlaceOccupancy`` per place and gives each loan at a place the count of cars there.

Pure: records and labels in, alerts and a summary out. The CLI does the file IO.
"""

from __future__ import annotations

import datetime as dt
import heapq
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from rules.engine import Engine, InputEvent
from rules.events.alert import AlertEvent, AlertStatus
from rules.events.gps import GpsPing
from rules.events.loan import Loan
from rules.events.payment import PaymentEvent
from rules.events.recording import Label
from rules.places import PlaceOccupancy
from rules.state import LoanState


@dataclass
class BacktestResult:
    alerts: list[AlertEvent]
    summary: dict[str, Any]
    states: dict[str, LoanState] = field(default_factory=dict)


class _Runner:
    def __init__(self, engine: Engine, lateness_s: float) -> None:
        self.engine = engine
        self.lateness_s = lateness_s
        self.states: dict[str, LoanState] = {}
        self.device_loan: dict[str, str] = {}
        self.unbound: dict[str, list[GpsPing]] = defaultdict(list)
        self.waiting_loans: list[Loan] = []
        self.heap: list[tuple[float, str]] = []
        self.occupancy: dict[str, PlaceOccupancy] = {}
        self.watermark: float | None = None
        self.max_ts: float | None = None
        self.alerts: list[AlertEvent] = []
        self.counts: Counter[str] = Counter()

    def now(self) -> dt.datetime:
        assert self.watermark is not None
        return dt.datetime.fromtimestamp(self.watermark, dt.UTC)

    def state(self, loan_id: str) -> LoanState:
        state = self.states.get(loan_id)
        if state is None:
            state = self.states[loan_id] = self.engine.new_state(loan_id)
        return state

    def schedule(self, loan_id: str) -> None:
        deadline = self.engine.next_deadline(self.states[loan_id])
        if deadline is not None:
            heapq.heappush(self.heap, (deadline.timestamp(), loan_id))

    def sweep(self) -> None:
        """Advance every loan whose deadline has passed the watermark (and only those)."""
        assert self.watermark is not None
        now = self.now()
        while self.heap and self.heap[0][0] <= self.watermark:
            _, loan_id = heapq.heappop(self.heap)
            state = self.states[loan_id]
            current = self.engine.next_deadline(state)
            if current is None or current.timestamp() > self.watermark:
                if current is not None:  # stale entry; the real deadline is later
                    heapq.heappush(self.heap, (current.timestamp(), loan_id))
                continue
            self.run(state, partial(self.engine.advance, state, now))

    def run(self, state: LoanState, step: Callable[[], list[AlertEvent]]) -> None:
        """One engine call, with the place bookkeeping the worker also does."""
        before = self.engine.place_of(state)
        self.alerts.extend(step())
        after = self.engine.place_of(state)
        if before != after:
            ts = state.clock or 0.0
            if before is not None:
                self.place_count(before, self.occupancy_of(before).leave(state.loan_id))
            if after is not None:
                self.place_count(after, self.occupancy_of(after).enter(state.loan_id, ts))
        self.schedule(state.loan_id)

    def occupancy_of(self, place_id: str) -> PlaceOccupancy:
        if place_id not in self.occupancy:
            self.occupancy[place_id] = PlaceOccupancy(place_id)
        return self.occupancy[place_id]

    def place_count(self, place_id: str, count: int) -> None:
        now = self.now()
        for loan_id in list(self.occupancy_of(place_id).loans):
            other = self.states[loan_id]
            self.alerts.extend(self.engine.apply_place_count(other, place_id, count, now))
            self.schedule(loan_id)

    def feed(self, event: InputEvent) -> None:
        if isinstance(event, Loan):
            self.counts["loans"] += 1
            if self.watermark is None:
                self.waiting_loans.append(event)
            else:
                self.apply_loan(event)
            return
        ts = event.ts.timestamp()
        self.max_ts = ts if self.max_ts is None else max(self.max_ts, ts)
        mark = ts - self.lateness_s
        if self.watermark is None or mark > self.watermark:
            self.watermark = mark
        for loan in self.waiting_loans:
            self.apply_loan(loan)
        self.waiting_loans.clear()
        self.sweep()
        if isinstance(event, GpsPing):
            self.counts["gps.raw"] += 1
            loan_id = self.device_loan.get(event.device_id)
            if loan_id is None:
                self.unbound[event.device_id].append(event)
                return
        else:
            self.counts["payments" if isinstance(event, PaymentEvent) else "contacts"] += 1
            loan_id = event.loan_id
        self.apply_event(loan_id, event)

    def apply_event(self, loan_id: str, event: InputEvent) -> None:
        state = self.state(loan_id)
        now = self.now()
        self.run(state, partial(self.engine.apply, state, event, now))

    def apply_loan(self, loan: Loan) -> None:
        for device in loan.devices:
            self.device_loan[device.device_id] = loan.loan_id
        self.apply_event(loan.loan_id, loan)
        for device in loan.devices:  # pings that arrived before the binding
            for ping in self.unbound.pop(device.device_id, []):
                self.apply_event(loan.loan_id, ping)

    def finish(self) -> None:
        """End of the recording: let the watermark catch up with the last event."""
        if self.max_ts is None:
            return
        self.watermark = self.max_ts
        for loan in self.waiting_loans:
            self.apply_loan(loan)
        self.waiting_loans.clear()
        self.sweep()


def run_backtest(
    events: Iterable[InputEvent],
    engine: Engine,
    *,
    labels: Sequence[Label] | None = None,
    lateness_s: float = 0.0,
) -> BacktestResult:
    runner = _Runner(engine, lateness_s)
    for event in events:
        runner.feed(event)
    runner.finish()
    summary: dict[str, Any] = {
        "records": dict(runner.counts),
        "loans": len(runner.states),
        "unbound_pings": sum(len(v) for v in runner.unbound.values()),
        "alert_events": len(runner.alerts),
        "by_rule": _by_rule(runner.alerts),
        "engine": dict(engine.stats),
    }
    if labels is not None:
        summary["evaluation"] = evaluate(runner.alerts, labels, loans=set(runner.states))
    return BacktestResult(runner.alerts, summary, runner.states)


def _by_rule(alerts: Sequence[AlertEvent]) -> dict[str, dict[str, int]]:
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for alert in alerts:
        out[alert.rule_id][alert.status.value] += 1
    return {rule: dict(counts) for rule, counts in sorted(out.items())}


def evaluate(
    alerts: Sequence[AlertEvent], labels: Sequence[Label], *, loans: set[str]
) -> dict[str, Any]:
    """Per rule (and for any rule): precision and recall over loans, and lead time.

    A loan counts as caught by a rule when the rule started firing on it at or before the
    labelled ``unreachable_at``; lead time is how much earlier. Precision is caught loans over
    all loans the rule fired on (a rule firing only after the fact is not an early warning).
    """
    unreachable = {label.loan_id: label.unreachable_at for label in labels}
    first_fire: dict[str, dict[str, dt.datetime]] = defaultdict(dict)
    for alert in alerts:
        if alert.status is not AlertStatus.FIRING:
            continue
        for key in (alert.rule_id, "(any rule)"):
            seen = first_fire[key].get(alert.loan_id)
            if seen is None or alert.started_at < seen:
                first_fire[key][alert.loan_id] = alert.started_at
    labelled = len([loan for loan in unreachable if loan in loans])
    out: dict[str, Any] = {"labelled_loans": labelled, "loans": len(loans), "rules": {}}
    for key in sorted(first_fire):
        fired = first_fire[key]
        leads = [
            (unreachable[loan] - started).total_seconds() / 3600.0
            for loan, started in fired.items()
            if loan in unreachable and started <= unreachable[loan]
        ]
        out["rules"][key] = {
            "loans_alerted": len(fired),
            "caught": len(leads),
            "precision": round(len(leads) / len(fired), 3) if fired else None,
            "recall": round(len(leads) / labelled, 3) if labelled else None,
            "lead_time_hours_median": round(statistics.median(leads), 1) if leads else None,
            "lead_time_hours_min": round(min(leads), 1) if leads else None,
        }
    return out

"""The streaming backtest (one deadline entry per loan) gives the same alerts as the original
loop (a list of events, a deadline-heap push per engine call), kept here as the oracle."""

from __future__ import annotations

import datetime as dt
import heapq
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from rules.backtest import Backtest, run_backtest
from rules.engine import Engine, InputEvent
from rules.events import AlertEvent, GpsPing, Loan
from rules.events.recording import EVENT_TYPE_BY_TOPIC
from rules.places import PlaceIndex, PlaceOccupancy
from rules.spec import load_rules
from rules.state import LoanState
from services.cli_rules import backtest_command
from services.evaluate import recording_events
from services.simulator import Simulation, SimulationConfig, catalog_places, write_places_csv

pytestmark = pytest.mark.unit


class OriginalRunner:
    """The backtest loop before streaming (rules/backtest.py at a5fca73), trimmed to alerts."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.states: dict[str, LoanState] = {}
        self.device_loan: dict[str, str] = {}
        self.unbound: dict[str, list[GpsPing]] = defaultdict(list)
        self.waiting_loans: list[Loan] = []
        self.heap: list[tuple[float, str]] = []
        self.occupancy: dict[str, PlaceOccupancy] = {}
        self.watermark: float | None = None
        self.max_ts: float | None = None
        self.alerts: list[AlertEvent] = []

    def now(self) -> dt.datetime:
        assert self.watermark is not None
        return dt.datetime.fromtimestamp(self.watermark, dt.UTC)

    def state(self, loan_id: str) -> LoanState:
        if loan_id not in self.states:
            self.states[loan_id] = self.engine.new_state(loan_id)
        return self.states[loan_id]

    def schedule(self, loan_id: str) -> None:
        deadline = self.engine.next_deadline(self.states[loan_id])
        if deadline is not None:
            heapq.heappush(self.heap, (deadline.timestamp(), loan_id))

    def sweep(self) -> None:
        assert self.watermark is not None
        now = self.now()
        while self.heap and self.heap[0][0] <= self.watermark:
            _, loan_id = heapq.heappop(self.heap)
            state = self.states[loan_id]
            current = self.engine.next_deadline(state)
            if current is None or current.timestamp() > self.watermark:
                if current is not None:
                    heapq.heappush(self.heap, (current.timestamp(), loan_id))
                continue
            self.run(state, partial(self.engine.advance, state, now))

    def run(self, state: LoanState, step: Callable[[], list[AlertEvent]]) -> None:
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
            self.alerts.extend(
                self.engine.apply_place_count(self.states[loan_id], place_id, count, now)
            )
            self.schedule(loan_id)

    def feed(self, event: InputEvent) -> None:
        if isinstance(event, Loan):
            if self.watermark is None:
                self.waiting_loans.append(event)
            else:
                self.apply_loan(event)
            return
        ts = event.ts.timestamp()
        self.max_ts = ts if self.max_ts is None else max(self.max_ts, ts)
        if self.watermark is None or ts > self.watermark:
            self.watermark = ts
        for loan in self.waiting_loans:
            self.apply_loan(loan)
        self.waiting_loans.clear()
        self.sweep()
        if isinstance(event, GpsPing):
            loan_id = self.device_loan.get(event.device_id)
            if loan_id is None:
                self.unbound[event.device_id].append(event)
                return
        else:
            loan_id = event.loan_id
        self.apply_event(loan_id, event)

    def apply_event(self, loan_id: str, event: InputEvent) -> None:
        state = self.state(loan_id)
        self.run(state, partial(self.engine.apply, state, event, self.now()))

    def apply_loan(self, loan: Loan) -> None:
        for device in loan.devices:
            self.device_loan[device.device_id] = loan.loan_id
        self.apply_event(loan.loan_id, loan)
        for device in loan.devices:
            for ping in self.unbound.pop(device.device_id, []):
                self.apply_event(loan.loan_id, ping)

    def finish(self) -> None:
        if self.max_ts is None:
            return
        self.watermark = self.max_ts
        for loan in self.waiting_loans:
            self.apply_loan(loan)
        self.waiting_loans.clear()
        self.sweep()


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    config = SimulationConfig(
        loans=40, days=5, seed=11, skip_fraction=0.25, places=catalog_places()
    )
    return Simulation(config)


def engine_for(simulation: Simulation) -> Engine:
    return Engine(load_rules(None), PlaceIndex(simulation.places))


def events_of(simulation: Simulation) -> Iterator[InputEvent]:
    for record in simulation.records():
        yield EVENT_TYPE_BY_TOPIC[record.topic].model_validate(record.value)


def test_streaming_backtest_gives_the_original_alerts(simulation: Simulation) -> None:
    oracle = OriginalRunner(engine_for(simulation))
    for event in events_of(simulation):
        oracle.feed(event)
    oracle.finish()
    result = run_backtest(events_of(simulation), engine_for(simulation))
    assert len(oracle.alerts) > 20  # the comparison means something
    assert len({a.rule_id for a in oracle.alerts}) >= 3  # several rules, not one
    assert [a.model_dump_json() for a in result.alerts] == [
        a.model_dump_json() for a in oracle.alerts
    ]


def test_deadline_index_keeps_one_live_entry_per_loan(simulation: Simulation) -> None:
    backtest = Backtest(engine_for(simulation), lambda alert: None)
    largest = 0
    for event in events_of(simulation):
        backtest.feed(event)
        assert len(backtest.deadlines) <= len(backtest.states)
        largest = max(largest, backtest.deadlines.entries())
    backtest.finish()
    assert largest <= 2 * len(backtest.states) + 1024


def test_every_loan_is_scheduled_at_its_deadline_after_each_event(simulation: Simulation) -> None:
    """The backtest skips rescheduling a loan whose deadline it scheduled already: after every
    event the index still holds each loan's deadline as `steps.schedule` would give it."""
    backtest = Backtest(engine_for(simulation), lambda alert: None)
    engine, events = backtest.engine, 0
    for event in events_of(simulation):
        backtest.feed(event)
        for loan_id, state in backtest.states.items():
            deadline = engine.next_deadline(state)
            wanted = backtest.deadlines._wanted.get(loan_id)
            assert wanted == (deadline.timestamp() if deadline is not None else None), loan_id
        events += 1
    assert events > 1000


def test_backtest_command_streams_a_simulated_recording(
    simulation: Simulation, tmp_path: Path
) -> None:
    recording, labels, places = tmp_path / "r.jsonl", tmp_path / "l.jsonl", tmp_path / "p.csv"
    recording.write_bytes(b"".join(r.line() + b"\n" for r in simulation.records()))
    labels.write_text("".join(label.model_dump_json() + "\n" for label in simulation.truth))
    write_places_csv(simulation.places, places)
    assert sum(1 for _ in recording_events(recording)) == recording.read_bytes().count(b"\n")
    app = typer.Typer()
    app.command()(backtest_command)
    out = tmp_path / "alerts.jsonl"
    args = [str(recording), "--labels", str(labels), "--places", str(places), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    expected = run_backtest(events_of(simulation), engine_for(simulation)).alerts
    assert out.read_bytes() == b"".join(a.model_dump_json().encode() + b"\n" for a in expected)
    assert summary["evaluation"]["loans"] == 40 and summary["evaluation"]["skips"] == 10
    assert summary["events"] == recording.read_bytes().count(b"\n")

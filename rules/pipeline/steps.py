"""The pipeline's steps around the engine, shared by the worker and the backtest.

Each step takes the state it works on (a loan's `LoanState`, the tables it reads), `now` and
the record, and gives back what to send and what to write. The runner does the IO:

- the worker (streams/app.py) passes its Faust tables, sends what a step gives to Kafka topics
  and writes the after-ack writes once those sends are acknowledged (crash-safe order);
- the backtest (rules/backtest.py) passes dicts and hands each send straight to the step that
  consumes it.

Steps:
- `evaluate` / `advance`: one input (or the passing of time) applied to a loan's state: its
  alerts and the risk place the vehicle left or entered (`Effects`).
- `rebind`: a loan record's device changes (`Binding`s to send, keyed by device), released
  when a device left the loan or the loan is no longer active.
- `loan_bound` / `bind`: a ping's loan through the binding in force; a binding change applied
  to the bindings table, with the device's pending pings (`PendingPings`, capped per device)
  to forward to the loan.
- `place_moves` / `PlaceCounter`: who is at each risk place, and the count every loan there
  is given.
- `schedule` and `DeadlineIndex.pop_due` (deadlines.py): the loans whose deadline fell due.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

import orjson

from rules.alerts import to_datetime
from rules.engine import Engine
from rules.events import AlertEvent, InputEvent, Loan
from rules.pipeline.deadlines import DeadlineIndex
from rules.pipeline.pending import PendingPings
from rules.pipeline.records import Binding, PlaceCount, PlaceMove
from rules.pipeline.tables import Table
from rules.places import PlaceOccupancy
from rules.state import LoanState

# A vehicle's risk-place change: (place left, place entered, at: epoch seconds).
Move = tuple[str | None, str | None, float]


@dataclass(slots=True)
class Effects:
    """What one engine call gives: the alert state changes, and the place move if any."""

    alerts: list[AlertEvent]
    move: Move | None = None


def evaluate(
    engine: Engine,
    state: LoanState,
    event: InputEvent | PlaceCount,
    now: datetime,
    arrival: float | None = None,
    fallback_at: float = 0.0,
) -> Effects:
    """Apply one input to its loan's state. `arrival`: when the record entered Kafka (live
    lateness, rules/clock.py; None in a replay); `fallback_at`: the time of a place move when
    the state has no clock yet."""
    before = engine.place_of(state)
    if isinstance(event, PlaceCount):
        alerts = engine.apply_place_count(state, event.place_id, event.count, now)
    else:
        alerts = engine.apply(state, event, now, arrival)
    after = engine.place_of(state)  # (inline, not a helper: once per input in the backtest)
    if after == before:
        return Effects(alerts)
    return Effects(alerts, (before, after, state.clock or fallback_at))


def advance(
    engine: Engine, state: LoanState, now: datetime, *, fallback_at: float = 0.0
) -> Effects:
    """Time passes for a loan whose deadline fell due (a dwell or a grace may end)."""
    before = engine.place_of(state)
    alerts = engine.advance(state, now)
    after = engine.place_of(state)
    if after == before:
        return Effects(alerts)
    return Effects(alerts, (before, after, state.clock or fallback_at))


def schedule(engine: Engine, deadlines: DeadlineIndex, partition: int, state: LoanState) -> None:
    """Index the loan's next deadline (after every change of its state)."""
    deadline = engine.next_deadline_s(state)
    deadlines.schedule(
        partition, state.loan_id, _scheduled_at(deadline) if deadline is not None else None
    )


@lru_cache(maxsize=1 << 14)
def _scheduled_at(deadline: float) -> float:
    """The deadline as `next_deadline` gives it (a datetime: to the microsecond), in seconds.
    Cached: most inputs leave a loan's deadline where it was."""
    return to_datetime(deadline).timestamp()


# ------------------------------------------------------------------------------ bindings


@dataclass(slots=True)
class Rebind:
    """A loan record's device changes: the bindings to send (device id, change) and the loan's
    device list to write once they were sent (None: unchanged)."""

    changes: list[tuple[str, Binding]]
    devices: bytes | None


def rebind(loan_devices: Table, loan: Loan, version: int) -> Rebind:
    """The devices a loan record binds and releases. A device is bound while the loan is
    active and names it; a device the loan no longer names, or every device of a loan no
    longer active, is released. `version`: the loan record's arrival (ms), newest wins."""
    previous = set(orjson.loads(loan_devices.get(loan.loan_id) or b"[]"))
    current = {d.device_id for d in loan.devices} if loan.status == "active" else set()
    changes = [
        *((device_id, Binding(loan.loan_id, bound=False, version=version))
          for device_id in sorted(previous - current)),
        *((device_id, Binding(loan.loan_id, bound=True, version=version))
          for device_id in sorted(current - previous)),
    ]  # fmt: skip
    devices = orjson.dumps(sorted(current)) if current != previous else None
    return Rebind(changes, devices)


@lru_cache(maxsize=1 << 16)
def _loan_of(binding: bytes) -> str:
    return Binding.from_bytes(binding).loan_id


def loan_bound(bindings: Table, device_id: str) -> str | None:
    """The loan a device's pings go to, None while it is bound to none (the ping waits in
    `PendingPings`). Raises if the stored binding cannot be read."""
    held = bindings.get(device_id)
    return _loan_of(held) if held else None


@dataclass(slots=True)
class Bound:
    """A binding change applied: the device's pings to forward to `loan_id` (oldest first, at
    most the pending cap), and whether its pending pings are to be forgotten once they were
    sent."""

    loan_id: str
    pings: list[bytes] = field(default_factory=list)
    forget: bool = False


def bind(
    bindings: Table,
    pending: PendingPings,
    device_id: str,
    change: Binding,
    waiting: list[bytes] | None = None,
) -> Bound | None:
    """Apply a binding change to the bindings table (None: it does not supersede the binding
    in force, or it releases the device). `waiting`: the device's pings read in the same batch
    and not kept in `pending` yet (after the table's, so in arrival order)."""
    held = bindings.get(device_id)
    if not change.supersedes(Binding.from_bytes(held) if held else None):
        return None
    if not change.bound:
        del bindings[device_id]
        return None
    bindings[device_id] = change.to_bytes()
    kept = pending.held(device_id)
    pings = kept + (waiting or [])
    return Bound(change.loan_id, pings[-pending.limit :], forget=bool(kept))


# ------------------------------------------------------------------------- place counts


def place_moves(loan_id: str, move: Move) -> Iterator[tuple[str, PlaceMove]]:
    """The place-move records of a vehicle's move, keyed by place: left first, then entered."""
    left, entered, at = move
    if left is not None:
        yield left, PlaceMove(loan_id, entered=False, at=at)
    if entered is not None:
        yield entered, PlaceMove(loan_id, entered=True, at=at)


def occupants(stored: bytes | None) -> dict[str, float]:
    """A place's stored occupancy: loan id -> entered at."""
    loans = orjson.loads(stored or b"{}")
    if not isinstance(loans, dict) or not all(isinstance(at, float | int) for at in loans.values()):
        raise ValueError(f"stored occupancy is not loan id -> time: {(stored or b'')[:200]!r}")
    return loans


class PlaceCounter:
    """Cross-loan: place moves in, then the count to give every loan at each place that
    changed, and the places' occupancy to write (once those counts were sent)."""

    def __init__(self, occupancy: Table) -> None:
        self.occupancy = occupancy
        self.changed: dict[str, PlaceOccupancy] = {}

    def move(self, place_id: str, move: PlaceMove) -> None:
        """Apply one move (ValueError: the place's stored occupancy cannot be read)."""
        place = self.changed.get(place_id) or PlaceOccupancy(
            place_id, occupants(self.occupancy.get(place_id))
        )
        if move.entered:
            place.enter(move.loan_id, move.at)
        else:
            place.leave(move.loan_id)
        self.changed[place_id] = place

    def counts(self) -> Iterator[tuple[str, PlaceCount]]:
        """(loan id, the count at its place) for every loan at a place that changed."""
        for place_id, place in self.changed.items():
            count = PlaceCount(place_id, place.count)
            for loan_id in place.loans:
                yield loan_id, count

    def writes(self) -> Iterator[tuple[str, bytes]]:
        """(place id, its occupancy) for every place that changed."""
        for place_id, place in self.changed.items():
            yield place_id, orjson.dumps(place.loans)

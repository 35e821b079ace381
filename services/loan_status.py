"""A loan's derived status, as the worker sees it, for the API's view.

The worker publishes a compact `LoanStatus` to the compacted `<prefix>loan-status` topic (key
loan id) when it changes: the current signals (out of region, offline, at a risk place, overdue,
unreachable, risk score) and the resident points (常驻点, `Engine.resident_points`). The
projector keeps the newest per loan in Redis (services/store.py); `GET /v1/loans/{id}` returns it
and `GET /v1/overview` counts loans by signal from it.

`StatusThrottle` keeps the topic small: a status goes out when a signal or a resident point's
position or kind changes; when only the hours parked at the resident points grew, at most once per
`refresh_s`. It remembers a bounded number of loans; one forgotten (or after a restart) simply
publishes its next change.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rules.engine import Engine
from rules.scoring import risk_score
from rules.state import LoanState

SIGNALS = ("out_of_region", "offline", "at_risk_place", "overdue", "unreachable")
UNREACHABLE_FAILURES = 3  # consecutive failed contacts (the catalog's escalation threshold)


class ResidentPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    lat: float
    lon: float
    kind: str = Field(description="`night` (parked mostly 22:00-06:00) or `day`.")
    parked_hours: float
    night_hours: float
    day_hours: float


class LoanSignals(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    out_of_region: bool = Field(description="Outside the home region (with hysteresis).")
    offline: bool = Field(description="A bound tracker is offline by its kind's threshold.")
    at_risk_place: bool
    risk_place_id: str | None = None
    risk_place_kind: str | None = None
    overdue: bool = Field(description="A payment is at least one day past due.")
    days_past_due: int
    unreachable: bool = Field(
        description=f"{UNREACHABLE_FAILURES} or more consecutive failed contact attempts."
    )
    risk_score: int = Field(ge=0, le=100)


class LoanStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    loan_id: str
    as_of: AwareDatetime = Field(description="The loan's clock: the event time evaluated last.")
    signals: LoanSignals
    resident_points: list[ResidentPoint]

    def flags(self) -> set[str]:
        return {name for name in SIGNALS if getattr(self.signals, name)}


# The status as plain values, compared by the throttle before any model is built (the worker
# does this for every loan a batch touches: ≈20 µs, the signals and the risk score dominating).
Parts = tuple[tuple[Any, ...], list[dict[str, Any]]]


def status_parts(engine: Engine, state: LoanState) -> Parts:
    s = engine.signals(state)
    days = int(s["payment.days_past_due"])
    at_place = bool(s["vehicle.at_risk_place"])
    signals = (
        bool(s["vehicle.outside_home_region"]),
        bool(s["device.all_offline"] or s["device.offline.wired"] or s["device.offline.wireless"]),
        at_place,
        (s["vehicle.risk_place_id"] or None) if at_place else None,
        (s["vehicle.risk_place_kind"] or None) if at_place else None,
        days >= 1,
        days,
        int(s["contact.consecutive_failures"]) >= UNREACHABLE_FAILURES,
        risk_score(s).score,
    )
    return signals, engine.resident_points(state)


def build_status(loan_id: str, clock: float | None, parts: Parts) -> LoanStatus:
    signals, points = parts
    names = ("out_of_region", "offline", "at_risk_place", "risk_place_id", "risk_place_kind",
             "overdue", "days_past_due", "unreachable", "risk_score")  # fmt: skip
    return LoanStatus(
        loan_id=loan_id,
        as_of=dt.datetime.fromtimestamp(clock or 0.0, dt.UTC),
        signals=LoanSignals(**dict(zip(names, signals, strict=True))),
        resident_points=[ResidentPoint(**p) for p in points],
    )


def loan_status(engine: Engine, state: LoanState) -> LoanStatus:
    return build_status(state.loan_id, state.clock, status_parts(engine, state))


class StatusThrottle:
    def __init__(self, refresh_s: float = 600.0, remember: int = 1 << 18) -> None:
        self.refresh_s = refresh_s
        self.remember = remember
        # loan -> (what must go out at once, everything, wall time sent)
        self._sent: OrderedDict[str, tuple[Any, Any, float]] = OrderedDict()

    def due(self, loan_id: str, parts: Parts, wall: float) -> bool:
        """Whether to publish this status now (and if so, remember it as sent)."""
        signals, points = parts
        urgent = (signals, tuple((p["lat"], p["lon"], p["kind"]) for p in points))
        full = (urgent, tuple(tuple(p.values()) for p in points))
        sent = self._sent.get(loan_id)
        if sent is not None:
            self._sent.move_to_end(loan_id)
            if sent[1] == full:
                return False
            if sent[0] == urgent and wall - sent[2] < self.refresh_s:
                return False
        self._sent[loan_id] = (urgent, full, wall)
        if len(self._sent) > self.remember:
            self._sent.popitem(last=False)
        return True

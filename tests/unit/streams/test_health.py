"""Worker readiness from its heartbeat and Faust's rebalance and recovery state."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from services.ops import Check, Heartbeat
from streams.health import worker_ready

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def faust_app(rebalancing: bool = False, in_recovery: bool = False, recovered: bool = True) -> Any:
    completed = SimpleNamespace(is_set=lambda: recovered)
    tables = SimpleNamespace(recovery=SimpleNamespace(completed=completed))
    return SimpleNamespace(rebalancing=rebalancing, in_recovery=in_recovery, tables=tables)


def test_starting_is_live_but_not_ready() -> None:
    heartbeat = Heartbeat(60, FakeClock())
    assert heartbeat.check() == Check(True, "starting")
    assert worker_ready(faust_app(recovered=False), heartbeat) == Check(
        False, "starting: recovering table state"
    )


def test_ready_once_beating_recovered_and_not_rebalancing() -> None:
    clock = FakeClock()
    app = faust_app()
    heartbeat = Heartbeat(60, clock)
    heartbeat.beat()
    clock.now += 0.4
    assert heartbeat.check() == Check(True, "event loop heartbeat 0.4 s ago")
    assert worker_ready(app, heartbeat) == Check(True, "processing")

    app.rebalancing = True
    assert worker_ready(app, heartbeat) == Check(False, "rebalancing")
    app.rebalancing = False
    app.in_recovery = True
    assert worker_ready(app, heartbeat) == Check(False, "recovering table state")
    assert heartbeat.check().ok  # recovering after a rebalance is not a reason to restart


def test_a_heartbeat_that_stops_fails_liveness_until_it_comes_back() -> None:
    clock = FakeClock()
    heartbeat = Heartbeat(60, clock)
    heartbeat.beat()
    clock.now += 60
    assert heartbeat.check().ok
    clock.now += 15
    assert heartbeat.check() == Check(False, "event loop stalled: no heartbeat for 75 s")
    heartbeat.beat()
    assert heartbeat.check().ok

"""Worker liveness and readiness from its heartbeat and Faust's rebalance and recovery state."""

from __future__ import annotations

from types import SimpleNamespace

from services.ops import Check, Heartbeat
from streams.health import WorkerHealth


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def faust_app(rebalancing: bool = False, in_recovery: bool = False, recovered: bool = True):
    completed = SimpleNamespace(is_set=lambda: recovered)
    tables = SimpleNamespace(recovery=SimpleNamespace(completed=completed))
    return SimpleNamespace(rebalancing=rebalancing, in_recovery=in_recovery, tables=tables)


def test_starting_is_live_but_not_ready() -> None:
    health = WorkerHealth(faust_app(recovered=False), Heartbeat(60, FakeClock()))
    assert health.live() == Check(True, "starting")
    assert health.ready() == Check(False, "starting: recovering table state")


def test_ready_once_beating_recovered_and_not_rebalancing() -> None:
    clock = FakeClock()
    app = faust_app()
    health = WorkerHealth(app, Heartbeat(60, clock))
    health.heartbeat.beat()
    clock.now += 0.4
    assert health.live() == Check(True, "event loop heartbeat 0.4 s ago")
    assert health.ready() == Check(True, "processing")

    app.rebalancing = True
    assert health.ready() == Check(False, "rebalancing")
    app.rebalancing = False
    app.in_recovery = True
    assert health.ready() == Check(False, "recovering table state")
    assert health.live().ok  # recovering after a rebalance is not a reason to restart


def test_a_stalled_event_loop_is_neither_live_nor_ready() -> None:
    clock = FakeClock()
    health = WorkerHealth(faust_app(), Heartbeat(60, clock))
    health.heartbeat.beat()
    clock.now += 60
    assert health.live().ok
    clock.now += 15
    stalled = Check(False, "event loop stalled: no heartbeat for 75 s")
    assert health.live() == stalled
    assert health.ready() == stalled
    health.heartbeat.beat()
    assert health.live().ok

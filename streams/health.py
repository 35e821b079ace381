"""The worker's liveness and readiness, as the operations port (services/ops.py) reports them.

Live: the event loop runs. A heartbeat timer stamps the time twice a second once Faust started
its timers (after the first table recovery); no stamp for `stall_s` means the loop is stuck
(a batch that never ends, a blocking call), and the supervisor should restart the process.
Before the first stamp the worker is starting and counts as live: a stuck start-up or recovery
is the recovery watchdog's (`recovery_stall_s`).

Ready: started, not in a rebalance and its table state recovered, i.e. it processes its
partitions. A rolling update waits for this before it stops the next worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from services.ops import Check


class WorkerHealth:
    def __init__(
        self, app: Any, stall_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.app = app
        self.stall_s = stall_s
        self.clock = clock
        self.last_beat: float | None = None

    def beat(self) -> None:
        self.last_beat = self.clock()

    def live(self) -> Check:
        if self.last_beat is None:
            return Check(True, "starting")
        age = self.clock() - self.last_beat
        if age > self.stall_s:
            return Check(False, f"event loop stalled: no heartbeat for {age:.0f} s")
        return Check(True, f"event loop heartbeat {age:.1f} s ago")

    def ready(self) -> Check:
        live = self.live()
        if not live.ok:
            return live
        app = self.app
        if self.last_beat is None:
            return Check(False, "starting: recovering table state")
        if app.rebalancing:
            return Check(False, "rebalancing")
        if app.in_recovery or not app.tables.recovery.completed.is_set():
            return Check(False, "recovering table state")
        return Check(True, "processing")

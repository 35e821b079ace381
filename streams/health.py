"""The worker's liveness and readiness, as the operations port (services/ops.py) reports them.

Live: the event loop runs (`Heartbeat`). Faust runs the heartbeat timer only once it started
its timers, after the first table recovery; until then the worker counts as starting and live:
a stuck start-up or recovery is the recovery watchdog's (`recovery_stall_s`).

Ready: started, not in a rebalance and its table state recovered, i.e. it processes its
partitions. A rolling update waits for this before it stops the next worker. Quarantined keys
(streams/quarantine.py) are named in the detail but leave the worker ready: one bad record or
stored state stops nothing else. A systemic failure (a batch whose sends Kafka does not take)
makes the worker exit for a restart instead.
"""

from __future__ import annotations

from typing import Any

from services.ops import Check, Heartbeat
from streams.quarantine import Quarantine


def worker_ready(app: Any, heartbeat: Heartbeat, quarantine: Quarantine | None = None) -> Check:
    """Readiness of a live worker (`ops_app` checks the heartbeat first)."""
    if heartbeat.last_beat is None:
        return Check(False, "starting: recovering table state")
    if app.rebalancing:
        return Check(False, "rebalancing")
    if app.in_recovery or not app.tables.recovery.completed.is_set():
        return Check(False, "recovering table state")
    quarantined = quarantine.summary() if quarantine is not None else ""
    return Check(True, f"processing; {quarantined}" if quarantined else "processing")

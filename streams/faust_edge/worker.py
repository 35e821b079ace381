"""The worker process's hooks into Faust (mode's signal handler) and Faust's table recovery:
the SIGUSR1 dump and the recovery watchdog. Listed in `streams/faust_edge/__init__.py`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import faust

from streams.faust_edge.consumer import LaneConsumer


class Worker(faust.Worker):
    """`kill -USR1 <pid>` prints where fetching stands, then (mode's own) every thread's and
    task's stack, to stderr: what is the worker doing?"""

    def _on_sigusr1(self) -> None:
        consumer = self.app.consumer
        if isinstance(consumer, LaneConsumer):
            print(f"consumer: {consumer.describe()}", file=sys.stderr, flush=True)
        super()._on_sigusr1()


def recovery_progress(app: Any) -> tuple[bool, int]:
    """(whether a rebalance or a changelog recovery is under way, the changelog records its
    active partitions still have to recover), read from Faust's table recovery service."""
    recovering = bool(app.rebalancing or app.in_recovery)
    return recovering, int(app.tables.recovery.active_remaining_total())


@dataclass
class RecoveryWatchdog:
    """A rebalance or changelog recovery that made no progress for `stall_s`.

    Faust can stall here (its recovery waits for changelog records that never reach it; seen
    under load after a restart). Nothing inside the process gets it going again; a new process
    does, so the worker exits for its supervisor to restart it.
    """

    stall_s: float
    remaining: int | None = None
    since: float = 0.0

    def stalled(self, recovering: bool, remaining: int, now: float) -> bool:
        if not recovering:
            self.remaining = None
            return False
        if self.remaining is None or remaining < self.remaining:
            self.remaining, self.since = remaining, now
            return False
        return now - self.since >= self.stall_s

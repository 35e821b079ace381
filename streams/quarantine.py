"""Keys (loans, places, devices) whose record or stored state made a step of the worker fail.

A failure that belongs to one record or one stored state is never a reason to stop the lane:
the worker dead-letters the record (or the stored state) with the reason, marks the key here,
logs it and goes on with the rest of the partition. The marks are what an operator looks at:
the `skipwatch_worker_quarantined_total` metric, the `/readyz` detail and the log. They are
kept in memory (bounded, newest last): after a restart a key that still fails is marked again
by the step that fails on it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

# bounded metric label values: the worker step that failed, and why
STEPS = ("evaluate", "deadline", "deadline_rebuild", "count_places", "bind_pings")
REASONS = ("state_undecodable", "unencodable_state", "processing_error", "undecodable")


@dataclass(frozen=True, slots=True)
class Mark:
    step: str
    reason: str
    detail: str
    at: float


class Quarantine:
    def __init__(self, counter: Counter, gauge: Gauge, capacity: int = 10_000) -> None:
        self._counter = counter
        self._gauge = gauge
        self.capacity = capacity
        self._marks: OrderedDict[str, Mark] = OrderedDict()
        self.total = 0

    def add(self, key: str, step: str, reason: str, detail: str, at: float) -> None:
        assert step in STEPS and reason in REASONS, (step, reason)
        self.total += 1
        self._counter.labels(step, reason).inc()
        self._marks.pop(key, None)
        self._marks[key] = Mark(step, reason, detail[:500], at)
        while len(self._marks) > self.capacity:
            self._marks.popitem(last=False)
        self._gauge.set(len(self._marks))
        log.error(
            "quarantined: a record or stored state failed; dead-lettered, processing goes on",
            extra={"key": key, "step": step, "reason": reason, "detail": detail[:500]},
        )

    def get(self, key: str) -> Mark | None:
        return self._marks.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._marks

    def __len__(self) -> int:
        return len(self._marks)

    def summary(self, show: int = 5) -> str:
        """For the readiness detail: how many keys, and the newest few with their reason."""
        if not self._marks:
            return ""
        newest = list(self._marks.items())[-show:][::-1]
        shown = ", ".join(f"{key} ({mark.reason} in {mark.step})" for key, mark in newest)
        more = f" and {len(self._marks) - show} more" if len(self._marks) > show else ""
        return f"{len(self._marks)} quarantined: {shown}{more}"

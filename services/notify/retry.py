"""When to try a delivery again. Pure: the clock reading and the random draw are parameters.

The schedule lists the wait before each attempt (default, like Svix: immediately, 5 s, 5 min,
30 min, 2 h, 5 h, 10 h, 10 h); each wait is spread by ±jitter so endpoints that failed together
do not all come back in the same second. A `Retry-After` the receiver sent is honoured: the wait
is at least that long (capped at the schedule's longest wait, so a receiver cannot park a
delivery for a year).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence


def next_attempt_at(
    schedule: Sequence[float],
    attempts_made: int,
    *,
    now: dt.datetime,
    jitter: float,
    draw: float,
    retry_after_s: float | None = None,
) -> dt.datetime | None:
    """The instant of attempt number `attempts_made + 1`, or None when the schedule is used up
    (the delivery is then dead-lettered). `draw` is uniform in [0, 1)."""
    if attempts_made >= len(schedule):
        return None
    base = schedule[attempts_made]
    wait = base * (1.0 + jitter * (2.0 * draw - 1.0))
    if retry_after_s is not None:
        wait = max(wait, min(retry_after_s, max(schedule)))
    return now + dt.timedelta(seconds=max(0.0, wait))

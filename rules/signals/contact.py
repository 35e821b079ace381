"""Contact attempts: the failure streak across parties and channels, dead lines."""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterator
from typing import Any

from rules.events.contact import (
    NEUTRAL_OUTCOMES,
    REACHING_OUTCOMES,
    UNREACHABLE_LINE_OUTCOMES,
    Channel,
    ContactAttempt,
    Outcome,
    Party,
)
from rules.state import LoanState

# Attempts kept (sorted by time). consecutive_failures saturates here.
MAX_ATTEMPTS = 32

_OUTCOMES = list(Outcome)
_CHANNELS = list(Channel)
_PARTIES = list(Party)
_OUTCOME_INDEX = {o: n for n, o in enumerate(_OUTCOMES)}
_CHANNEL_INDEX = {c: n for n, c in enumerate(_CHANNELS)}
_PARTY_INDEX = {p: n for n, p in enumerate(_PARTIES)}
_FAILURE = {_OUTCOME_INDEX[o] for o in Outcome if o not in REACHING_OUTCOMES | NEUTRAL_OUTCOMES}
_DEAD_LINE = {_OUTCOME_INDEX[o] for o in UNREACHABLE_LINE_OUTCOMES}
_BORROWER = _PARTY_INDEX[Party.BORROWER]


def encode(attempt: ContactAttempt) -> int:
    """outcome | channel << 4 | party << 6: one small int per attempt keeps the state compact."""
    return (
        _OUTCOME_INDEX[attempt.outcome]
        | _CHANNEL_INDEX[attempt.channel] << 4
        | _PARTY_INDEX[attempt.party] << 6
    )


def decode(code: int) -> tuple[Party, Channel, Outcome]:
    return _PARTIES[code >> 6], _CHANNELS[(code >> 4) & 3], _OUTCOMES[code & 15]


def apply_contact(state: LoanState, attempt: ContactAttempt, ts: float) -> bool:
    """Insert the attempt in time order; returns whether the state changed. The same attempt
    (time, party, channel, outcome) twice is one attempt, so this is idempotent."""
    entry = [ts, encode(attempt)]
    attempts = state.attempts
    if entry in attempts:
        return False
    if len(attempts) >= MAX_ATTEMPTS and ts < attempts[0][0]:
        return False  # older than all we keep: it cannot change the streak
    insort(attempts, entry)
    if len(attempts) > MAX_ATTEMPTS:
        del attempts[0]
    outcome = int(entry[1]) & 15
    if attempt.outcome in REACHING_OUTCOMES:
        if state.last_reached is None or ts > state.last_reached:
            state.last_reached = ts
            state.reach_event = attempt.event_id
    elif outcome in _FAILURE and attempts[-1] is entry:
        state.contact_event = attempt.event_id
    return True


def _streak(state: LoanState) -> Iterator[list[Any]]:
    """The failed attempts of the current streak (after the last reached/promise_to_pay), in
    time order."""
    reset = state.last_reached
    for attempt in state.attempts:
        if (reset is None or attempt[0] > reset) and int(attempt[1]) & 15 in _FAILURE:
            yield attempt


def derive(state: LoanState, now: float, out: dict[str, Any], recent: float) -> None:
    reset = state.last_reached
    failures = list(_streak(state))
    out["contact.consecutive_failures"] = len(failures)
    since = now - recent
    out["contact.recent_failures"] = sum(1 for a in failures if a[0] >= since)
    out["contact.parties_failed"] = len({int(a[1]) >> 6 for a in failures})
    out["contact.unreachable_for"] = max(0.0, now - failures[0][0]) if failures else 0.0
    out["contact.ever_reached"] = reset is not None
    out["contact.last_reached_at"] = reset
    streak = 0
    for _, code in reversed(state.attempts):
        code = int(code)
        if code >> 6 != _BORROWER:
            continue
        if code & 15 not in _DEAD_LINE:
            break
        streak += 1
    out["contact.unreachable_line"] = streak


def recent_expiry(state: LoanState, now: float, recent: float) -> float | None:
    """The next instant after ``now`` at which a failure of the current streak leaves the
    ``recent`` window (contact.recent_failures drops), or None."""
    for attempt in _streak(state):
        expiry: float = attempt[0] + recent + 0.001
        if expiry > now:
            return expiry
    return None


def streak_start(state: LoanState) -> float | None:
    first = next(_streak(state), None)
    return None if first is None else float(first[0])

"""Contact attempts: the failure streak across parties and channels, dead lines."""

from __future__ import annotations

from bisect import insort
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


def streak(state: LoanState, now: float, lapse: float) -> list[list[Any]]:
    """The current failure streak: failed attempts (any party, channel) after the last
    reached/promise_to_pay, each within ``lapse`` of the one before, the newest within ``lapse``
    of ``now``. A gap longer than that ends a streak: a reminder call missed last week is not
    the borrower going dark now."""
    reset = state.last_reached
    failures: list[list[Any]] = []
    for attempt in state.attempts:
        if (reset is None or attempt[0] > reset) and int(attempt[1]) & 15 in _FAILURE:
            if failures and attempt[0] - failures[-1][0] > lapse:
                failures = []
            failures.append(attempt)
    if failures and now - failures[-1][0] > lapse:
        return []
    return failures


def derive(state: LoanState, now: float, out: dict[str, Any], lapse: float) -> None:
    reset = state.last_reached
    failures = streak(state, now, lapse)
    out["contact.consecutive_failures"] = len(failures)
    out["contact.parties_failed"] = len({int(a[1]) >> 6 for a in failures})
    out["contact.unreachable_for"] = max(0.0, now - failures[0][0]) if failures else 0.0
    out["contact.ever_reached"] = reset is not None
    out["contact.last_reached_at"] = reset
    dead = 0
    newer = now
    for ts, code in reversed(state.attempts):
        code = int(code)
        if code >> 6 != _BORROWER:
            continue
        if code & 15 not in _DEAD_LINE or newer - ts > lapse:
            break
        dead += 1
        newer = ts
    out["contact.unreachable_line"] = dead


def deadlines(state: LoanState, now: float, lapse: float) -> tuple[float | None, float | None]:
    """(when the current streak started, when the next attempt's streak lapses): the instants
    after which contact.unreachable_for counts and the streak signals may drop."""
    failures = streak(state, now, lapse)
    lapses = min(
        (ts + lapse + 0.001 for ts, _ in state.attempts if ts + lapse + 0.001 > now),
        default=None,
    )
    return (failures[0][0] if failures else None), lapses

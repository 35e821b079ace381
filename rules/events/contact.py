"""ContactAttempt: one try by collections to reach a party of the loan."""

from __future__ import annotations

from enum import StrEnum

from rules.events.common import Event, Identifier, Timestamp


class Party(StrEnum):
    BORROWER = "borrower"
    GUARANTOR = "guarantor"
    EMERGENCY_CONTACT = "emergency_contact"


class Channel(StrEnum):
    CALL = "call"
    SMS = "sms"
    APP_PUSH = "app_push"
    VISIT = "visit"


class Outcome(StrEnum):
    REACHED = "reached"
    PROMISE_TO_PAY = "promise_to_pay"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    REJECTED = "rejected"
    POWERED_OFF = "powered_off"
    NUMBER_INVALID = "number_invalid"
    SUSPENDED = "suspended"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"


# A person answered: the borrower is reachable. These reset the failure streak.
REACHING_OUTCOMES = frozenset({Outcome.REACHED, Outcome.PROMISE_TO_PAY})
# The line itself is dead: a much stronger 失联 signal than an unanswered call.
UNREACHABLE_LINE_OUTCOMES = frozenset(
    {Outcome.POWERED_OFF, Outcome.NUMBER_INVALID, Outcome.SUSPENDED}
)
# Neither success nor failure: a message reached a device but no person acted.
NEUTRAL_OUTCOMES = frozenset({Outcome.DELIVERED})


class ContactAttempt(Event):
    event_id: Identifier
    loan_id: Identifier
    ts: Timestamp
    party: Party
    channel: Channel
    outcome: Outcome

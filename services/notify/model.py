"""What a receiver is given and what it answers: the small interface between the dispatcher and
the ways of reaching people (anchor: Alertmanager's notifier returns *retry?* and *error*)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from rules.events import AlertEvent


class EventType(StrEnum):
    FIRING = "alert.firing"
    ESCALATED = "alert.escalated"
    ACKNOWLEDGED = "alert.acknowledged"
    RESOLVED = "alert.resolved"


# Bounded failure reasons: also a metric label.
Reason = Literal[
    "client",  # 4xx other than 408/410/429, 3xx (redirects are not followed)
    "server",  # 5xx, 408
    "rate_limited",  # 429, or a robot's frequency-limit error code
    "timeout",
    "connect",  # refused, reset, DNS failure
    "refused",  # the SSRF guard refused the destination
    "gone",  # 410: the receiver asks us to stop
    "rejected",  # a robot answered 200 with an error code that retrying cannot fix
]


@dataclass(frozen=True, slots=True)
class Borrower:
    """The loan's borrower as the loan system registered it (masked before it is shown)."""

    name: str
    phone: str


@dataclass(frozen=True, slots=True)
class Notice:
    """One alert change worth telling someone about."""

    type: EventType
    alert: AlertEvent
    borrower: Borrower | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """What one delivery carries. `id` is fixed when the delivery is created and sent unchanged on
    every attempt (Standard Webhooks `webhook-id`), so receivers can drop duplicates."""

    id: str
    created_at: dt.datetime
    notices: tuple[Notice, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Delivered:
    status: int


@dataclass(frozen=True, slots=True)
class RetryLater:
    reason: Reason
    detail: str
    status: int | None = None
    # What the receiver asked for (Retry-After); None: follow the schedule.
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """Permanent: retrying cannot help. `reason == "gone"` also disables the endpoint."""

    reason: Reason
    detail: str
    status: int | None = None


Outcome = Delivered | RetryLater | Failed


class Receiver(Protocol):
    """A way of reaching someone. Must not raise for delivery problems: it answers an Outcome."""

    @property
    def kind(self) -> str: ...

    async def deliver(self, message: Message) -> Outcome: ...

"""Which alert changes are worth a notification, and batching them per group (anchor:
Alertmanager's aggregation groups: `group_wait`, `group_interval`, `repeat_interval`). Pure."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from rules.events import AlertEvent, AlertStatus
from services.notify.model import EventType


@dataclass(frozen=True, slots=True)
class Seen:
    """What was last made of an alert's fingerprint: enough to tell the next change's type."""

    alert_id: str
    status: AlertStatus
    severity_rank: int


def seen_of(alert: AlertEvent) -> Seen:
    return Seen(alert.alert_id, alert.status, alert.severity.rank)


def notice_type(previous: Seen | None, alert: AlertEvent) -> EventType | None:
    """The notification an alert change makes, or None for a repeat or a change nobody is told
    about (an operator's snooze: status silenced)."""
    status = alert.status
    if previous is not None and previous == seen_of(alert):
        return None  # a redelivered or re-emitted state: nothing changed
    same_episode = previous is not None and previous.alert_id == alert.alert_id
    if status is AlertStatus.FIRING:
        if same_episode and previous is not None:
            if alert.severity.rank > previous.severity_rank:
                return EventType.ESCALATED
            if previous.status is AlertStatus.FIRING:
                return None  # a lower severity, or the same one: no news for anyone
            if previous.status is AlertStatus.RESOLVED:
                return EventType.FIRING
            return None  # back from acknowledged or snoozed: already known to be firing
        return EventType.FIRING
    if status is AlertStatus.ACKNOWLEDGED:
        return EventType.ACKNOWLEDGED
    if status is AlertStatus.RESOLVED:
        if same_episode and previous is not None and previous.status is AlertStatus.RESOLVED:
            return None
        return EventType.RESOLVED
    return None  # silenced (snoozed by an operator)


@dataclass
class Group:
    """The notices of one route and group key waiting to be sent together.

    The first notice waits `group_wait`; after a flush, new notices wait for the next
    `group_interval` tick; alerts still firing are sent again after `repeat_interval`."""

    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    # fingerprint -> (type, alert) still to send
    pending: dict[str, tuple[EventType, AlertEvent]] = field(default_factory=dict)
    # fingerprint -> the alert as last sent, while firing (for repeats)
    firing: dict[str, AlertEvent] = field(default_factory=dict)
    next_flush: dt.datetime | None = None
    last_sent: dt.datetime | None = None

    def add(self, kind: EventType, alert: AlertEvent, now: dt.datetime) -> None:
        self.pending[alert.fingerprint] = (kind, alert)
        if self.next_flush is None:
            wait = self.group_wait_s if self.last_sent is None else self.group_interval_s
            start = now if self.last_sent is None else self.last_sent
            self.next_flush = max(now, start + dt.timedelta(seconds=wait))

    def due(self, now: dt.datetime) -> bool:
        if self.next_flush is not None and now >= self.next_flush:
            return True
        return bool(
            self.firing
            and self.last_sent is not None
            and now >= self.last_sent + dt.timedelta(seconds=self.repeat_interval_s)
        )

    def flush(self, now: dt.datetime) -> list[tuple[EventType, AlertEvent]]:
        """What to send now (changes first; else a repeat of what is still firing)."""
        out = list(self.pending.values())
        if not out and self.firing:
            out = [(EventType.FIRING, alert) for alert in self.firing.values()]
        self.pending.clear()
        for kind, alert in out:
            if kind in (EventType.FIRING, EventType.ESCALATED):
                self.firing[alert.fingerprint] = alert
            else:  # acknowledged or resolved: someone knows, no reminders
                self.firing.pop(alert.fingerprint, None)
        self.next_flush = None
        self.last_sent = now
        return out

    @property
    def empty(self) -> bool:
        return not self.pending and not self.firing

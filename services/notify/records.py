"""What the dispatcher keeps in Kafka (compacted topics, one record per key, replayed on start):
deliveries, API-managed webhook endpoints and silences.
Pure models; services/notify/state.py reads and writes them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from rules.events import AlertEvent, Severity
from services.notify.matchers import Matcher, matches_all
from services.notify.model import Borrower, EventType, Message, Notice
from services.notify.sealing import SecretBox, is_sealed, open_secret
from services.notify.signing import SigningKey, check_secret

# Attempts kept on a delivery record (the count is kept whole).
MAX_ATTEMPTS_KEPT = 30


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoticeRecord(_Record):
    type: EventType
    alert: dict[str, Any]
    borrower: dict[str, str] | None = None

    @classmethod
    def of(cls, notice: Notice) -> NoticeRecord:
        borrower = None
        if notice.borrower is not None:
            borrower = {"name": notice.borrower.name, "phone": notice.borrower.phone}
        return cls(type=notice.type, alert=notice.alert.model_dump(mode="json"), borrower=borrower)

    def notice(self) -> Notice:
        borrower = Borrower(**self.borrower) if self.borrower else None
        return Notice(self.type, AlertEvent.model_validate(self.alert), borrower)


class Attempt(_Record):
    at: AwareDatetime
    outcome: Literal["delivered", "retry", "failed"]
    status: int | None = None
    reason: str | None = None
    detail: str = ""
    latency_ms: float


DeliveryState = Literal["pending", "delivered", "dead", "failed"]


class DeliveryRecord(_Record):
    """One message to one endpoint, through all its attempts. `id` is the `webhook-id`."""

    id: str
    endpoint: str
    receiver_kind: str
    # The alerts partition of the change that made it: the dispatcher owning that partition
    # (consumer group) makes the attempts, so several dispatchers share the work.
    partition: int
    state: DeliveryState = "pending"
    # Raised by each manual redelivery: the dispatcher runs the newest generation once.
    generation: int = 0
    created_at: AwareDatetime
    next_at: AwareDatetime | None = None
    attempt_count: int = 0  # in this generation
    attempts: list[Attempt] = Field(default_factory=list)
    notices: list[NoticeRecord]

    def message(self) -> Message:
        return Message(
            id=self.id,
            created_at=self.created_at,
            notices=tuple(n.notice() for n in self.notices),
        )


class GroupRecord(_Record):
    """A routing group's notification state, written after each flush (anchor: Alertmanager's
    notification log): when it last sent, and the alerts it sent that are still firing. A
    restarted dispatcher reads it back, so it neither notifies the group again before
    `group_interval` nor forgets the `repeat_interval` reminder. The changes still waiting in the
    group are not kept: their offsets are not committed, so they are read again."""

    key: str
    route: str  # Route.id
    partition: int
    last_sent: AwareDatetime
    firing: list[dict[str, Any]] = Field(default_factory=list)

    def firing_alerts(self) -> list[AlertEvent]:
        return [AlertEvent.model_validate(a) for a in self.firing]


class KeyRecord(_Record):
    # `fernet:<token>` (services/notify/sealing.py); a clear `whsec_…` only in records written
    # before secrets were encrypted (and in a new record not yet written).
    secret: str = Field(repr=False)
    expires_at: AwareDatetime | None = None

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        return value if is_sealed(value) else check_secret(value)

    def key(self, box: SecretBox | None) -> SigningKey:
        """The clear signing key; SecretsUnreadable when `box` cannot open it."""
        return SigningKey(open_secret(box, self.secret), self.expires_at)

    def sealed(self, box: SecretBox) -> KeyRecord:
        return self.model_copy(update={"secret": box.seal(self.secret)})


class EndpointRecord(_Record):
    """A webhook endpoint managed through `/v1/webhooks`."""

    id: str
    url: str
    description: str = ""
    keys: list[KeyRecord]
    # Empty: every type.
    event_types: list[EventType] = Field(default_factory=list)
    min_severity: Severity = Severity.INFO
    # Empty: every rule.
    rules: list[str] = Field(default_factory=list)
    # Label matchers (`team="collections"`); all must match.
    labels: list[str] = Field(default_factory=list)
    enabled: bool = True
    disabled_reason: str | None = None
    disabled_at: AwareDatetime | None = None
    # Since when every attempt has failed (None after a success).
    failing_since: AwareDatetime | None = None
    created_at: AwareDatetime
    deleted: bool = False

    @field_validator("labels")
    @classmethod
    def _matchers(cls, value: list[str]) -> list[str]:
        for text in value:
            Matcher.parse(text)
        return value

    def sealed(self, box: SecretBox) -> EndpointRecord:
        """The record as it is written: every secret encrypted with the box's first key."""
        return self.model_copy(update={"keys": [k.sealed(box) for k in self.keys]})

    def wants(self, kind: EventType, alert: AlertEvent, labels: dict[str, str]) -> bool:
        if not self.enabled or self.deleted:
            return False
        if self.event_types and kind not in self.event_types:
            return False
        if alert.severity.rank < self.min_severity.rank:
            return False
        if self.rules and alert.rule_id not in self.rules:
            return False
        return matches_all((Matcher.parse(m) for m in self.labels), labels)


class SilenceRecord(_Record):
    id: str
    matchers: Annotated[list[str], Field(min_length=1)]
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    created_by: str
    comment: str
    created_at: AwareDatetime

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, value: list[str]) -> list[str]:
        for text in value:
            Matcher.parse(text)
        return value

    def active(self, now: dt.datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, labels: dict[str, str], now: dt.datetime) -> bool:
        return self.active(now) and matches_all((Matcher.parse(m) for m in self.matchers), labels)

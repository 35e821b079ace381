"""The alert and loan API's wire format, and the one place the view's records become it.

The domain AlertEvent (rules/events/alert.py) and the stored AlertRecord (services/store.py) never
leave the process as they are: routes answer with these schemas, built by `alert_out`,
`loan_out` and `timeline_out`, which also mask personal data for viewers (DESIGN §6).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from rules.events import AlertStatus, DeviceKind, LoanStatus, Severity
from services.alert_index import UNASSIGNED, Facets
from services.loan_status import LoanSignals, ResidentPoint
from services.store import AlertRecord, LoanSummary, TimelineEntry

# --- masking ------------------------------------------------------------------------------------

# Chinese mobile numbers (with or without +86) and other E.164 numbers inside free text.
_PHONE_IN_TEXT = re.compile(r"(?<![\d+])(?:\+\d{7,15}|1[3-9]\d{9})(?!\d)")
_PHONE_KEYS = frozenset({"phone", "phone_number", "mobile", "msisdn", "tel", "telephone"})
_NAME_KEYS = frozenset({"borrower_name", "guarantor_name", "contact_name", "full_name"})
# Objects that describe a person: their `name` is a person's name. (Elsewhere `name` is e.g. a
# signal name in evidence, `payment.days_past_due`, and must stay readable.)
_PERSON_KEYS = frozenset({"borrower", "guarantor", "emergency_contact", "contact", "person"})


def mask_name(name: str) -> str:
    """张三 → 张*, 欧阳娜娜 → 欧***, John Smith → J*** *****: the first character stays."""
    text = name.strip()
    if not text:
        return text
    return text[0] + "".join(" " if c == " " else "*" for c in text[1:])


def mask_phone(phone: str) -> str:
    """+8613800138000 → +86138****8000, 13800138000 → 138****8000: the last four digits and the
    leading prefix stay, the four before the last four are hidden."""
    digits = "".join(c for c in phone if c.isdigit())
    plus = "+" if phone.strip().startswith("+") else ""
    if len(digits) < 9:
        return plus + "*" * max(len(digits) - 2, 1) + digits[-2:]
    return plus + digits[: len(digits) - 8] + "****" + digits[-4:]


def mask_text(text: str) -> str:
    return _PHONE_IN_TEXT.sub(lambda m: mask_phone(m.group(0)), text)


# Free text typed by people (an assignee): a number written with spaces, dashes, dots or
# brackets, 7 digits or more, is taken for a phone number.
_LOOSE_NUMBER = re.compile(r"\+?\d[\d \-.()]{5,}\d")


def mask_free_text(text: str) -> str:
    """`mask_text`, and also phone numbers written with separators (+86 138-0013-8000)."""

    def masked(match: re.Match[str]) -> str:
        number = match.group(0)
        if sum(c.isdigit() for c in number) < 7:
            return number
        return mask_phone(number)

    return _LOOSE_NUMBER.sub(masked, mask_text(text))


def mask_value(value: Any, key: str = "", person: bool = False) -> Any:
    """Mask names and phone numbers anywhere in a JSON value (evidence, timeline data)."""
    lowered = key.lower()
    if isinstance(value, dict):
        is_person = lowered in _PERSON_KEYS or "phone" in value
        return {k: mask_value(v, str(k), is_person) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v, key, person) for v in value]
    if not isinstance(value, str):
        return value
    if lowered in _PHONE_KEYS or lowered.endswith("_phone"):
        return mask_phone(value)
    if lowered in _NAME_KEYS or (person and lowered == "name"):
        return mask_name(value)
    if lowered == "id" or lowered.endswith("_id"):
        return value  # identifiers are not free text; never rewrite them
    if lowered == "assignee":
        return mask_free_text(value)
    return mask_text(value)


# --- alerts -------------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class LocationOut(_Out):
    lat: float
    lon: float


class StampOut(_Out):
    by: str = Field(description="Who acted: the caller's role (tokens carry a role, not a name).")
    at: AwareDatetime


class AssignmentOut(StampOut):
    assignee: str = Field(
        description="The collector or team the alert is assigned to (phone numbers in it are "
        "masked for viewers)."
    )


class AlertOut(_Out):
    """An alert as it stands now (status includes operator actions and running snoozes)."""

    id: str = Field(description="Alert id: one per episode of a rule firing on a loan.")
    fingerprint: str = Field(description="Rule + loan: the same across episodes.")
    rule_id: str
    loan_id: str
    severity: Severity
    status: AlertStatus
    title: str
    summary: str
    evidence: list[dict[str, Any]] = Field(
        description="Why it fired: state values (`kind: state`), the events behind them "
        "(`kind: event`) and the risk score's reasons (`kind: risk`)."
    )
    risk_score: int = Field(ge=0, le=100)
    started_at: AwareDatetime = Field(description="When this episode began firing.")
    updated_at: AwareDatetime = Field(description="Last change by the worker or an operator.")
    event_time: AwareDatetime = Field(description="Event time of the input that last changed it.")
    location: LocationOut | None = None
    labels: dict[str, str] = Field(description="Rule labels (reserved `skipwatch/` ones removed).")
    acknowledged: StampOut | None = Field(None, description="Set while an ack is in force.")
    assigned: AssignmentOut | None = None
    resolved: StampOut | None = Field(None, description="Set when resolved by an operator.")
    silenced_until: AwareDatetime | None = Field(
        None, description="End of the snooze while the alert is silenced."
    )
    silenced: bool | None = Field(
        None,
        description="An active notification silence (`/v1/silences`) matches the alert now: "
        "its changes are not notified. Null when the silences were not read yet. (`status: "
        "silenced` is an operator's snooze; this is the notification silence.)",
    )
    silenced_by: list[str] = Field(
        default_factory=list, description="Ids of the active silences muting the alert."
    )

    def with_silences(self, ids: list[str] | None) -> AlertOut:
        return self.model_copy(update={"silenced": None if ids is None else bool(ids),
                                       "silenced_by": ids or []})  # fmt: skip


class AlertPageOut(_Out):
    items: list[AlertOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` (with the same filters and sort) for the next page; null "
        "when there is nothing more."
    )
    total: int = Field(ge=0, description="Alerts matching the filters, over all pages.")


class FacetsOut(_Out):
    """Alert counts for a set of filters, over the whole view. Each dimension is counted under
    every filter except its own (`rule` counts ignore the `rule` filter, ...), so each count is
    what choosing that value would list; `total` matches all the filters."""

    as_of: AwareDatetime = Field(description="The moment the statuses were read at.")
    total: int = Field(ge=0, description="Alerts matching all the filters.")
    rule: dict[str, int] = Field(description="Rule id → alerts; most first.")
    severity: dict[Severity, int] = Field(description="Every severity, zeros included.")
    status: dict[AlertStatus, int] = Field(
        description="Every status, zeros included; with a status filter of open statuses only "
        "(firing, acknowledged, silenced) `resolved` is left out: it is not counted, so the "
        "queue never reads the resolved history."
    )
    assignee: dict[str, int] = Field(
        description="Assignee (masked for viewers) → alerts; `unassigned`: nobody; most first."
    )
    label: dict[str, dict[str, int]] = Field(
        description="Label key → value (masked for viewers) → alerts; the 50 most frequent "
        "values per key."
    )
    label_other: dict[str, int] = Field(
        description="Label key → alerts whose value is not among the listed ones (omitted: 0)."
    )

    @classmethod
    def of(cls, facets: Facets, *, now: dt.datetime) -> FacetsOut:
        return cls(
            as_of=now,
            total=facets.total,
            rule=facets.rule,
            severity={Severity(k): v for k, v in facets.severity.items()},
            status={AlertStatus(k): v for k, v in facets.status.items()},
            assignee=facets.assignee,
            label=facets.label,
            label_other=facets.label_other,
        )


def alert_out(record: AlertRecord, *, now: dt.datetime, masked: bool) -> AlertOut:
    event = record.effective(now)
    ops = record.ops_in_force()
    labels = {k: v for k, v in event.labels.items() if not k.startswith("skipwatch/")}
    evidence = [dict(item) for item in event.evidence]
    title, summary = event.title, event.summary
    if masked:
        evidence = [mask_value(item) for item in evidence]
        title, summary = mask_text(title), mask_text(summary)
        labels = {k: mask_text(v) for k, v in labels.items()}
    assigned = record.ops.assigned if record.ops else None
    # An assignee is free text; people type phone numbers into it.
    assignee = assigned.assignee if assigned else ""
    if masked:
        assignee = mask_free_text(assignee)
    silenced = ops.silenced if ops is not None and event.status is AlertStatus.SILENCED else None
    return AlertOut(
        id=event.alert_id,
        fingerprint=event.fingerprint,
        rule_id=event.rule_id,
        loan_id=event.loan_id,
        severity=event.severity,
        status=event.status,
        title=title,
        summary=summary,
        evidence=evidence,
        risk_score=event.risk_score,
        started_at=event.started_at,
        updated_at=event.updated_at,
        event_time=event.event_time,
        location=LocationOut(lat=event.location.lat, lon=event.location.lon)
        if event.location
        else None,
        labels=labels,
        acknowledged=StampOut(by=ops.acknowledged.by, at=ops.acknowledged.at)
        if ops and ops.acknowledged
        else None,
        assigned=AssignmentOut(by=assigned.by, at=assigned.at, assignee=assignee)
        if assigned
        else None,
        resolved=StampOut(by=ops.resolved.by, at=ops.resolved.at) if ops and ops.resolved else None,
        silenced_until=silenced.until if silenced else None,
    )


# --- operator requests --------------------------------------------------------------------------


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignee: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")] = Field(
        description="Collector or team name, e.g. `collector-07` or `华东催收组` (not "
        f"`{UNASSIGNED}`: the queue's filter for nobody)."
    )

    @field_validator("assignee")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.casefold() == UNASSIGNED:
            raise ValueError(f"`{UNASSIGNED}` is reserved (the filter for alerts nobody owns)")
        return value


MAX_SNOOZE_MINUTES = 30 * 24 * 60


def _exactly_one_schema(schema: dict[str, Any]) -> None:
    """OpenAPI for SnoozeIn: each property non-null, and exactly one of them required."""
    properties = schema["properties"]
    for name, prop in properties.items():
        (given,) = [s for s in prop.pop("anyOf") if s.get("type") != "null"]
        prop.pop("default", None)
        properties[name] = {**given, **prop}
    schema["oneOf"] = [{"required": [name]} for name in properties]


class SnoozeIn(BaseModel):
    """Exactly one of `until` (RFC 3339 with an offset) or `minutes`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_exactly_one_schema)
    until: AwareDatetime | None = Field(None, description="Silence until this instant.")
    minutes: int | None = Field(None, ge=1, le=MAX_SNOOZE_MINUTES, description="Or for this long.")

    @model_validator(mode="after")
    def _exactly_one(self) -> SnoozeIn:
        given = {name for name in self.model_fields_set if getattr(self, name) is not None}
        if len(given) != 1 or len(self.model_fields_set) != 1:
            raise ValueError("give exactly one of `until` or `minutes`")
        return self

    def end(self, now: dt.datetime) -> dt.datetime:
        if self.until is not None:
            return self.until
        assert self.minutes is not None
        return now + dt.timedelta(minutes=self.minutes)


# --- loans --------------------------------------------------------------------------------------


class BorrowerOut(_Out):
    name: str = Field(description="Masked for viewers: 张三 → 张*.")
    phone: str = Field(description="Masked for viewers: +8613800138000 → +86138****8000.")


class VehicleOut(_Out):
    vin: str
    plate: str


class DeviceOut(_Out):
    device_id: str
    kind: DeviceKind


class LoanOut(_Out):
    loan_id: str
    status: LoanStatus | None = Field(description="Null when only alerts of the loan are known.")
    borrower: BorrowerOut | None
    vehicle: VehicleOut | None
    devices: list[DeviceOut]
    risk_score: int = Field(ge=0, le=100, description="Highest risk score of the open alerts.")
    open_alerts: list[AlertOut] = Field(description="Firing, acknowledged and silenced alerts.")
    alert_count: int = Field(description="Alerts of this loan in the view, open or resolved.")
    last_event_at: AwareDatetime | None = Field(
        description="Newest event time seen for the loan (alert changes and timeline events)."
    )
    home_region: dict[str, Any] | None = Field(
        None,
        description="As registered: a GeoJSON Polygon/MultiPolygon ([lon, lat]) or "
        "`{center: [lat, lon], radius_km}`.",
    )
    timezone: str | None = Field(None, description="The loan's IANA time zone.")
    signals: LoanSignals | None = Field(
        None,
        description="The worker's current signals for the loan (`<prefix>loan-status`); null "
        "until the worker published one.",
    )
    signals_as_of: AwareDatetime | None = Field(
        None, description="The loan's clock when the worker derived `signals`."
    )
    resident_points: list[ResidentPoint] = Field(
        default_factory=list,
        description="Where the car usually parks (常驻点), learned by the worker: "
        "`[{lat, lon, kind: night|day, parked_hours, night_hours, day_hours}]`.",
    )


def loan_out(summary: LoanSummary, *, now: dt.datetime, masked: bool) -> LoanOut:
    loan = summary.loan
    borrower = None
    if loan is not None:
        name, phone = loan.borrower.name, loan.borrower.phone
        borrower = BorrowerOut(
            name=mask_name(name) if masked else name, phone=mask_phone(phone) if masked else phone
        )
    open_alerts = sorted(
        (alert_out(a, now=now, masked=masked) for a in summary.open_alerts),
        key=lambda a: (-a.severity.rank, -a.risk_score, a.started_at),
    )
    return LoanOut(
        loan_id=summary.loan_id,
        status=loan.status if loan else None,
        borrower=borrower,
        vehicle=VehicleOut(vin=loan.vehicle.vin, plate=loan.vehicle.plate) if loan else None,
        devices=[DeviceOut(device_id=d.device_id, kind=d.kind) for d in loan.devices]
        if loan
        else [],
        risk_score=summary.risk_score,
        open_alerts=open_alerts,
        alert_count=summary.alert_count,
        last_event_at=summary.last_event_at,
        home_region=loan.home_region.model_dump(mode="json") if loan and loan.home_region else None,
        timezone=loan.timezone if loan else None,
        signals=summary.status.signals if summary.status else None,
        signals_as_of=summary.status.as_of if summary.status else None,
        resident_points=summary.status.resident_points if summary.status else [],
    )


class TimelineItemOut(_Out):
    ts: AwareDatetime = Field(description="Event time (operator actions: when they acted).")
    kind: str = Field(description="`alert`, `payment`, `contact` or `ping`.")
    data: dict[str, Any] = Field(description="The event's fields (pings: a sample, see docs).")


class TimelineOut(_Out):
    loan_id: str
    items: list[TimelineItemOut] = Field(description="Newest first, at most the last 200.")


def timeline_out(loan_id: str, entries: list[TimelineEntry], *, masked: bool) -> TimelineOut:
    return TimelineOut(
        loan_id=loan_id,
        items=[
            TimelineItemOut(
                ts=e.ts, kind=e.kind, data=mask_value(e.data) if masked else dict(e.data)
            )
            for e in entries
        ],
    )

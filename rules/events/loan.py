"""Loan: registration and updates from the loan system (compacted topic, keyed by loan_id)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from rules.events.bounds import Amount, InstallmentNo, Latitude, Longitude, Name
from rules.events.common import Event, Identifier
from rules.events.gps import DeviceKind

# Labels the lender's loan system gives a loan (branch, region, collection team, product...): copied
# onto the loan's alerts, where routing, silences and the queue's filters match them. The keys the
# alert itself sets are reserved; a rule's own label of the same name wins over the loan's.
RESERVED_LABELS = frozenset({"severity", "rule", "loan", "status", "rule_file", "note"})
MAX_LABELS = 16
LabelKey = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
LabelValue = Annotated[str, Field(min_length=1, max_length=64)]


class LoanStatus(StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"
    CHARGED_OFF = "charged_off"


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Borrower(_Part):
    name: Name
    phone: Annotated[str, Field(pattern=r"^\+?[0-9][0-9 \-]{4,30}$")]


class Vehicle(_Part):
    vin: Annotated[str, Field(pattern=r"^[A-HJ-NPR-Z0-9]{17}$")]
    plate: Annotated[Name, Field(max_length=20)]


class DeviceBinding(_Part):
    device_id: Identifier
    kind: DeviceKind


# GeoJSON positions are [lon, lat] (RFC 7946).
Position = tuple[Longitude, Latitude]
Ring = Annotated[list[Position], Field(min_length=4)]


def _check_rings(rings: list[list[Position]]) -> None:
    for ring in rings:
        if ring[0] != ring[-1]:
            raise ValueError("a linear ring must be closed (first position equals last)")


class PolygonRegion(_Part):
    type: Literal["Polygon"]
    coordinates: Annotated[list[Ring], Field(min_length=1)]

    @model_validator(mode="after")
    def _closed(self) -> PolygonRegion:
        _check_rings(self.coordinates)
        return self


class MultiPolygonRegion(_Part):
    type: Literal["MultiPolygon"]
    coordinates: Annotated[list[Annotated[list[Ring], Field(min_length=1)]], Field(min_length=1)]

    @model_validator(mode="after")
    def _closed(self) -> MultiPolygonRegion:
        for polygon in self.coordinates:
            _check_rings(polygon)
        return self


class CircleRegion(_Part):
    """A centre ([lat, lon], as lenders write it) and a radius."""

    center: tuple[Latitude, Longitude]
    radius_km: Annotated[float, Field(gt=0.0, le=5000.0, allow_inf_nan=False)]


def _region_kind(value: Any) -> str:
    """The member of HomeRegion a value is meant to be: GeoJSON by its `type`, else a circle."""
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "<circle>" if kind is None else f"<{kind}>"


# Discriminated: an error names the fields of the region the sender meant, not of all three.
HomeRegion = Annotated[
    Annotated[PolygonRegion, Tag("<Polygon>")]
    | Annotated[MultiPolygonRegion, Tag("<MultiPolygon>")]
    | Annotated[CircleRegion, Tag("<circle>")],
    Discriminator(
        _region_kind,
        custom_error_type="region_type",
        custom_error_message="type must be 'Polygon' or 'MultiPolygon' (GeoJSON), "
        "or give a circle as center and radius_km",
    ),
]


class Installment(_Part):
    installment_no: InstallmentNo
    due_date: dt.date
    amount: Amount


class Loan(Event):
    loan_id: Identifier
    status: LoanStatus = LoanStatus.ACTIVE
    borrower: Borrower
    vehicle: Vehicle
    devices: tuple[DeviceBinding, ...] = ()
    home_region: HomeRegion | None = None
    schedule: tuple[Installment, ...] = ()
    # IANA zone the due dates are in: an instalment is past due after the end of its due date there.
    timezone: str = "Asia/Shanghai"
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS)

    @field_validator("labels")
    @classmethod
    def _unreserved_labels(cls, value: dict[str, str]) -> dict[str, str]:
        taken = sorted(RESERVED_LABELS.intersection(value))
        if taken:
            raise ValueError(f"label names reserved for the alert itself: {', '.join(taken)}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("schedule")
    @classmethod
    def _unique_installments(cls, value: tuple[Installment, ...]) -> tuple[Installment, ...]:
        numbers = [i.installment_no for i in value]
        if len(numbers) != len(set(numbers)):
            raise ValueError("installment_no must be unique within the schedule")
        return tuple(sorted(value, key=lambda i: i.installment_no))

    @field_validator("devices")
    @classmethod
    def _unique_devices(cls, value: tuple[DeviceBinding, ...]) -> tuple[DeviceBinding, ...]:
        ids = [d.device_id for d in value]
        if len(ids) != len(set(ids)):
            raise ValueError("device_id must be unique within devices")
        return value

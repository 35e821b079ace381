"""GpsPing: one position report from a tracker, as vendors and the JT/T 808 gateway produce it."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from rules.events.common import Event, Identifier, Timestamp


class Fix(StrEnum):
    GPS = "gps"
    LBS = "lbs"
    WIFI = "wifi"
    NONE = "none"


class DeviceKind(StrEnum):
    WIRED = "wired"
    WIRELESS = "wireless"


class Alarm(StrEnum):
    POWER_CUT = "power_cut"
    REMOVAL = "removal"
    TAMPER = "tamper"
    LOW_BATTERY = "low_battery"
    SOS = "sos"
    VIBRATION = "vibration"
    ANTENNA_CUT = "antenna_cut"
    ILLEGAL_IGNITION = "illegal_ignition"
    ILLEGAL_DISPLACEMENT = "illegal_displacement"


class GpsPing(Event):
    event_id: Identifier
    device_id: Identifier
    vendor: Annotated[str, Field(min_length=1, max_length=64)]
    ts: Timestamp
    lat: Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
    lon: Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False)]
    speed_kmh: Annotated[float, Field(ge=0.0, le=1000.0, allow_inf_nan=False)] | None = None
    heading: Annotated[float, Field(ge=0.0, le=360.0, allow_inf_nan=False)] | None = None
    fix: Fix = Fix.GPS
    acc_on: bool | None = None
    battery_pct: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)] | None = None
    device_kind: DeviceKind
    alarms: tuple[Alarm, ...] = ()
    backfill: bool = False

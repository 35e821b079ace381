"""GpsPing: one position report from a tracker, as vendors and the JT/T 808 gateway produce it."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from rules.events.bounds import BatteryPct, Heading, Latitude, Longitude, Name, SpeedKmh
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
    vendor: Annotated[Name, Field(max_length=64)]
    ts: Timestamp
    lat: Latitude
    lon: Longitude
    speed_kmh: SpeedKmh | None = None
    heading: Heading | None = None
    fix: Fix = Fix.GPS
    acc_on: bool | None = None
    battery_pct: BatteryPct | None = None
    device_kind: DeviceKind
    alarms: tuple[Alarm, ...] = ()
    backfill: bool = False

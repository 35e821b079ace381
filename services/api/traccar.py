"""Traccar's JSON forward (position forward and event forward) → GpsPing fields. No IO here.

Traccar (https://www.traccar.org) decodes ~200 tracker protocols; with `forward.json=true` it posts
`{"position": {...}, "device": {...}}` per position, and with `event.forward.url` it posts
`{"event": {...}, "position": {...}?, "device": {...}}` per event. Field names and units follow
Traccar's `org.traccar.model.Position`: speed is in knots, course in degrees, times are ISO 8601
with an offset (Jackson), and alarms are `attributes.alarm`, comma-separated when several.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from rules.events import Alarm, DeviceKind, Fix
from rules.events.bounds import AccuracyM, AltitudeM, Name

KNOT_KMH = 1.852
DEVICE_ID_PREFIX = "traccar:"
DEFAULT_VENDOR = "traccar"
# Custom device attribute (Traccar UI: Device → Attributes) naming the tracker kind.
DEVICE_KIND_ATTRIBUTE = "deviceKind"

# Traccar alarm names (Position.ALARM_*) that mean something to a lender. Others are ignored.
ALARM_MAP: dict[str, Alarm] = {
    "powerCut": Alarm.POWER_CUT,
    "removing": Alarm.REMOVAL,
    "tampering": Alarm.TAMPER,
    # GPS/GSM jamming is how trackers are blinded before a car is moved.
    "jamming": Alarm.TAMPER,
    "lowBattery": Alarm.LOW_BATTERY,
    "lowPower": Alarm.LOW_BATTERY,
    "sos": Alarm.SOS,
    "vibration": Alarm.VIBRATION,
    "shock": Alarm.VIBRATION,
    "gpsAntennaCut": Alarm.ANTENNA_CUT,
    # Moved with the ignition off (towed, or carried away on a truck).
    "tow": Alarm.ILLEGAL_DISPLACEMENT,
    "movement": Alarm.ILLEGAL_DISPLACEMENT,
}


def _aware(value: dt.datetime) -> dt.datetime:
    # Jackson writes java.util.Date in UTC; a value without an offset can only be UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# ISO 8601 string (any offset, or none = UTC) or epoch milliseconds (WRITE_DATES_AS_TIMESTAMPS).
TraccarTime = Annotated[dt.datetime, AfterValidator(_aware)]


class _Lenient(BaseModel):
    # Traccar adds fields between versions; unknown ones are ignored, not rejected.
    model_config = ConfigDict(extra="ignore", frozen=True)


class TraccarPosition(_Lenient):
    id: int | None = None
    deviceId: int | None = None
    protocol: Annotated[Name, Field(max_length=64)] | None = None
    serverTime: TraccarTime | None = None
    deviceTime: TraccarTime | None = None
    fixTime: TraccarTime | None = None
    outdated: bool = False
    valid: bool = True
    latitude: float
    longitude: float
    altitude: AltitudeM | None = None
    speed: Annotated[float, Field(ge=0)] | None = None  # knots
    course: float | None = None
    accuracy: AccuracyM | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class TraccarDevice(_Lenient):
    id: int | None = None
    name: Name | None = None
    uniqueId: Annotated[Name, Field(max_length=100)]
    attributes: dict[str, Any] = Field(default_factory=dict)


class TraccarEvent(_Lenient):
    id: int | None = None
    type: Annotated[Name, Field(max_length=64)]
    eventTime: TraccarTime | None = None
    positionId: int | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class TraccarForward(_Lenient):
    """What Traccar posts to `forward.url` (json) and `event.forward.url`."""

    position: TraccarPosition | None = None
    device: TraccarDevice
    event: TraccarEvent | None = None


@dataclass(frozen=True)
class TraccarMapping:
    """Either `ping` (GpsPing fields, still to be validated) or `ignored` (a bounded reason)."""

    ping: dict[str, Any] | None = None
    ignored: str | None = None
    unmapped_alarms: tuple[str, ...] = field(default=())


def _alarm_names(attributes: dict[str, Any]) -> list[str]:
    raw = attributes.get("alarm")
    if not isinstance(raw, str):
        return []
    return [name.strip() for name in raw.split(",") if name.strip()]


def map_alarms(names: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """(GpsPing alarm values in first-seen order without repeats, unknown Traccar names)."""
    mapped: list[str] = []
    unknown: list[str] = []
    for name in names:
        alarm = ALARM_MAP.get(name)
        if alarm is None:
            unknown.append(name)
        elif alarm.value not in mapped:
            mapped.append(alarm.value)
    return mapped, tuple(unknown)


def _fix(position: TraccarPosition) -> str:
    if position.outdated or not position.valid:
        # Outdated: Traccar repeated the last known location; invalid: no satellite fix.
        return Fix.NONE.value
    if position.attributes.get("approximate") is True:
        return Fix.LBS.value  # located from cell towers / Wi-Fi by Traccar's geolocation
    return Fix.GPS.value


def _device_kind(device: TraccarDevice, position: TraccarPosition) -> str:
    for attributes in (device.attributes, position.attributes):
        kind = attributes.get(DEVICE_KIND_ATTRIBUTE)
        if isinstance(kind, str) and kind.lower() in (DeviceKind.WIRED, DeviceKind.WIRELESS):
            return kind.lower()
    # Lender fleets are mostly hard-wired trackers; wireless ones should be tagged in Traccar.
    return DeviceKind.WIRED.value


def _battery_pct(attributes: dict[str, Any]) -> float | None:
    level = attributes.get("batteryLevel")
    if isinstance(level, bool) or not isinstance(level, int | float):
        return None
    # Some protocols report slightly above 100 when charging; clamp rather than drop the fix.
    return min(max(float(level), 0.0), 100.0)


def map_forward(forward: TraccarForward, *, vendor: str) -> TraccarMapping:
    """Map one forwarded position or alarm event to GpsPing fields."""
    event, position, device = forward.event, forward.position, forward.device
    if event is not None and event.type != "alarm":
        # Position updates already arrive via forward.url; other event types carry no new fix.
        return TraccarMapping(ignored="not_alarm_event")
    if position is None:
        return TraccarMapping(ignored="no_position")

    ts = position.fixTime or position.deviceTime or position.serverTime
    names = _alarm_names(position.attributes)
    if event is not None:
        names = _alarm_names(event.attributes) + names
    alarms, unknown = map_alarms(names)

    if position.id:
        event_id = f"{DEVICE_ID_PREFIX}{position.id}"
    else:
        stamp = ts.isoformat() if ts is not None else "unknown"
        event_id = f"{DEVICE_ID_PREFIX}{device.uniqueId}:{stamp}"
    if event is not None:
        event_id += f":{event.type}" + (f":{event.id}" if event.id else "")

    ignition = position.attributes.get("ignition")
    ping: dict[str, Any] = {
        "event_id": event_id,
        "device_id": f"{DEVICE_ID_PREFIX}{device.uniqueId}",
        "vendor": vendor,
        "ts": ts,
        "lat": position.latitude,
        "lon": position.longitude,
        "speed_kmh": None if position.speed is None else position.speed * KNOT_KMH,
        "heading": position.course,
        "fix": _fix(position),
        "acc_on": ignition if isinstance(ignition, bool) else None,
        "battery_pct": _battery_pct(position.attributes),
        "device_kind": _device_kind(device, position),
        "alarms": alarms,
        # Traccar marks positions replayed from the device's buffer with attributes.archive.
        "backfill": position.attributes.get("archive") is True,
    }
    return TraccarMapping(ping=ping, unmapped_alarms=unknown)

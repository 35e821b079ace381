"""From a rule decision to an AlertEvent: identity, evidence, summary.

Identity (anchor: Alertmanager): the *fingerprint* is a hash of rule + loan, the same for every
episode; the *alert id* is a hash of fingerprint + the instant the episode began firing. Both
depend only on inputs, so a redelivered event or a restarted worker re-emits the same ids and
downstream writes stay idempotent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from rules.events.alert import AlertEvent, AlertStatus, Location, Severity
from rules.scoring import RiskScore
from rules.spec import Rule
from rules.state import LoanState

UTC = dt.UTC


def fingerprint(rule_id: str, loan_id: str) -> str:
    return hashlib.sha256(f"{rule_id}\x1f{loan_id}".encode()).hexdigest()[:16]


def alert_id(fingerprint_: str, started_at: float) -> str:
    micros = round(started_at * 1_000_000)
    return hashlib.sha256(f"{fingerprint_}\x1f{micros}".encode()).hexdigest()[:32]


def to_datetime(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, UTC)


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    return " ".join(p for p in parts if p) or f"{seconds}s"


def _signal_value(name: str, value: Any) -> dict[str, Any]:
    from rules.signals.catalog import SIGNALS

    kind = SIGNALS[name].type
    item: dict[str, Any] = {"kind": "state", "name": name}
    if kind == "duration":
        item["value"] = round(float(value), 3)
        item["unit"] = "s"
        item["text"] = format_duration(value)
    elif kind == "timestamp":
        item["value"] = to_datetime(value).isoformat() if value is not None else None
    else:
        item["value"] = value
    return item


def _events(state: LoanState, inputs: tuple[str, ...]) -> list[dict[str, Any]]:
    """The events behind the variables a rule read (ids as the senders gave them)."""
    wanted: list[tuple[str, str, str]] = []  # (topic, event_id, what)
    families = {name.split(".")[0] for name in inputs}
    if "payment" in families and state.payment_event:
        wanted.append(("payments", state.payment_event, "latest payment event"))
    if "contact" in families:
        if state.contact_event:
            wanted.append(("contacts", state.contact_event, "latest failed contact"))
        if state.reach_event:
            wanted.append(("contacts", state.reach_event, "last time someone was reached"))
    if any(n.startswith("vehicle.outside_home_region") for n in inputs) and state.region_event:
        wanted.append(("gps.raw", state.region_event, "home region status last changed"))
    place_inputs = ("vehicle.at_risk_place", "vehicle.risk_place", "vehicle.cars_at_place")
    if any(n.startswith(place_inputs) for n in inputs) and state.place_event:
        wanted.append(("gps.raw", state.place_event, "arrived at the risk place"))
    if "vehicle" in families and state.position_event:
        wanted.append(("gps.raw", state.position_event, "latest vehicle position"))
    if "device" in families or "devices" in families:
        for device_id, device in sorted(state.devices.items()):
            if device.alarm_event and "device.alarms" in inputs:
                wanted.append(("gps.raw", device.alarm_event, f"alarm from {device_id}"))
            if device.last_event:
                what = f"last ping of {device.kind} tracker {device_id}"
                wanted.append(("gps.raw", device.last_event, what))
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for topic, event_id, what in wanted:
        if event_id in seen:
            continue
        seen.add(event_id)
        out.append({"kind": "event", "topic": topic, "event_id": event_id, "what": what})
    if "device.alarms" in inputs:
        # When each alarm happened (a late or buffered one fires now with its own time), and
        # the alarms buffered uploads carried (history: some newer data had already cleared).
        for device_id, device in sorted(state.devices.items()):
            for alarm, raised in sorted(device.alarms.items()):
                at = to_datetime(raised).isoformat()
                out.append({"kind": "alarm", "device_id": device_id, "alarm": alarm, "at": at})
        for ts, alarm in state.alarm_history:
            at = to_datetime(ts).isoformat()
            out.append({"kind": "alarm_history", "alarm": alarm, "at": at, "buffered": True})
    if "vehicle.away_from_resident_for" in inputs or "vehicle.at_usual_place" in inputs:
        points = [p for p in state.usual if len(p) > 3]
        out.append(
            {
                "kind": "resident_points",
                "points": [
                    {"lat": p[0], "lon": p[1], "parked_s": p[2], "night_s": p[3]} for p in points
                ],
            }
        )
    return out


def build_alert(
    *,
    rule: Rule,
    state: LoanState,
    status: AlertStatus,
    severity: Severity,
    started_at: float,
    instant: float,
    event_time: dt.datetime,
    signals: Mapping[str, Any],
    score: RiskScore,
    note: str = "",
) -> AlertEvent:
    fp = fingerprint(rule.id, state.loan_id)
    values = [_signal_value(name, signals[name]) for name in rule.inputs]
    evidence: list[dict[str, Any]] = [*values, *_events(state, rule.inputs)]
    evidence.append(
        {"kind": "risk", "score": score.score, "reasons": [r.as_dict() for r in score.reasons]}
    )
    shown = ", ".join(
        f"{v['name'].split('.', 1)[1]}={v.get('text', v['value'])}" for v in values[:6]
    )
    prefix = "RESOLVED " if status is AlertStatus.RESOLVED else ""
    summary = f"{prefix}{rule.title} ({shown})" + (f" — {note}" if note else "")
    position = state.position
    location = Location(lat=position[1], lon=position[2]) if position is not None else None
    labels = {**state.labels, **rule.labels, "rule_file": rule.file.rsplit("/", 1)[-1]}
    if note:
        labels["note"] = note
    return AlertEvent(
        alert_id=alert_id(fp, started_at),
        fingerprint=fp,
        rule_id=rule.id,
        loan_id=state.loan_id,
        severity=severity,
        status=status,
        title=rule.title,
        summary=summary[:1000],
        evidence=tuple(evidence),
        risk_score=score.score,
        started_at=to_datetime(started_at),
        updated_at=to_datetime(instant),
        event_time=event_time,
        location=location,
        labels=labels,
    )

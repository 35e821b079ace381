"""Alerts and messages for notification tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rules.events import AlertEvent, AlertStatus, Location, Severity
from services.notify.model import Borrower, EventType, Message, Notice

T0 = dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.UTC)


def alert(**overrides: Any) -> AlertEvent:
    fields: dict[str, Any] = {
        "alert_id": "a1",
        "fingerprint": "f1",
        "rule_id": "missed_payment_unreachable",
        "loan_id": "L-1001",
        "severity": Severity.CRITICAL,
        "status": AlertStatus.FIRING,
        "title": "逾期且失联",
        "summary": "逾期且失联 (days_past_due=12, 借款人电话 13800138000 无法接通)",
        "evidence": ({"kind": "state", "name": "payment.days_past_due", "value": 12},),
        "risk_score": 87,
        "started_at": T0,
        "updated_at": T0,
        "event_time": T0,
        "location": Location(lat=31.2304, lon=121.4737),
        "labels": {"team": "collections", "pattern": "delinquency"},
    }
    fields.update(overrides)
    return AlertEvent(**fields)


def message(*notices: Notice, id: str = "msg_1") -> Message:
    if not notices:
        notices = (Notice(EventType.FIRING, alert(), Borrower("张三", "13800138000")),)
    return Message(id=id, created_at=T0, notices=notices)

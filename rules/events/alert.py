"""AlertEvent: what skipwatch.alerts carries for every alert state change."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from rules.events.common import Event, Identifier, Timestamp


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class AlertStatus(StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    SILENCED = "silenced"


class Location(Event):
    lat: Annotated[float, Field(ge=-90.0, le=90.0)]
    lon: Annotated[float, Field(ge=-180.0, le=180.0)]


class AlertEvent(Event):
    alert_id: Identifier
    fingerprint: Identifier
    rule_id: Identifier
    loan_id: Identifier
    severity: Severity
    status: AlertStatus
    title: str
    summary: str
    evidence: tuple[dict[str, Any], ...] = ()
    risk_score: Annotated[int, Field(ge=0, le=100)]
    started_at: Timestamp
    updated_at: Timestamp
    event_time: Timestamp
    location: Location | None = None
    labels: dict[str, str] = Field(default_factory=dict)

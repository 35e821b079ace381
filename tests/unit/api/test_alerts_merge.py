"""The view's merge rules (services/store.py): worker and operator changes, repeats, escalation."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from rules.events import AlertEvent, AlertStatus, Severity
from services.store import (
    Action,
    AlertRecord,
    merge,
    operator_event,
)

pytestmark = pytest.mark.unit

T0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)
WALL = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)


def alert(**overrides: Any) -> AlertEvent:
    values: dict[str, Any] = {
        "alert_id": "a1",
        "fingerprint": "fp1",
        "rule_id": "skip_seed",
        "loan_id": "L1",
        "severity": Severity.WARNING,
        "status": AlertStatus.FIRING,
        "title": "失联预警",
        "summary": "missed payment, phone off",
        "evidence": ({"kind": "state", "name": "payment.days_past_due", "value": 3},),
        "risk_score": 60,
        "started_at": T0,
        "updated_at": T0,
        "event_time": T0,
    }
    values.update(overrides)
    return AlertEvent(**values)


def test_first_event_creates_and_identical_repeat_is_ignored() -> None:
    record = merge(None, alert())
    assert record is not None
    assert merge(record, alert()) is None


def test_older_worker_event_is_ignored_newer_replaces() -> None:
    record = merge(None, alert(updated_at=T0 + dt.timedelta(hours=1), risk_score=70))
    assert record is not None
    assert merge(record, alert()) is None
    newer = merge(record, alert(updated_at=T0 + dt.timedelta(hours=2), risk_score=80))
    assert newer is not None and newer.base.risk_score == 80


def test_ack_survives_later_worker_updates_but_not_auto_resolve() -> None:
    record = merge(None, alert())
    assert record is not None
    acked = merge(record, operator_event(record, Action.ACK, by="operator", now=WALL))
    assert acked is not None and acked.status(WALL) is AlertStatus.ACKNOWLEDGED
    # The worker runs on event time (2024) and knows nothing of the ack (2026): both sides merge.
    updated = merge(acked, alert(updated_at=T0 + dt.timedelta(hours=1), risk_score=75))
    assert updated is not None
    assert updated.status(WALL) is AlertStatus.ACKNOWLEDGED
    assert updated.base.risk_score == 75
    cleared = merge(updated, alert(updated_at=T0 + dt.timedelta(hours=2), status="resolved"))
    assert cleared is not None and cleared.status(WALL) is AlertStatus.RESOLVED
    assert not cleared.is_open()


def test_escalation_voids_the_ack() -> None:
    record = merge(None, alert())
    assert record is not None
    acked = merge(record, operator_event(record, Action.ACK, by="operator", now=WALL))
    assert acked is not None
    escalated = merge(
        acked, alert(updated_at=T0 + dt.timedelta(hours=1), severity=Severity.CRITICAL)
    )
    assert escalated is not None
    assert escalated.status(WALL) is AlertStatus.FIRING
    in_force = escalated.ops_in_force()
    assert in_force is not None and in_force.acknowledged is None
    # A snooze of the critical alert does not bring the warning's ack back when it ends.
    until = WALL + dt.timedelta(hours=1)
    later = WALL + dt.timedelta(minutes=5)
    snoozed = merge(
        escalated, operator_event(escalated, Action.SNOOZE, by="admin", now=later, until=until)
    )
    assert snoozed is not None
    assert snoozed.status(later) is AlertStatus.SILENCED
    assert snoozed.status(until + dt.timedelta(seconds=1)) is AlertStatus.FIRING


def test_snooze_ends_by_time_and_falls_back_to_ack() -> None:
    record = merge(None, alert())
    assert record is not None
    record = merge(record, operator_event(record, Action.ACK, by="operator", now=WALL))
    assert record is not None
    until = WALL + dt.timedelta(hours=1)
    snooze = operator_event(record, Action.SNOOZE, by="operator", now=WALL, until=until)
    assert snooze.status is AlertStatus.SILENCED
    record = merge(record, snooze)
    assert record is not None
    assert record.status(WALL + dt.timedelta(minutes=30)) is AlertStatus.SILENCED
    assert record.status(until + dt.timedelta(seconds=1)) is AlertStatus.ACKNOWLEDGED
    assert record.is_open()


def test_concurrent_operator_events_merge_field_by_field_in_any_order() -> None:
    base = merge(None, alert())
    assert base is not None
    ack = operator_event(base, Action.ACK, by="operator", now=WALL)
    assign = operator_event(
        base, Action.ASSIGN, by="admin", now=WALL + dt.timedelta(seconds=1), assignee="张三组"
    )
    one = merge(merge(base, ack), assign)  # type: ignore[arg-type]
    other = merge(merge(base, assign), ack)  # type: ignore[arg-type]
    assert one is not None and other is not None
    assert one.ops == other.ops
    assert one.status(WALL) is AlertStatus.ACKNOWLEDGED
    assert one.ops is not None and one.ops.assigned is not None
    assert one.ops.assigned.assignee == "张三组"
    # Replaying either operator event again changes nothing (rebuild, redelivery).
    assert merge(one, ack) is None and merge(one, assign) is None


def test_operator_event_alone_rebuilds_a_record() -> None:
    base = merge(None, alert())
    assert base is not None
    resolve = operator_event(base, Action.RESOLVE, by="operator", now=WALL)
    record = merge(None, resolve)
    assert record is not None
    assert record.status(WALL) is AlertStatus.RESOLVED
    assert record.base.status is AlertStatus.FIRING
    assert not any(k.startswith("skipwatch/") for k in record.base.labels)


def test_record_round_trips_through_json() -> None:
    base = merge(None, alert())
    assert base is not None
    record = merge(base, operator_event(base, Action.ACK, by="operator", now=WALL))
    assert record is not None
    assert AlertRecord.loads(record.dumps()) == record

"""Which changes notify, grouping timings, and the retry schedule (pure, no clock)."""

from __future__ import annotations

import datetime as dt

import pytest

from rules.events import AlertStatus, Severity
from services.notify.dispatcher import delivery_id
from services.notify.lifecycle import Group, Seen, notice_type
from services.notify.model import EventType
from services.notify.retry import next_attempt_at
from tests.unit.notify.factories import T0, alert

pytestmark = pytest.mark.unit

F, A, R, S = (
    AlertStatus.FIRING,
    AlertStatus.ACKNOWLEDGED,
    AlertStatus.RESOLVED,
    AlertStatus.SILENCED,
)
W, C = Severity.WARNING, Severity.CRITICAL


@pytest.mark.parametrize(
    ("previous", "status", "severity", "alert_id", "expected"),
    [
        (None, F, W, "a1", EventType.FIRING),
        (Seen("a1", F, W.rank), F, W, "a1", None),  # a repeat
        (Seen("a1", F, W.rank), F, C, "a1", EventType.ESCALATED),
        (Seen("a1", F, C.rank), F, W, "a1", None),  # de-escalation: no news
        (Seen("a1", A, W.rank), F, W, "a1", None),  # ack voided: known to fire
        (Seen("a1", A, W.rank), F, C, "a1", EventType.ESCALATED),
        (Seen("a1", F, W.rank), A, W, "a1", EventType.ACKNOWLEDGED),
        (Seen("a1", F, W.rank), R, W, "a1", EventType.RESOLVED),
        (Seen("a1", R, W.rank), R, W, "a1", None),
        (Seen("a1", R, W.rank), F, W, "a2", EventType.FIRING),  # a new episode
        (Seen("a1", F, W.rank), F, W, "a2", EventType.FIRING),
        (Seen("a1", R, W.rank), F, W, "a1", EventType.FIRING),  # reopened
        (Seen("a1", F, W.rank), S, W, "a1", None),  # snoozed by an operator
        (None, R, W, "a1", EventType.RESOLVED),
    ],
)
def test_notice_type(
    previous: Seen | None,
    status: AlertStatus,
    severity: Severity,
    alert_id: str,
    expected: EventType | None,
) -> None:
    assert (
        notice_type(previous, alert(alert_id=alert_id, status=status, severity=severity))
        is expected
    )


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_group_wait_then_group_interval_then_repeat() -> None:
    group = Group(group_wait_s=30, group_interval_s=300, repeat_interval_s=3600)
    group.add(EventType.FIRING, alert(fingerprint="f1"), at(0))
    assert not group.due(at(29))
    assert group.due(at(30))
    group.add(EventType.FIRING, alert(fingerprint="f2"), at(10))  # joins the first message
    assert [a.fingerprint for _, a in group.flush(at(30))] == ["f1", "f2"]
    group.add(EventType.RESOLVED, alert(fingerprint="f1", status=R), at(40))
    assert not group.due(at(329))  # waits for the group interval after the last message
    assert group.due(at(330))
    assert [(k, a.fingerprint) for k, a in group.flush(at(330))] == [(EventType.RESOLVED, "f1")]
    assert not group.due(at(3600))
    assert group.due(at(330 + 3600))  # f2 still firing: a reminder
    assert [(k, a.fingerprint) for k, a in group.flush(at(3930))] == [(EventType.FIRING, "f2")]
    group.add(EventType.ACKNOWLEDGED, alert(fingerprint="f2", status=A), at(4000))
    group.flush(at(4230))
    assert group.empty and not group.due(at(100_000))


def test_a_late_change_after_a_long_pause_goes_out_at_once() -> None:
    group = Group(group_wait_s=30, group_interval_s=300, repeat_interval_s=3600)
    group.add(EventType.FIRING, alert(fingerprint="f1"), at(0))
    group.flush(at(30))
    group.add(EventType.ESCALATED, alert(fingerprint="f1", severity=C), at(1000))
    assert group.due(at(1000))


SVIX = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]


@pytest.mark.parametrize(("made", "wait"), [(0, 0), (1, 5), (2, 300), (7, 36000)])
def test_schedule_without_jitter(made: int, wait: float) -> None:
    assert next_attempt_at(SVIX, made, now=T0, jitter=0, draw=0.7) == T0 + dt.timedelta(
        seconds=wait
    )


def test_schedule_used_up_means_dead_letter() -> None:
    assert next_attempt_at(SVIX, 8, now=T0, jitter=0.2, draw=0.5) is None


@pytest.mark.parametrize(("draw", "wait"), [(0.0, 240.0), (0.5, 300.0), (0.999999, 360.0)])
def test_jitter_spreads_the_wait(draw: float, wait: float) -> None:
    got = next_attempt_at(SVIX, 2, now=T0, jitter=0.2, draw=draw)
    assert got is not None
    assert (got - T0).total_seconds() == pytest.approx(wait, abs=0.01)


@pytest.mark.parametrize(("retry_after", "wait"), [(120.0, 120.0), (1.0, 5.0), (10**9, 36000.0)])
def test_retry_after_is_honoured_but_capped(retry_after: float, wait: float) -> None:
    got = next_attempt_at(SVIX, 1, now=T0, jitter=0, draw=0.5, retry_after_s=retry_after)
    assert got == T0 + dt.timedelta(seconds=wait)


def test_delivery_ids_are_stable_and_distinct() -> None:
    one = [(EventType.FIRING, alert())]
    assert delivery_id("cfg:a:webhook:0", one) == delivery_id("cfg:a:webhook:0", list(one))
    assert delivery_id("cfg:a:webhook:0", one) != delivery_id("cfg:b:webhook:0", one)
    assert delivery_id("cfg:a:webhook:0", one) != delivery_id(
        "cfg:a:webhook:0", [(EventType.RESOLVED, alert(status=R))]
    )
    assert delivery_id("e", one).startswith("msg_")

"""Alarms carried by late or backfilled pings (issue 12, defect 5). They used to be ignored; now
an alarm whose condition still holds at `now` fires now with its original time in the evidence,
and one that newer data cleared goes to history only (no alert)."""

from __future__ import annotations

import pytest

from rules.events import AlertStatus, GpsPing
from tests.unit.rules.rules_factories import SECOND_PLEDGE_LOT, at, firing, ping, run, start

pytestmark = pytest.mark.unit


def late(hours: float, *alarms: str, backfill: bool = True, **kw: object) -> GpsPing:
    return ping(at(hours), alarms=alarms, backfill=backfill, **kw)  # type: ignore[arg-type]


CASES = [
    # (events in arrival order, until hours, rules expected firing, alarms active at `until`)
    pytest.param([ping(at(0)), ping(at(2)), late(1, "removal")], 2.5,
                 {"tracker-removed"}, ["removal"], id="buffered-removal-still-holding-fires"),
    pytest.param([ping(at(0)), ping(at(2)), late(1, "removal", backfill=False)], 2.5,
                 {"tracker-removed"}, ["removal"], id="reordered-live-removal-fires"),
    pytest.param([ping(at(0)), *(ping(at(h)) for h in range(26, 30)), late(1, "removal")], 30,
                 set(), [], id="removal-older-than-its-hold-is-history"),
    pytest.param([ping(at(0)), ping(at(2)), late(1, "power_cut")], 2.5,
                 set(), [], id="power-cut-cleared-by-a-newer-report-is-history"),
    pytest.param([ping(at(0)), ping(at(2), SECOND_PLEDGE_LOT), ping(at(3), SECOND_PLEDGE_LOT),
                  late(2.5, "removal", where=SECOND_PLEDGE_LOT)], 3.5,
                 {"tracker-tamper-at-risk-place"}, ["removal"],
                 id="buffered-removal-at-a-risk-place-is-critical"),
]  # fmt: skip


@pytest.mark.parametrize(("events", "until", "rules", "active"), CASES)
def test_late_alarms(
    events: list[GpsPing], until: float, rules: set[str], active: list[str]
) -> None:
    engine, state = start()
    alerts = run(engine, state, events, until=at(until))
    assert firing(alerts) & {"tracker-removed", "tracker-tamper-at-risk-place"} == rules
    assert engine.signals(state, at(until))["device.alarms"] == active


def test_a_late_alarm_fires_now_with_its_original_time_in_the_evidence() -> None:
    engine, state = start()
    alerts = run(engine, state, [ping(at(0)), ping(at(2)), late(1, "removal")], until=at(3))
    (alert,) = [a for a in alerts if a.rule_id == "tracker-removed"]
    assert alert.status is AlertStatus.FIRING
    assert alert.started_at > at(2)  # fires now (after the backfill settles), not back then
    alarm = next(e for e in alert.evidence if e["kind"] == "alarm")
    assert alarm == {
        "kind": "alarm",
        "device_id": "W1",
        "alarm": "removal",
        "at": "2024-03-01T02:00:00+00:00",
    }
    history = [e for e in alert.evidence if e["kind"] == "alarm_history"]
    assert history == [
        {
            "kind": "alarm_history",
            "alarm": "removal",
            "at": "2024-03-01T02:00:00+00:00",
            "buffered": True,
        }
    ]


def test_a_cleared_late_alarm_is_recorded_in_history_only() -> None:
    engine, state = start()
    alerts = run(engine, state, [ping(at(0)), ping(at(2)), late(1, "power_cut")], until=at(3))
    assert not firing(alerts)
    assert state.alarm_history == [[at(1).timestamp(), "power_cut"]]


@pytest.mark.parametrize("alarm", ["removal", "power_cut"])
def test_a_redelivered_late_alarm_changes_nothing(alarm: str) -> None:
    engine, state = start()
    buffered = late(1, alarm)
    run(engine, state, [ping(at(0)), ping(at(2)), buffered], until=at(3))
    before = state.to_bytes()
    # past the duplicate filter's window, then the same ping again
    run(engine, state, [*(ping(at(3 + n / 60)) for n in range(20)), buffered, buffered])
    after_fillers = state.to_bytes()
    run(engine, state, [buffered])
    assert state.to_bytes() == after_fillers
    assert before != after_fillers  # (the fillers did move the state on)

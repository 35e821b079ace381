"""Time intervals in a named zone, and routing by them (collectors' calling hours)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.notify.config import ConfigError, ConfigHolder, load_config
from services.notify.routing import describe
from services.notify.timeintervals import TimeInterval

pytestmark = pytest.mark.unit

SHANGHAI = ZoneInfo("Asia/Shanghai")
SAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "notify" / "routing.example.yaml"


def at(text: str, zone: ZoneInfo = SHANGHAI) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=zone)


@pytest.mark.parametrize(
    ("interval", "instant", "inside"),
    [
        (
            {"times": [{"start_time": "08:00", "end_time": "21:00"}], "location": "Asia/Shanghai"},
            at("2026-12-07T08:00"),
            True,
        ),
        (
            {"times": [{"start_time": "08:00", "end_time": "21:00"}], "location": "Asia/Shanghai"},
            at("2026-12-07T20:59"),
            True,
        ),
        (
            {"times": [{"start_time": "08:00", "end_time": "21:00"}], "location": "Asia/Shanghai"},
            at("2026-12-07T21:00"),
            False,
        ),
        (
            {"times": [{"start_time": "08:00", "end_time": "21:00"}], "location": "Asia/Shanghai"},
            at("2026-12-07T07:59"),
            False,
        ),
        # 01:00 UTC is 09:00 in Shanghai: the zone, not UTC, decides.
        (
            {"times": [{"start_time": "08:00", "end_time": "21:00"}], "location": "Asia/Shanghai"},
            dt.datetime(2026, 12, 7, 1, 0, tzinfo=dt.UTC),
            True,
        ),
        (
            {"times": [{"start_time": "08:00", "end_time": "21:00"}]},
            dt.datetime(2026, 12, 7, 1, 0, tzinfo=dt.UTC),
            False,
        ),
        (
            {"times": [{"start_time": "00:00", "end_time": "24:00"}]},
            dt.datetime(2026, 12, 7, 23, 59, tzinfo=dt.UTC),
            True,
        ),
        (
            {"weekdays": ["monday:friday"], "location": "Asia/Shanghai"},
            at("2026-12-07T10:00"),
            True,
        ),  # a Monday
        (
            {"weekdays": ["monday:friday"], "location": "Asia/Shanghai"},
            at("2026-12-06T10:00"),
            False,
        ),  # Sunday
        (
            {"weekdays": ["saturday", "sunday"], "location": "Asia/Shanghai"},
            at("2026-12-06T10:00"),
            True,
        ),
        ({"days_of_month": ["-1"], "location": "Asia/Shanghai"}, at("2026-02-28T10:00"), True),
        (
            {"days_of_month": ["-1"], "location": "Asia/Shanghai"},
            at("2028-02-28T10:00"),
            False,
        ),  # leap year
        ({"days_of_month": ["1:7"], "location": "Asia/Shanghai"}, at("2026-12-07T10:00"), True),
        (
            {"months": ["december"], "years": ["2026"], "location": "Asia/Shanghai"},
            at("2026-12-07T10:00"),
            True,
        ),
        ({"months": ["1:3"], "location": "Asia/Shanghai"}, at("2026-12-07T10:00"), False),
        ({"years": ["2027:2030"]}, dt.datetime(2026, 12, 7, tzinfo=dt.UTC), False),
        (
            {
                "weekdays": ["monday"],
                "times": [{"start_time": "09:00", "end_time": "10:00"}],
                "location": "Asia/Shanghai",
            },
            at("2026-12-07T09:30"),
            True,
        ),
        (
            {
                "weekdays": ["monday"],
                "times": [{"start_time": "09:00", "end_time": "10:00"}],
                "location": "Asia/Shanghai",
            },
            at("2026-12-08T09:30"),
            False,
        ),
        ({}, at("2026-12-07T09:30"), True),
    ],
)
def test_time_interval_contains(
    interval: dict[str, object], instant: dt.datetime, inside: bool
) -> None:
    assert TimeInterval.model_validate(interval).contains(instant) is inside


@pytest.mark.parametrize(
    ("labels", "instant", "expected"),
    [
        # Criticals: the collectors' group in calling hours, the on-call group outside them.
        (
            {"severity": "critical", "team": "collections", "loan": "L1"},
            at("2026-12-07T10:00"),
            [("collections-wecom", False), ("oncall-dingtalk", True)],
        ),
        (
            {"severity": "critical", "team": "collections", "loan": "L1"},
            at("2026-12-07T23:00"),
            [("collections-wecom", True), ("oncall-dingtalk", False)],
        ),
        # Recovery criticals also reach the case system, at any hour.
        (
            {"severity": "critical", "team": "recovery", "loan": "L1"},
            at("2026-12-07T23:00"),
            [("collections-wecom", True), ("oncall-dingtalk", False), ("case-system", False)],
        ),
        # Warnings: only in calling hours.
        (
            {"severity": "warning", "team": "collections", "loan": "L1"},
            at("2026-12-07T10:00"),
            [("collections-wecom", False)],
        ),
        (
            {"severity": "warning", "team": "collections", "loan": "L1"},
            at("2026-12-07T22:00"),
            [("collections-wecom", True)],
        ),
    ],
)
def test_sample_routing_by_calling_hours(
    labels: dict[str, str], instant: dt.datetime, expected: list[tuple[str, bool]]
) -> None:
    routing = load_config(SAMPLE)
    got = [
        (d["receiver"], d["muted"]) for d in describe(routing.routes_for(labels), routing, instant)
    ]
    assert got == expected


GOOD = """
route: {receiver: a}
receivers: [{name: a}, {name: b}]
"""


def test_reload_swaps_a_valid_file_and_keeps_the_old_on_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(GOOD)
    seen: list[str] = []
    holder = ConfigHolder(path, on_change=lambda r: seen.append(r.root.receiver))
    assert holder.routing.root.receiver == "a"
    path.write_text(GOOD.replace("receiver: a", "receiver: b"))
    assert holder.reload() is True
    assert holder.routing.root.receiver == "b" and seen == ["b"]
    path.write_text(GOOD.replace("receiver: a", "receiver: nobody"))
    assert holder.reload() is False
    assert holder.routing.root.receiver == "b"
    assert holder.failed_reloads == 1


def test_a_bad_file_at_start_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("route: {receiver: a, bogus: 1}\nreceivers: [{name: a}]\n")
    with pytest.raises(ConfigError, match=r"routing\.yaml: route\.bogus: Extra inputs"):
        ConfigHolder(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


async def test_watch_reloads_on_file_change_and_on_sighup(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(GOOD)
    holder = ConfigHolder(path)
    task = asyncio.create_task(holder.watch(poll_s=0.05))
    try:
        await asyncio.sleep(0.1)
        path.write_text(GOOD.replace("receiver: a", "receiver: b") + "\n")
        for _ in range(100):
            if holder.routing.root.receiver == "b":
                break
            await asyncio.sleep(0.02)
        assert holder.routing.root.receiver == "b"
        reloads = holder.reloads
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if holder.reloads > reloads:
                break
            await asyncio.sleep(0.02)
        assert holder.reloads == reloads + 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

"""Loan tracks: reading pings cheaply but exactly as validation would, and the thinning."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from rules.events import GpsPing
from services.track import MOVED_M, TrackFix, TrackThinner, parse_fix

pytestmark = pytest.mark.unit

T0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)


def ping(n: int = 0, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"p{n}", "device_id": "dev-1", "vendor": "v",
        "ts": (T0 + dt.timedelta(seconds=30 * n)).isoformat(),
        "lat": 30.0, "lon": 104.0, "device_kind": "wired", **fields,
    }  # fmt: skip


def fix(n: int = 0, **fields: Any) -> TrackFix:
    parsed = parse_fix(orjson.dumps(ping(n, **fields)))
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    "value",
    [
        ping(),
        ping(speed_kmh=42.5, heading=90, fix="lbs", acc_on=True, alarms=["power_cut"]),
        ping(device_kind="wireless", battery_pct=40, backfill=True, schema_version=1),
        # Odd but valid: integer coordinates, a +08:00 offset.
        ping(lat=30, lon=104, ts="2024-05-01T16:00:00+08:00"),
        # What pydantic's JSON mode accepts, the slow path accepts too.
        ping(lon="104"),
        ping(lat=True),
    ],
)
def test_valid_pings_read_as_the_model_reads_them(value: dict[str, Any]) -> None:
    parsed = parse_fix(orjson.dumps(value))
    assert parsed == TrackFix.from_ping(GpsPing.model_validate(value))


@pytest.mark.parametrize(
    "value",
    [
        ping(lat=91.0),
        ping(ts="2024-05-01T08:00:00"),  # naive
        ping(device_kind="magic"),
        ping(alarms=["fire"]),
        ping(speed_kmh=-1),
        ping(device_id=" dev"),
        ping(unknown_field=1),
        {k: v for k, v in ping().items() if k != "vendor"},
    ],
)
def test_invalid_pings_are_rejected(value: dict[str, Any]) -> None:
    encoded = orjson.dumps(value)
    with pytest.raises(ValueError):
        GpsPing.model_validate_json(encoded)
    assert parse_fix(encoded) is None


def test_not_json_or_tombstone_is_rejected() -> None:
    assert parse_fix(b"{nope") is None
    assert parse_fix(None) is None
    assert parse_fix(b"[1, 2]") is None


def test_member_round_trips_and_is_deterministic() -> None:
    one = fix(3, speed_kmh=12.0, alarms=["removal"])
    assert TrackFix.from_json(one.member()) == one
    assert one.member() == fix(3, speed_kmh=12.0, alarms=["removal"]).member()


def test_parked_fixes_thinned_to_one_per_interval_moving_all_kept() -> None:
    thinner = TrackThinner(parked_interval_s=900)
    # Parked for 1 h, a ping every 30 s: the first, then one every 15 min.
    parked = [fix(n, speed_kmh=0.0) for n in range(120)]
    kept = [f.event_id for f in parked if thinner.keep(f)]
    assert kept == ["p0", "p30", "p60", "p90"]
    # Driving: every fix (speed above the threshold).
    driving = [fix(n, speed_kmh=40.0, lat=30.0 + n * 1e-4) for n in range(120, 140)]
    assert all(thinner.keep(f) for f in driving)


def test_no_speed_kept_by_distance_alarms_and_fix_changes_always_kept() -> None:
    thinner = TrackThinner(parked_interval_s=900)
    assert thinner.keep(fix(0))
    assert not thinner.keep(fix(1, lat=30.0 + 0.5 * MOVED_M / 111_195))  # 50 m: parked jitter
    assert thinner.keep(fix(2, lat=30.0 + 1.5 * MOVED_M / 111_195))  # 150 m: it moved
    assert thinner.keep(fix(3, lat=30.0 + 1.5 * MOVED_M / 111_195, alarms=["power_cut"]))
    assert thinner.keep(fix(4, lat=30.0 + 1.5 * MOVED_M / 111_195, fix="lbs"))
    assert not thinner.keep(fix(5, lat=30.0 + 1.5 * MOVED_M / 111_195, fix="lbs"))


def test_devices_are_thinned_apart() -> None:
    thinner = TrackThinner(parked_interval_s=900)
    assert thinner.keep(fix(0, device_id="a"))
    assert thinner.keep(fix(1, device_id="b"))
    assert not thinner.keep(fix(2, device_id="a"))
    assert not thinner.keep(fix(3, device_id="b"))


def test_a_backfilled_series_is_thinned_within_itself() -> None:
    thinner = TrackThinner(parked_interval_s=900)
    live = [fix(n, speed_kmh=0.0) for n in range(200, 240)]  # parked, live
    assert [f.event_id for f in live if thinner.keep(f)] == ["p200", "p230"]
    # An hour parked, delivered late (older than what was kept): one per 15 min, not all.
    late = [fix(n, speed_kmh=0.0) for n in range(0, 120)]
    assert [f.event_id for f in late if thinner.keep(f)] == ["p0", "p30", "p60", "p90"]
    # Back to live: the next live fix is far from the last kept (backfilled) one in time.
    assert thinner.keep(fix(240, speed_kmh=0.0))

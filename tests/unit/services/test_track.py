"""Loan tracks: reading pings exactly as GpsPing validates them, the stored form, the thinning."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from rules.events import GpsPing
from services.track import MOVING_KMH, TrackFix, bucket_of, choose_parked, is_moving, parse_fix

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
        # Numbers are strict at every front door (rules/events/bounds.py): no strings, no bools.
        ping(lon="104"),
        ping(lat=True),
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
    assert TrackFix.from_member(one.member()) == one
    assert one.member() == fix(3, speed_kmh=12.0, alarms=["removal"]).member()


def test_moving_means_speed_alarm_or_ignition_without_speed() -> None:
    assert is_moving(fix(speed_kmh=MOVING_KMH))
    assert not is_moving(fix(speed_kmh=MOVING_KMH - 0.1))
    assert is_moving(fix(speed_kmh=0.0, alarms=["power_cut"]))
    assert is_moving(fix(acc_on=True))  # no speed reported, ignition on
    assert not is_moving(fix(speed_kmh=0.0, acc_on=True))  # a speed says it stands
    assert not is_moving(fix())


def test_buckets_are_fixed_windows_of_event_time() -> None:
    assert bucket_of(fix(0), 900) == bucket_of(fix(29), 900)  # 08:00:00 and 08:14:30
    assert bucket_of(fix(30), 900) == bucket_of(fix(0), 900) + 1  # 08:15:00


def test_the_earliest_parked_fix_of_a_bucket_wins_whatever_the_order() -> None:
    a, b, c = fix(3), fix(5), fix(7)
    assert choose_parked([b, c], []) == (b, [])
    assert choose_parked([a], [b]) == (a, [b])  # an earlier (late-arriving) one replaces it
    assert choose_parked([c], [b]) == (None, [])  # a later one changes nothing
    assert choose_parked([b], [b]) == (None, [])  # a re-read changes nothing
    assert choose_parked([a, c], [b, c]) == (a, [b, c])

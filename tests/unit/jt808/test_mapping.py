"""JT/T 808 location -> GpsPing: time zones, alarm bits per vendor, device table, rejects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rules.events import Alarm, DeviceKind, Fix
from rules.events.bounds import TimeWindow
from services.jt808 import codec
from services.jt808.mapping import (
    DeviceDirectory,
    PingRejected,
    VendorConfig,
    load_vendor_config,
    location_to_ping,
    parse_timezone,
)
from tests.unit.jt808.support import location_body

pytestmark = pytest.mark.unit

RECEIVED = datetime(2024, 5, 1, 5, 0, 0, tzinfo=UTC)


def ping(
    body: bytes,
    config: VendorConfig | None = None,
    *,
    phone: str = "13800138000",
    backfill: bool = False,
    received: datetime = RECEIVED,
):  # type: ignore[no-untyped-def]
    identity = DeviceDirectory(config or VendorConfig()).resolve(phone)
    assert identity is not None
    return location_to_ping(
        codec.parse_location(body),
        identity=identity,
        phone=phone,
        received_at=received,
        backfill=backfill,
    )


def test_default_profile_reads_time_as_gmt_plus_8() -> None:
    p = ping(location_body(time=datetime(2024, 5, 1, 12, 30, 0)))
    assert p.ts == datetime(2024, 5, 1, 4, 30, 0, tzinfo=UTC)
    assert p.ts.utcoffset() == timedelta(hours=8)
    assert (p.device_id, p.vendor, p.device_kind, p.fix) == (
        "jt808:13800138000",
        "jt808",
        DeviceKind.WIRED,
        Fix.GPS,
    )
    assert p.speed_kmh == 42.5 and p.heading == 90 and p.backfill is False


def test_vendor_time_zone_with_dst() -> None:
    config = VendorConfig.model_validate(
        {
            "profiles": {"uk": {"vendor": "acme", "timezone": "Europe/London"}},
            "default_profile": "uk",
        }
    )
    july = datetime(2024, 7, 1, 12, 0, 0, tzinfo=UTC)
    summer = ping(location_body(time=datetime(2024, 7, 1, 12, 0, 0)), config, received=july)
    winter = ping(location_body(time=datetime(2024, 1, 1, 12, 0, 0)), config)
    assert summer.ts.astimezone(UTC).hour == 11 and winter.ts.astimezone(UTC).hour == 12
    assert summer.vendor == "acme"


@pytest.mark.parametrize(
    ("name", "offset"),
    [("+08:00", 8 * 60), ("UTC", 0), ("-03:00", -180), ("UTC+10", 600), ("+0530", 330)],
)
def test_fixed_offsets(name: str, offset: int) -> None:
    assert parse_timezone(name).utcoffset(None) == timedelta(minutes=offset)


@pytest.mark.parametrize("bad", ["Mars/Olympus", "+15:00", ""])
def test_bad_time_zone_is_rejected_at_load(bad: str) -> None:
    with pytest.raises(ValueError):
        VendorConfig.model_validate({"profiles": {"x": {"timezone": bad}}})


def test_standard_alarm_bits() -> None:
    flags = 1 << 0 | 1 << 5 | 1 << 7 | 1 << 8 | 1 << 27 | 1 << 28 | 1 << 1  # overspeed unmapped
    p = ping(location_body(alarm_flags=flags))
    assert set(p.alarms) == {
        Alarm.SOS,
        Alarm.ANTENNA_CUT,
        Alarm.LOW_BATTERY,
        Alarm.POWER_CUT,
        Alarm.ILLEGAL_IGNITION,
        Alarm.ILLEGAL_DISPLACEMENT,
    }


def test_g10ls_reuses_reserved_bits_and_overrides_apply() -> None:
    config = VendorConfig.model_validate(
        {
            "profiles": {"g": {"base": "g10ls", "alarm_bits": {"26": "tamper", "0": None}}},
            "default_profile": "g",
        }
    )
    p = ping(location_body(alarm_flags=1 << 15 | 1 << 16 | 1 << 17 | 1 << 26 | 1 << 0), config)
    assert set(p.alarms) == {Alarm.LOW_BATTERY, Alarm.VIBRATION, Alarm.REMOVAL, Alarm.TAMPER}
    # The standard table does not know bits 15-17.
    assert ping(location_body(alarm_flags=1 << 16)).alarms == ()


def test_device_table_maps_phone_to_device_id_in_any_edition() -> None:
    config = VendorConfig.model_validate(
        {
            "devices": {
                "013800138000": {
                    "device_id": "veh-42",
                    "profile": "g10ls",
                    "device_kind": "wireless",
                }
            },
            "accept_unknown_devices": False,
        }
    )
    directory = DeviceDirectory(config)
    for phone in ("013800138000", "00000000013800138000"):  # 2013 BCD[6] and 2019 BCD[10]
        identity = directory.resolve(phone)
        assert identity is not None
        assert (identity.device_id, identity.device_kind) == ("veh-42", DeviceKind.WIRELESS)
    assert directory.resolve("013900000000") is None


@pytest.mark.parametrize(
    "data",
    [
        {"devices": {"1380": {"profile": "nope"}}},
        {"default_profile": "nope"},
        {"devices": {"not a phone": {}}},
        {"devices": {"0138": {}, "138": {}}},  # the same terminal twice
        {"surprise": 1},
        {"profiles": {"x": {"alarm_bits": {"32": "sos"}}}},
        {"profiles": {"x": {"alarm_bits": {"3": "not_an_alarm"}}}},
    ],
)
def test_invalid_configs_fail_at_load(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        VendorConfig.model_validate(data)


def test_load_vendor_config_yaml(tmp_path: Path) -> None:
    path = tmp_path / "vendors.yaml"
    path.write_text("default_profile: g10ls\ndevices:\n  '13800138000': {device_id: car-1}\n")
    config = load_vendor_config(path)
    assert config.default_profile == "g10ls"
    assert load_vendor_config(None) == VendorConfig()
    path.write_text("default_profile: 3\nnope: true\n")
    with pytest.raises(ValueError, match=r"vendors\.yaml"):
        load_vendor_config(path)


def test_missing_time_live_uses_arrival_but_backfill_is_rejected() -> None:
    body = location_body()[:22] + b"\x00" * 6
    assert ping(body).ts == RECEIVED
    with pytest.raises(PingRejected) as err:
        ping(body, backfill=True)
    assert err.value.reason == "no_time"


def test_impossible_coordinates_are_rejected() -> None:
    body = bytearray(location_body())
    body[8:12] = (95_000_000).to_bytes(4, "big")
    with pytest.raises(PingRejected) as err:
        ping(bytes(body))
    assert err.value.reason == "invalid"


def test_times_outside_the_window_of_arrival_are_rejected_as_bad_time() -> None:
    # Local GMT+8 clock: 13:10 there is 05:10 UTC, 10 minutes after RECEIVED (the skew is 600 s).
    assert ping(location_body(time=datetime(2024, 5, 1, 13, 9, 59))).ts < RECEIVED + timedelta(
        minutes=10
    )
    for late_clock in (datetime(2024, 5, 1, 13, 10, 1), datetime(2099, 12, 31, 23, 59, 59)):
        with pytest.raises(PingRejected) as err:
            ping(location_body(time=late_clock))
        assert err.value.reason == "bad_time"
        assert "ts: " in str(err.value)
    # A tracker whose clock reset to 2001-01-01: older than the maximum age.
    with pytest.raises(PingRejected) as err:
        ping(location_body(time=datetime(2001, 1, 1, 0, 0, 0)))
    assert err.value.reason == "bad_time"
    assert "days before the arrival time" in str(err.value)


def test_the_window_comes_from_the_caller() -> None:
    identity = DeviceDirectory(VendorConfig()).resolve("13800138000")
    assert identity is not None
    body = codec.parse_location(location_body(time=datetime(2024, 5, 1, 14, 0, 0)))  # +1 h
    wide = TimeWindow(max_future_skew_s=7200)
    p = location_to_ping(
        body,
        identity=identity,
        phone="13800138000",
        received_at=RECEIVED,
        backfill=False,
        window=wide,
    )
    assert p.ts == RECEIVED + timedelta(hours=1)


def test_absurd_speed_and_heading_are_dropped_not_fatal() -> None:
    p = ping(location_body(speed_kmh=5000.0, heading=400))
    assert p.speed_kmh is None and p.heading is None


def test_no_fix_and_acc() -> None:
    p = ping(location_body(status_flags=0x1))
    assert p.fix == Fix.NONE and p.acc_on is True


def test_event_id_is_stable_for_a_resent_point_and_differs_per_device() -> None:
    body = location_body()
    assert ping(body).event_id == ping(body, backfill=True).event_id
    assert ping(body).event_id != ping(body, phone="13900000000").event_id
    assert ping(body).event_id != ping(location_body(lat=1.0)).event_id

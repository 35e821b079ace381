"""Traccar forward → GpsPing: units, times, alarms, fix, ids; and the route end to end on a fake."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from rules.events import GpsPing
from services.api.traccar import TraccarForward, map_forward
from tests.unit.api.support import OPERATOR, VENDOR_KEY, Api, bearer

pytestmark = pytest.mark.unit


def position_forward(**position: Any) -> dict[str, Any]:
    """Shaped like Traccar 6 `PositionData` as Jackson writes it."""
    pos: dict[str, Any] = {
        "id": 81723,
        "attributes": {"batteryLevel": 76, "ignition": True, "motion": True, "sat": 9},
        "deviceId": 12,
        "protocol": "gt06",
        "serverTime": "2024-05-01T02:00:03.000+00:00",
        "deviceTime": "2024-05-01T02:00:00.000+00:00",
        "fixTime": "2024-05-01T02:00:00.000+00:00",
        "outdated": False,
        "valid": True,
        "latitude": 30.2741,
        "longitude": 120.1551,
        "altitude": 12.0,
        "speed": 10.0,
        "course": 275.0,
        "address": None,
        "accuracy": 0.0,
        "network": None,
        "geofenceIds": None,
    }
    pos.update(position)
    return {
        "position": pos,
        "device": {
            "id": 12,
            "attributes": {},
            "groupId": 0,
            "name": "浙A12345",
            "uniqueId": "868120201234567",
            "status": "online",
            "lastUpdate": "2024-05-01T02:00:03.000+00:00",
            "positionId": 81723,
            "phone": None,
            "model": None,
            "contact": None,
            "category": "car",
            "disabled": False,
        },
    }


def mapped(payload: dict[str, Any], vendor: str = "traccar") -> GpsPing:
    mapping = map_forward(TraccarForward.model_validate(payload), vendor=vendor)
    assert mapping.ping is not None, mapping.ignored
    return GpsPing.model_validate(mapping.ping)


def test_position_maps_to_a_ping() -> None:
    ping = mapped(position_forward())
    assert ping.event_id == "traccar:81723"
    assert ping.device_id == "traccar:868120201234567"
    assert ping.vendor == "traccar"
    assert ping.ts == dt.datetime(2024, 5, 1, 2, 0, tzinfo=dt.UTC)
    assert (ping.lat, ping.lon) == (30.2741, 120.1551)
    assert ping.speed_kmh == pytest.approx(18.52)  # 10 knots
    assert ping.heading == 275.0
    assert ping.fix == "gps"
    assert ping.acc_on is True
    assert ping.battery_pct == 76.0
    assert ping.device_kind == "wired"
    assert ping.alarms == ()
    assert ping.backfill is False


@pytest.mark.parametrize(
    ("fix_time", "expected"),
    [
        ("2024-05-01T10:00:00.000+08:00", dt.datetime(2024, 5, 1, 2, 0, tzinfo=dt.UTC)),
        ("2024-05-01T02:00:00Z", dt.datetime(2024, 5, 1, 2, 0, tzinfo=dt.UTC)),
        # Jackson writes UTC; a naive value can only mean UTC.
        ("2024-05-01T02:00:00.000", dt.datetime(2024, 5, 1, 2, 0, tzinfo=dt.UTC)),
        # WRITE_DATES_AS_TIMESTAMPS=true: epoch milliseconds.
        (1714528800000, dt.datetime(2024, 5, 1, 2, 0, tzinfo=dt.UTC)),
    ],
)
def test_times_with_any_offset_become_aware(fix_time: Any, expected: dt.datetime) -> None:
    ping = mapped(position_forward(fixTime=fix_time))
    assert ping.ts == expected
    assert ping.ts.utcoffset() is not None


def test_fix_time_missing_falls_back_to_device_time() -> None:
    ping = mapped(position_forward(fixTime=None, deviceTime="2024-05-01T03:00:00.000+00:00"))
    assert ping.ts == dt.datetime(2024, 5, 1, 3, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("changes", "fix"),
    [
        ({"valid": False}, "none"),
        ({"outdated": True}, "none"),
        ({"attributes": {"approximate": True}}, "lbs"),
    ],
)
def test_fix_quality(changes: dict[str, Any], fix: str) -> None:
    assert mapped(position_forward(**changes)).fix == fix


@pytest.mark.parametrize(
    ("alarm", "expected"),
    [
        ("powerCut", ("power_cut",)),
        ("removing", ("removal",)),
        ("tampering", ("tamper",)),
        ("lowBattery", ("low_battery",)),
        ("lowPower", ("low_battery",)),
        ("sos", ("sos",)),
        ("vibration", ("vibration",)),
        ("gpsAntennaCut", ("antenna_cut",)),
        ("tow", ("illegal_displacement",)),
        ("powerCut,removing", ("power_cut", "removal")),
        ("lowBattery, lowPower,overspeed", ("low_battery",)),
        ("overspeed", ()),
    ],
)
def test_alarms(alarm: str, expected: tuple[str, ...]) -> None:
    payload = position_forward(attributes={"alarm": alarm})
    assert tuple(a.value for a in mapped(payload).alarms) == expected


def test_unknown_alarms_are_reported_not_fatal() -> None:
    payload = position_forward(attributes={"alarm": "geofenceExit,powerCut"})
    mapping = map_forward(TraccarForward.model_validate(payload), vendor="traccar")
    assert mapping.unmapped_alarms == ("geofenceExit",)


def test_battery_clamped_archive_is_backfill_and_kind_from_device_attribute() -> None:
    payload = position_forward(attributes={"batteryLevel": 104, "archive": True})
    payload["device"]["attributes"] = {"deviceKind": "wireless"}
    ping = mapped(payload)
    assert ping.battery_pct == 100.0
    assert ping.backfill is True
    assert ping.device_kind == "wireless"
    assert ping.acc_on is None


def test_alarm_event_adds_its_alarm_and_a_distinct_event_id() -> None:
    payload = position_forward()
    payload["event"] = {
        "id": 551,
        "attributes": {"alarm": "removing"},
        "deviceId": 12,
        "type": "alarm",
        "eventTime": "2024-05-01T02:00:00.000+00:00",
        "positionId": 81723,
        "geofenceId": 0,
        "maintenanceId": 0,
    }
    ping = mapped(payload)
    assert ping.alarms == ("removal",)
    assert ping.event_id == "traccar:81723:alarm:551"


@pytest.mark.parametrize(
    ("event_type", "with_position", "reason"),
    [("deviceOnline", True, "not_alarm_event"), ("alarm", False, "no_position")],
)
def test_events_without_a_ping_are_ignored(
    event_type: str, with_position: bool, reason: str
) -> None:
    payload = position_forward()
    payload["event"] = {"id": 9, "type": event_type, "deviceId": 12, "attributes": {}}
    if not with_position:
        del payload["position"]
    mapping = map_forward(TraccarForward.model_validate(payload), vendor="traccar")
    assert mapping.ping is None
    assert mapping.ignored == reason


class TestRoute:
    async def test_vendor_key_forward_is_written_under_the_vendor(self, api: Api) -> None:
        response = await api.client.post(
            "/v1/ingest/traccar", json=position_forward(), headers={"X-Api-Key": VENDOR_KEY}
        )
        assert response.status_code == 200
        assert response.json()["accepted"] == 1
        (record,) = api.producer.on("gps.raw")
        assert record.key == b"traccar:868120201234567"
        written = GpsPing.model_validate_json(record.value)
        assert written.vendor == "vendor-a"
        assert written.speed_kmh == pytest.approx(18.52)

    async def test_traccar_retries_are_duplicates(self, api: Api) -> None:
        for _ in range(2):
            response = await api.client.post(
                "/v1/ingest/traccar", json=position_forward(), headers=bearer(OPERATOR)
            )
        assert response.json()["duplicates"] == 1
        assert len(api.producer.on("gps.raw")) == 1

    async def test_ignored_events_are_answered_200(self, api: Api) -> None:
        payload = position_forward()
        payload["event"] = {"id": 9, "type": "ignitionOn", "deviceId": 12}
        response = await api.client.post(
            "/v1/ingest/traccar", json=payload, headers=bearer(OPERATOR)
        )
        assert response.status_code == 200
        assert response.json() == {"accepted": 0, "duplicates": 0, "rejected": [], "ignored": 1}
        assert api.producer.sent == []

    async def test_unusable_forward_is_rejected_with_the_original_dead_lettered(
        self, api: Api
    ) -> None:
        payload = position_forward()
        del payload["position"]["latitude"]
        response = await api.client.post(
            "/v1/ingest/traccar", json=payload, headers=bearer(OPERATOR)
        )
        assert response.status_code == 200
        (reject,) = response.json()["rejected"]
        assert reject["errors"][0]["field"] == "position.latitude"
        (dead,) = api.producer.on("deadletter")
        assert orjson.loads(dead.value) == payload

    async def test_mapped_value_out_of_range_dead_letters_what_traccar_sent(self, api: Api) -> None:
        payload = position_forward(latitude=123.0)
        response = await api.client.post(
            "/v1/ingest/traccar", json=payload, headers=bearer(OPERATOR)
        )
        (reject,) = response.json()["rejected"]
        assert reject["event_id"] == "traccar:81723"
        assert reject["errors"][0]["field"] == "lat"
        (dead,) = api.producer.on("deadletter")
        assert orjson.loads(dead.value) == payload
        assert dead.key == b"traccar:868120201234567"

"""Every validation rule of the DESIGN §4 event models, table-driven; serialisation round-trips."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from rules.events import (
    ContactAttempt,
    GpsPing,
    Loan,
    PaymentEvent,
    decode_event,
    describe_validation_error,
    read_recording,
    recording_line,
)
from rules.events.recording import RecordingError

pytestmark = pytest.mark.unit

PING: dict[str, Any] = {
    "event_id": "p-1",
    "device_id": "dev-1",
    "vendor": "acme",
    "ts": "2026-03-01T08:00:00+08:00",
    "lat": 30.66,
    "lon": 104.06,
    "speed_kmh": 42.5,
    "heading": 90,
    "fix": "gps",
    "acc_on": True,
    "battery_pct": 80,
    "device_kind": "wired",
    "alarms": ["power_cut"],
    "backfill": False,
}
PAYMENT: dict[str, Any] = {
    "event_id": "pay-1",
    "loan_id": "L1",
    "ts": "2026-03-01T00:00:00Z",
    "type": "payment_received",
    "installment_no": 1,
    "amount": 3200.5,
    "currency": "CNY",
    "due_date": "2026-03-01",
}
CONTACT: dict[str, Any] = {
    "event_id": "c-1",
    "loan_id": "L1",
    "ts": "2026-03-02T10:00:00+08:00",
    "party": "borrower",
    "channel": "call",
    "outcome": "powered_off",
}
LOAN: dict[str, Any] = {
    "loan_id": "L1",
    "status": "active",
    "borrower": {"name": "张三", "phone": "+8613800138000"},
    "vehicle": {"vin": "LSVAU2180N2123456", "plate": "川A12345"},
    "devices": [
        {"device_id": "dev-1", "kind": "wired"},
        {"device_id": "dev-2", "kind": "wireless"},
    ],
    "home_region": {"center": [30.66, 104.06], "radius_km": 50},
    "schedule": [{"installment_no": 1, "due_date": "2026-03-01", "amount": 3200}],
}
SQUARE = [[104.0, 30.0], [105.0, 30.0], [105.0, 31.0], [104.0, 31.0], [104.0, 30.0]]

MODELS = {"ping": (GpsPing, PING), "payment": (PaymentEvent, PAYMENT),
          "contact": (ContactAttempt, CONTACT), "loan": (Loan, LOAN)}  # fmt: skip


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def without(base: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k != key}


@pytest.mark.parametrize("name", list(MODELS))
def test_valid_examples_accepted(name: str) -> None:
    model, data = MODELS[name]
    model.model_validate(data)


INVALID: list[tuple[str, type, dict[str, Any], str]] = [
    # (case, model, data, field named in the error)
    ("naive ping ts", GpsPing, with_(PING, ts="2026-03-01T08:00:00"), "ts"),
    ("lat above 90", GpsPing, with_(PING, lat=90.0001), "lat"),
    ("lat below -90", GpsPing, with_(PING, lat=-91), "lat"),
    ("lon above 180", GpsPing, with_(PING, lon=180.5), "lon"),
    ("lon below -180", GpsPing, with_(PING, lon=-181), "lon"),
    ("lat NaN", GpsPing, with_(PING, lat=float("nan")), "lat"),
    ("negative speed", GpsPing, with_(PING, speed_kmh=-1), "speed_kmh"),
    ("heading 361", GpsPing, with_(PING, heading=361), "heading"),
    ("battery 101", GpsPing, with_(PING, battery_pct=101), "battery_pct"),
    ("unknown fix", GpsPing, with_(PING, fix="glonass"), "fix"),
    ("unknown device kind", GpsPing, with_(PING, device_kind="obd"), "device_kind"),
    ("unknown alarm", GpsPing, with_(PING, alarms=["fire"]), "alarms.0"),
    ("extra field", GpsPing, with_(PING, colour="red"), "colour"),
    ("missing device_id", GpsPing, without(PING, "device_id"), "device_id"),
    ("empty event_id", GpsPing, with_(PING, event_id=""), "event_id"),
    ("padded event_id", GpsPing, with_(PING, event_id=" p-1"), "event_id"),
    ("lat as text", GpsPing, with_(PING, lat="north"), "lat"),
    ("naive payment ts", PaymentEvent, with_(PAYMENT, ts="2026-03-01 00:00:00"), "ts"),
    ("unknown payment type", PaymentEvent, with_(PAYMENT, type="refund"), "type"),
    ("installment 0", PaymentEvent, with_(PAYMENT, installment_no=0), "installment_no"),
    ("negative amount", PaymentEvent, with_(PAYMENT, amount=-5), "amount"),
    ("bad currency", PaymentEvent, with_(PAYMENT, currency="yuan"), "currency"),
    ("bad due_date", PaymentEvent, with_(PAYMENT, due_date="2026-02-30"), "due_date"),
    ("extra payment field", PaymentEvent, with_(PAYMENT, note="x"), "note"),
    ("naive contact ts", ContactAttempt, with_(CONTACT, ts="2026-03-02T10:00:00"), "ts"),
    ("unknown party", ContactAttempt, with_(CONTACT, party="neighbour"), "party"),
    ("unknown channel", ContactAttempt, with_(CONTACT, channel="fax"), "channel"),
    ("unknown outcome", ContactAttempt, with_(CONTACT, outcome="maybe"), "outcome"),
    ("missing loan_id", ContactAttempt, without(CONTACT, "loan_id"), "loan_id"),
    ("unknown status", Loan, with_(LOAN, status="frozen"), "status"),
    ("bad phone", Loan, with_(LOAN, borrower={"name": "x", "phone": "call me"}), "borrower.phone"),
    ("bad vin", Loan, with_(LOAN, vehicle={"vin": "SHORT", "plate": "A1"}), "vehicle.vin"),
    ("vin with I", Loan, with_(LOAN, vehicle={"vin": "LSVAU2180N212345I", "plate": "A"}), "vehicle.vin"),
    ("unknown device kind in loan", Loan,
     with_(LOAN, devices=[{"device_id": "d", "kind": "obd"}]), "devices.0.kind"),
    ("duplicate device", Loan,
     with_(LOAN, devices=[{"device_id": "d", "kind": "wired"}, {"device_id": "d", "kind": "wireless"}]),
     "devices"),
    ("duplicate installment", Loan,
     with_(LOAN, schedule=[{"installment_no": 1, "due_date": "2026-03-01", "amount": 1},
                           {"installment_no": 1, "due_date": "2026-04-01", "amount": 1}]), "schedule"),
    ("radius zero", Loan, with_(LOAN, home_region={"center": [30, 104], "radius_km": 0}),
     "home_region"),
    ("centre lat out of range", Loan,
     with_(LOAN, home_region={"center": [95, 104], "radius_km": 5}), "home_region"),
    ("open polygon ring", Loan,
     with_(LOAN, home_region={"type": "Polygon", "coordinates": [[*SQUARE[:-1], [104.5, 30.5]]]}),
     "home_region"),
    ("polygon too few points", Loan,
     with_(LOAN, home_region={"type": "Polygon", "coordinates": [SQUARE[:3]]}), "home_region"),
    ("polygon lon out of range", Loan,
     with_(LOAN, home_region={"type": "Polygon",
                              "coordinates": [[[200, 30], [105, 30], [105, 31], [200, 30]]]}),
     "home_region"),
    ("unknown geometry", Loan,
     with_(LOAN, home_region={"type": "LineString", "coordinates": SQUARE}), "home_region"),
    ("unknown time zone", Loan, with_(LOAN, timezone="Mars/Olympus"), "timezone"),
    ("extra borrower field", Loan,
     with_(LOAN, borrower={"name": "x", "phone": "13800138000", "id_card": "1"}), "borrower.id_card"),
    ("schema version from the future", GpsPing, with_(PING, schema_version=99), "schema_version"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "model", "data", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_rejected_naming_the_field(
    case: str, model: type, data: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    message = describe_validation_error(info.value)
    assert message.startswith(field) or f"; {field}" in message or f"{field}." in message, message


def test_timestamps_keep_their_offset() -> None:
    ping = GpsPing.model_validate(PING)
    assert ping.ts.utcoffset() == dt.timedelta(hours=8)
    assert ping.ts == dt.datetime(2026, 3, 1, 0, 0, tzinfo=dt.UTC)


def test_events_are_frozen() -> None:
    ping = GpsPing.model_validate(PING)
    with pytest.raises(ValidationError):
        ping.lat = 1.0  # type: ignore[misc]


def test_polygon_and_multipolygon_regions_accepted() -> None:
    Loan.model_validate(with_(LOAN, home_region={"type": "Polygon", "coordinates": [SQUARE]}))
    Loan.model_validate(
        with_(LOAN, home_region={"type": "MultiPolygon", "coordinates": [[SQUARE], [SQUARE]]})
    )


def test_schedule_is_ordered_by_installment() -> None:
    loan = Loan.model_validate(
        with_(LOAN, schedule=[{"installment_no": 2, "due_date": "2026-04-01", "amount": 1},
                              {"installment_no": 1, "due_date": "2026-03-01", "amount": 1}])
    )  # fmt: skip
    assert [i.installment_no for i in loan.schedule] == [1, 2]


@pytest.mark.parametrize("name", list(MODELS))
def test_json_round_trip(name: str) -> None:
    model, data = MODELS[name]
    event = model.model_validate(data)
    again = model.model_validate_json(event.model_dump_json())
    assert again == event


@pytest.mark.parametrize(
    ("topic", "data"),
    [("gps.raw", PING), ("payments", PAYMENT), ("contacts", CONTACT), ("loans", LOAN)],
)
def test_recording_line_round_trip(topic: str, data: dict[str, Any]) -> None:
    event = decode_event(topic, MODELS_BY_TOPIC[topic].model_validate(data).model_dump_json())
    [(read_topic, read_event)] = list(read_recording([recording_line(event)]))
    assert (read_topic, read_event) == (topic, event)


MODELS_BY_TOPIC = {
    "gps.raw": GpsPing,
    "payments": PaymentEvent,
    "contacts": ContactAttempt,
    "loans": Loan,
}


def test_recording_error_names_the_line() -> None:
    good = recording_line(GpsPing.model_validate(PING))
    bad = '{"topic": "gps.raw", "value": {"event_id": "x"}}'
    with pytest.raises(RecordingError, match=r"^line 3: .*device_id"):
        list(read_recording([good, "", bad]))


def test_unknown_recording_topic_rejected() -> None:
    with pytest.raises(RecordingError, match="line 1: topic"):
        list(read_recording(['{"topic": "alerts", "value": {}}']))


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        pytest.param('{"topic": ["gps.raw"], "value": {}}', "topic", id="topic-not-a-string"),
        pytest.param('{"topic": "gps.raw", "value": [1]}', "value", id="value-not-an-object"),
        pytest.param('{"topic": "gps.raw", "value": {}, "x": 1}', "x", id="extra-key"),
        pytest.param('{"topic": "gps.raw"}', "value", id="no-value"),
        pytest.param('{"topic": "gps.raw", "value": {', "JSON", id="bad-json"),
        pytest.param("[1, 2]", "", id="not-an-object"),
    ],
)
def test_a_malformed_recording_line_is_named(line: str, problem: str) -> None:
    """Lines off the fast (orjson) path get the validating path's error, naming the line."""
    with pytest.raises(RecordingError, match=f"^line 1: .*{problem}"):
        list(read_recording([line]))


def _compact_ping_line(value: bytes, tail: bytes = b"}\n") -> bytes:
    """A ping line as the simulator writes it (no spaces): the straight-from-JSON path."""
    return b'{"topic":"gps.raw","value":' + value + tail


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({}, id="as-sent"),
        pytest.param({"lat": 30, "battery_pct": 100, "heading": None}, id="integers-and-null"),
        pytest.param({"acc_on": "true", "backfill": 1, "schema_version": 1.0}, id="lax-bool-int"),
        pytest.param({"ts": "2026-03-01T00:00:00Z", "alarms": []}, id="utc"),
    ],
)
def test_a_compact_ping_line_decodes_as_the_dict_path_does(change: dict[str, Any]) -> None:
    data = {**PING, **change}
    value = orjson.dumps(data)
    expected = GpsPing.model_validate(orjson.loads(value))
    for tail in (b"}", b"}\n", b"} \r\n"):
        [(topic, event)] = list(read_recording([_compact_ping_line(value, tail)]))
        assert topic == "gps.raw"
        assert event == expected
        assert repr(event) == repr(expected)  # (the time zone object too)
        assert event.model_fields_set == expected.model_fields_set


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        pytest.param(
            _compact_ping_line(orjson.dumps({**PING, "lat": "30.6"})), "lat", id="bad-value"
        ),
        pytest.param(
            _compact_ping_line(orjson.dumps(PING), b',"x":{}}'), "x", id="a-key-after-the-value"
        ),
        pytest.param(
            _compact_ping_line(orjson.dumps(PING), b"}\x0c"), "JSON", id="not-json-whitespace"
        ),
        pytest.param(_compact_ping_line(b"[1]"), "value", id="value-not-an-object"),
        pytest.param(_compact_ping_line(b'{"lat": NaN}'), "", id="nan"),
    ],
)
def test_a_bad_compact_ping_line_gets_the_validating_paths_error(line: bytes, problem: str) -> None:
    """A line that looks like a compact ping but is not a good one raises what the orjson /
    validating path raises for it."""
    with pytest.raises(RecordingError, match=f"^line 1: .*{problem}") as fast:
        list(read_recording([line]))
    with pytest.raises(RecordingError) as slow:  # the same line as text: off the compact path
        list(read_recording([line.decode()]))
    assert str(fast.value) == str(slow.value)

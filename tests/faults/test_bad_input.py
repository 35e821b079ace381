"""Bad-input corpus per front door, against the real broker and Redis: every case is rejected
with a clear reason (4xx, per-item reject or dead letter naming the field), never a 5xx, and no
process restarts. Each test prints its figures (cases, outcomes by status and reason).

Front doors: HTTP ingest (gps, payments, contacts, loans), the Traccar forward, the JT/T 808
gateway (in process, Kafka sink), and raw Kafka records read by a worker process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from services.api import create_app
from services.jt808 import codec
from services.jt808.gateway import GatewayMetrics, GatewayOptions, Jt808Gateway, auth_code_for
from services.jt808.sink import KafkaPingSink
from services.kafka import ensure_topics
from tests.integration.conftest import Stack
from tests.integration.test_ingest_kafka import OPERATOR, VENDOR_KEY, settings_for
from tests.unit.jt808.support import PHONE, FakeTransport, frame, general_response, location_body

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PARTITIONS = 3
MAX_BODY = 256 * 1024
MAX_ITEMS = 200
VENDOR = {"X-Api-Key": VENDOR_KEY}
OP = {"Authorization": f"Bearer {OPERATOR}"}
JSON = {"Content-Type": "application/json"}
NOW = dt.datetime.now(dt.UTC)


def iso(delta: dt.timedelta = dt.timedelta()) -> str:
    return (NOW + delta).isoformat()


def nested(levels: int) -> bytes:
    return b"[" * levels + b"1" + b"]" * levels


@dataclass
class Front:
    client: httpx.AsyncClient
    bootstrap: str
    prefix: str

    async def count(self, topic: str) -> int:
        consumer = AIOKafkaConsumer(
            self.prefix + topic,
            bootstrap_servers=self.bootstrap,
            group_id=f"faults-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            partitions = consumer.assignment() or set()
            for _ in range(20):
                partitions = consumer.assignment()
                if partitions:
                    break
                await asyncio.sleep(0.1)
            ends = await consumer.end_offsets(list(partitions))
            return int(sum(ends.values()))
        finally:
            await consumer.stop()


@pytest.fixture
async def front(
    kafka_bootstrap: str, topic_prefix: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[Front]:
    await ensure_topics(kafka_bootstrap, topic_prefix, PARTITIONS)
    base = settings_for(kafka_bootstrap, topic_prefix, redis_url, redis_prefix)
    settings = base.model_copy(
        update={
            "api": base.api.model_copy(
                # Ingest only: the corpus needs no alert view.
                update={
                    "max_body_bytes": MAX_BODY,
                    "max_batch_items": MAX_ITEMS,
                    "projector_enabled": False,
                }
            )
        }
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Front(client, kafka_bootstrap, topic_prefix)


def ping(n: int, **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": f"f-ping-{n}",
        "device_id": "dev-f",
        "vendor": "vendor-a",
        "ts": iso(),
        "lat": 30.25,
        "lon": 120.16,
        "device_kind": "wired",
        **overrides,
    }


def payment(n: int, **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": f"f-pay-{n}",
        "loan_id": "L-f",
        "ts": iso(),
        "type": "payment_received",
        "installment_no": 1,
        "amount": 3500.0,
        **overrides,
    }


def contact(n: int, **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": f"f-c-{n}",
        "loan_id": "L-f",
        "ts": iso(),
        "party": "borrower",
        "channel": "call",
        "outcome": "no_answer",
        **overrides,
    }


# Bodies that are not JSON, whatever the route.
MALFORMED: dict[str, bytes] = {
    "garbage": b"{not json",
    "empty": b"",
    "truncated": b'[{"event_id": "x"',
    "not utf-8": b"\xff\xfe[]",
    "overlong utf-8": b'["\xc0\xaf"]',
    "lone surrogate": b'["\\ud800"]',
    "NaN": b"[NaN]",
    "infinity by exponent": b"[1e999]",
    "byte order mark": b"\xef\xbb\xbf[]",
    "nesting beyond the parser": nested(1100),
}

ROUTES = [
    ("POST", "/v1/ingest/gps", VENDOR),
    ("POST", "/v1/ingest/payments", OP),
    ("POST", "/v1/ingest/contacts", OP),
    ("POST", "/v1/ingest/traccar", VENDOR),
    ("PUT", "/v1/loans/L-f", OP),
]


async def test_malformed_json_on_every_ingest_route(front: Front) -> None:
    outcomes: Counter[tuple[int, str | None]] = Counter()
    for method, path, headers in ROUTES:
        for name, body in MALFORMED.items():
            response = await front.client.request(
                method, path, content=body, headers={**headers, **JSON}
            )
            error = response.json()
            outcomes[response.status_code, error.get("field")] += 1
            assert response.status_code == 422, (path, name, response.text)
            assert error["error"] == "invalid_request" and error["field"] == "body", (path, name)
            assert error["message"].startswith("body is not valid JSON"), (path, name)
    print(f"malformed JSON: {sum(outcomes.values())} cases, outcomes {dict(outcomes)}")
    assert await front.count("gps.raw") == 0


# Items of a batch, each with the field its reject must name.
BAD_ITEMS: dict[str, list[tuple[str, Any, str]]] = {
    "/v1/ingest/gps": [
        ("a string for an item", "ping", "(item)"),
        ("null for an item", None, "(item)"),
        ("lat as text", ping(1, lat="north"), "lat"),
        ("lat 2**64", ping(2, lat=2**64), "lat"),
        ("lon out of range", ping(3, lon=-181), "lon"),
        ("speed 1e308", ping(4, speed_kmh=1e308), "speed_kmh"),
        ("battery 101", ping(5, battery_pct=101), "battery_pct"),
        ("event_id of 10,000 chars", ping(6, event_id="x" * 10_000), "event_id"),
        ("NUL in device_id", ping(7, device_id="dev\x00f"), "device_id"),
        ("ESC in vendor", ping(8, vendor="vendor-a\x1b[2J"), "vendor"),
        ("25 h ahead", ping(9, ts=iso(dt.timedelta(hours=25))), "ts"),
        ("year 9999 at -14:00", ping(10, ts="9999-12-31T23:59:59-14:00"), "ts"),
        ("1970", ping(11, ts="1970-01-01T00:00:00Z"), "ts"),
        ("year 1", ping(12, ts="0001-01-01T00:00:00Z"), "ts"),
        ("naive time", ping(13, ts="2026-12-01T00:00:00"), "ts"),
        ("30 February", ping(14, ts="2026-02-30T00:00:00Z"), "ts"),
        ("unknown field", ping(15, extra=1), "extra"),
        ("nested 40 deep", ping(16, alarms=orjson.loads(nested(40))), "alarms"),
        ("nested 300 deep", ping(17, alarms=orjson.loads(nested(300))), "alarms"),
    ],
    "/v1/ingest/payments": [
        ("amount 1e308", payment(1, amount=1e308), "amount"),
        ("amount 0", payment(2, amount=0), "amount"),
        ("amount -5", payment(3, amount=-5), "amount"),
        ("amount as text", payment(4, amount="100"), "amount"),
        ("instalment 0", payment(5, installment_no=0), "installment_no"),
        ("instalment 1.5", payment(6, installment_no=1.5), "installment_no"),
        ("currency lowercase", payment(7, currency="cny"), "currency"),
        ("10 days ahead", payment(8, ts=iso(dt.timedelta(days=10))), "ts"),
        ("6 years old", payment(9, ts=iso(dt.timedelta(days=-6 * 365))), "ts"),
    ],
    "/v1/ingest/contacts": [
        ("year 9999", contact(1, ts="9999-12-31T23:59:59-14:00"), "ts"),
        ("25 h ahead", contact(2, ts=iso(dt.timedelta(hours=25))), "ts"),
        ("unknown outcome", contact(3, outcome="ghosted"), "outcome"),
        ("loan_id with a newline", contact(4, loan_id="L-f\n"), "loan_id"),
        ("empty event_id", contact(5, event_id=""), "event_id"),
        ("ts as epoch number", contact(6, ts=1.7e9), "ts"),
    ],
}
GOOD = {"/v1/ingest/gps": ping, "/v1/ingest/payments": payment, "/v1/ingest/contacts": contact}


@pytest.mark.parametrize("path", list(BAD_ITEMS))
async def test_bad_items_are_rejected_naming_the_field_and_the_rest_is_written(
    front: Front, path: str
) -> None:
    cases = BAD_ITEMS[path]
    headers = VENDOR if path.endswith("gps") else OP
    good = [GOOD[path](1000), GOOD[path](1001)]
    items = [item for _, item, _ in cases] + good
    response = await front.client.post(path, json=items, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    rejected = {r["index"]: r for r in body["rejected"]}
    reasons = Counter(r["reason"] for r in body["rejected"])
    for index, (name, _, field) in enumerate(cases):
        assert index in rejected, f"{name}: accepted"
        fields = [e["field"] for e in rejected[index]["errors"]]
        assert any(f == field or f.startswith(field + ".") for f in fields), (name, fields)
        assert all(e["message"] for e in rejected[index]["errors"]), name
    assert body["accepted"] == 2
    topic = {"gps": "gps.raw", "payments": "payments", "contacts": "contacts"}[
        path.rsplit("/", 1)[1]
    ]
    written, dead = await front.count(topic), await front.count("deadletter")
    print(
        f"{path}: {len(cases)} bad items rejected {len(rejected)}, reasons {dict(reasons)}; "
        f"good items written {written} of 2; dead letters {dead}"
    )
    assert (written, dead) == (2, len(cases))


async def test_limits_and_duplicates(front: Front) -> None:
    huge = orjson.dumps([ping(1, vendor="v" * 60, event_id=f"h-{n}") for n in range(3000)])
    assert len(huge) > MAX_BODY
    too_large = await front.client.post("/v1/ingest/gps", content=huge, headers={**VENDOR, **JSON})
    too_many = await front.client.post(
        "/v1/ingest/gps", json=[ping(n) for n in range(MAX_ITEMS + 1)], headers=VENDOR
    )
    statuses = (too_large.status_code, too_many.status_code)
    assert statuses == (413, 413)
    assert too_large.json()["field"] == too_many.json()["field"] == "body"
    same = [contact(1), contact(1)]
    first = (await front.client.post("/v1/ingest/contacts", json=same, headers=OP)).json()
    again = (await front.client.post("/v1/ingest/contacts", json=same, headers=OP)).json()
    print(
        f"limits: body {len(huge)} B → {too_large.status_code}, {MAX_ITEMS + 1} items → "
        f"{too_many.status_code}; duplicate ids: first request accepted {first['accepted']} "
        f"duplicates {first['duplicates']}, resend accepted {again['accepted']} "
        f"duplicates {again['duplicates']}"
    )
    assert (first["accepted"], first["duplicates"]) == (1, 1)
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    assert await front.count("contacts") == 1


def loan(**overrides: Any) -> dict[str, Any]:
    return {
        "borrower": {"name": "张三", "phone": "+8613800000001"},
        "vehicle": {"vin": "LSVAB12C3DE456701", "plate": "川A12341"},
        **overrides,
    }


async def test_loans_and_traccar_forwards(front: Front) -> None:
    loans: list[tuple[str, bytes, str]] = [
        ("schedule amount 1e308", orjson.dumps(loan(schedule=[
            {"installment_no": 1, "due_date": "2026-01-05", "amount": 1e308}])),
         "schedule.0.amount"),
        ("region nested 300 deep", orjson.dumps(loan())[:-1] + b',"home_region":'
         + nested(300) + b"}", "home_region"),
        ("region of unknown type", orjson.dumps(loan(home_region={"type": "Triangle"})),
         "home_region"),
        ("open ring", orjson.dumps(loan(home_region={"type": "Polygon", "coordinates": [
            [[0, 0], [1, 0], [1, 1], [0, 2]]]})), "home_region"),
        ("name with NUL", orjson.dumps(loan(borrower={"name": "张\x00三",
                                                      "phone": "+8613800000001"})),
         "borrower.name"),
        ("unknown time zone", orjson.dumps(loan(timezone="Mars/Olympus")), "timezone"),
    ]  # fmt: skip
    for name, body, field in loans:
        response = await front.client.put("/v1/loans/L-f", content=body, headers={**OP, **JSON})
        assert response.status_code == 422, (name, response.text)
        assert response.json()["field"].startswith(field), (name, response.json())
    position = {
        "id": 1,
        "latitude": 30.27,
        "longitude": 120.15,
        "fixTime": iso(),
        "speed": 10.0,
        "attributes": {},
    }
    device = {"id": 1, "uniqueId": "868120201234567"}
    forwards: list[tuple[str, Any, str]] = [
        ("no device", {"position": position}, "device"),
        ("speed 1e300 knots", {"position": {**position, "speed": 1e300}, "device": device},
         "speed_kmh"),
        ("fix 3 days ahead", {"position": {**position, "fixTime": iso(dt.timedelta(days=3))},
                              "device": device}, "ts"),
        ("fix in 1999", {"position": {**position, "fixTime": "1999-12-31T00:00:00Z"},
                         "device": device}, "ts"),
        ("latitude 91", {"position": {**position, "latitude": 91}, "device": device}, "lat"),
        ("accuracy 1e308", {"position": {**position, "accuracy": 1e308}, "device": device},
         "position.accuracy"),
        ("attributes nested 600 deep", {"position": {**position, "attributes": {
            "x": orjson.loads(nested(600))}}, "device": device}, "position.attributes.x"),
        ("uniqueId with ESC", {"position": position, "device": {**device,
                                                                "uniqueId": "86\x1b[0m"}},
         "device.uniqueId"),
    ]  # fmt: skip
    for name, payload, field in forwards:
        response = await front.client.post("/v1/ingest/traccar", json=payload, headers=VENDOR)
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        assert body["accepted"] == 0, name
        fields = [e["field"] for e in body["rejected"][0]["errors"]]
        assert any(f.startswith(field) for f in fields), (name, fields)
    dead = await front.count("deadletter")
    print(
        f"loans: {len(loans)} bad bodies → 422 naming the field; traccar: {len(forwards)} bad "
        f"forwards rejected; dead letters {dead}"
    )
    assert dead == len(loans) + len(forwards)
    assert await front.count("gps.raw") == await front.count("loans") == 0


async def test_jt808_gateway_bad_frames(kafka_bootstrap: str, topic_prefix: str) -> None:
    await ensure_topics(kafka_bootstrap, topic_prefix, PARTITIONS)
    sink = KafkaPingSink(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    await sink.start()
    received = dt.datetime(2024, 5, 1, 4, 30, 30, tzinfo=dt.UTC)  # location_body's 12:30 GMT+8
    gateway = Jt808Gateway(
        sink=sink,
        options=GatewayOptions(),
        metrics=GatewayMetrics(CollectorRegistry()),
        clock=lambda: received,
    )
    try:
        protocol = gateway.new_connection()
        transport = FakeTransport()
        protocol.connection_made(transport)
        code = auth_code_for(PHONE, None)
        protocol.data_received(frame(codec.MSG_AUTH, code.encode(), serial=1))
        good = frame(codec.MSG_LOCATION, location_body(), serial=2)
        flipped = bytearray(good)
        flipped[20] ^= 0xFF
        lat95 = bytearray(location_body())
        lat95[8:12] = (95_000_000).to_bytes(4, "big")
        cases: list[tuple[str, bytes]] = [
            ("bad check code", bytes(flipped)),
            ("random garbage", bytes(range(256)) * 4),
            ("oversize run", b"\x7e" + b"\x01" * 5000),
            ("time 2099", frame(codec.MSG_LOCATION, location_body(
                time=dt.datetime(2099, 1, 1)), serial=3)),
            ("time 10 minutes ahead", frame(codec.MSG_LOCATION, location_body(
                time=dt.datetime(2024, 5, 1, 12, 41, 0)), serial=4)),
            ("time 2001", frame(codec.MSG_LOCATION, location_body(
                time=dt.datetime(2001, 1, 1)), serial=5)),
            ("latitude 95", frame(codec.MSG_LOCATION, bytes(lat95), serial=6)),
        ]  # fmt: skip
        for _, data in cases:
            protocol.data_received(b"\x7e" + data + b"\x7e")
        protocol.data_received(good)
        for _ in range(50):
            await asyncio.sleep(0.05)
            if gateway.metrics.registry.get_sample_value(
                "skipwatch_jt808_pings_total", {"outcome": "produced"}
            ):
                break
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in gateway.metrics.registry.collect()
            for s in family.samples
            if s.name in ("skipwatch_jt808_pings_total", "skipwatch_jt808_malformed_frames_total")
            and s.value
        }
        print(f"jt808: {len(cases)} bad inputs + 1 good frame; counters {samples}")

        def value(name: str, **labels: str) -> float:
            return gateway.metrics.registry.get_sample_value(name, labels) or 0.0

        assert value("skipwatch_jt808_pings_total", outcome="rejected_bad_time") == 3
        assert value("skipwatch_jt808_pings_total", outcome="rejected_invalid") == 1
        assert value("skipwatch_jt808_pings_total", outcome="produced") == 1
        assert value("skipwatch_jt808_malformed_frames_total", reason="bad_checksum") >= 1
        assert value("skipwatch_jt808_malformed_frames_total", reason="oversize") >= 1
        assert not transport.closed
        replies = [general_response(body) for _, body in transport.replies()]
        assert (2, codec.MSG_LOCATION, codec.RESULT_OK) in replies
    finally:
        await sink.stop()


RAW: list[tuple[str, bytes, str]] = [
    ("payments", b"{not json", "undecodable"),
    ("payments", b"", "undecodable"),
    ("payments", orjson.dumps(payment(1, amount=1e308)), "invalid"),
    ("payments", orjson.dumps(payment(2, ts="0001-01-01T00:00:00Z")), "invalid"),
    ("contacts", orjson.dumps(contact(1, ts="9999-12-31T23:59:59-14:00")), "invalid"),
    ("contacts", orjson.dumps(contact(2, ts=iso(dt.timedelta(hours=25)))), "invalid"),
    # The JSON parser's own recursion limit: not decodable at all.
    ("contacts", b'{"event_id": "deep", "loan_id": ' + nested(500) + b"}", "undecodable"),
    ("gps.raw", orjson.dumps(ping(1, lat=1e308)), "invalid"),
    ("gps.raw", orjson.dumps(ping(2, device_id="d\x00")), "invalid"),
    ("gps.raw", b"\xff\xfe\x00", "undecodable"),
]


async def test_raw_kafka_records_are_dead_lettered_and_the_worker_never_restarts(
    stack: Stack,
) -> None:
    worker = stack.start_worker(SKIPWATCH_WORKER__CLOCK="wall")
    for topic, value, _ in RAW:
        await stack.produce_raw(topic, b"L-f", value)
    dead = await stack.read_topic("deadletter", lambda records: len(records) >= len(RAW))
    got = Counter(
        (
            dict(r.headers)["skipwatch-source-topic"].decode().removeprefix(stack.prefix),
            dict(r.headers)["skipwatch-reason"].decode(),
        )
        for r in dead
    )
    expected = Counter((topic, reason) for topic, _, reason in RAW)
    details = [dict(r.headers)["skipwatch-detail"].decode() for r in dead]
    print(
        f"raw Kafka: {len(RAW)} bad records, {len(dead)} dead-lettered {dict(got)}; "
        f"worker restarts {worker.restarts}"
    )
    assert got == expected
    assert all(details), "every dead letter carries its reason in skipwatch-detail"
    assert worker.restarts == 0 and worker.proc is not None and worker.proc.poll() is None

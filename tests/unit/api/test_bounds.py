"""Bounds at the HTTP front doors: per-item rejects naming the field, dead letters, never a 500."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from services.api import create_app
from services.api.dedup import MemoryDedup
from tests.unit.api.support import (
    OPERATOR,
    VENDOR_KEY,
    Api,
    FakeProducer,
    bearer,
    make_settings,
    ping,
)
from tests.unit.api.test_traccar import position_forward

pytestmark = pytest.mark.unit

VENDOR = {"X-Api-Key": VENDOR_KEY}
OP = bearer(OPERATOR)


def now_iso(delta: dt.timedelta = dt.timedelta()) -> str:
    return (dt.datetime.now(dt.UTC) + delta).isoformat()


def payment(n: int, **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": f"pay-{n}",
        "loan_id": "L1",
        "ts": now_iso(),
        "type": "payment_received",
        "installment_no": 1,
        "amount": 3500.0,
        **overrides,
    }


def contact(n: int, **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": f"c-{n}",
        "loan_id": "L1",
        "ts": now_iso(),
        "party": "borrower",
        "channel": "call",
        "outcome": "no_answer",
        **overrides,
    }


def nested(levels: int) -> bytes:
    return b"[" * levels + b"1" + b"]" * levels


def reject_fields(body: dict[str, Any]) -> list[list[str]]:
    return [[e["field"] for e in r["errors"]] for r in body["rejected"]]


async def test_two_payments_of_1e308_are_rejected_naming_amount(api: Api) -> None:
    items = [payment(1, amount=1e308), payment(2, amount=1e308), payment(3)]
    response = await api.client.post("/v1/ingest/payments", json=items, headers=OP)
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 1
    assert reject_fields(body) == [["amount"], ["amount"]]
    assert [orjson.loads(s.value)["event_id"] for s in api.producer.on("payments")] == ["pay-3"]
    dead = api.producer.on("deadletter")
    assert [d.headers["skipwatch-reason"] for d in dead] == [b"invalid_event"] * 2


async def test_year_9999_contact_is_rejected_naming_ts(api: Api) -> None:
    items = [contact(1, ts="9999-12-31T23:59:59-14:00"), contact(2)]
    response = await api.client.post("/v1/ingest/contacts", json=items, headers=OP)
    body = response.json()
    assert (response.status_code, body["accepted"]) == (200, 1)
    assert reject_fields(body) == [["ts"]]
    assert body["rejected"][0]["errors"][0]["type"] == "timestamp_out_of_range"
    assert len(api.producer.on("deadletter")) == 1


async def test_future_beyond_the_skew_is_rejected_not_accepted_and_dropped_later(api: Api) -> None:
    # The engine drops events more than a day ahead; the front door must not say 200 to them.
    items = [contact(1, ts=now_iso(dt.timedelta(hours=25))), contact(2, ts=now_iso())]
    response = await api.client.post("/v1/ingest/contacts", json=items, headers=OP)
    body = response.json()
    assert body["accepted"] == 1
    assert body["rejected"][0]["errors"][0]["type"] == "timestamp_in_future"
    assert "ahead of the arrival time" in body["rejected"][0]["errors"][0]["message"]


async def test_old_events_are_rejected_past_the_maximum_age(api: Api) -> None:
    items = [ping(1, ts="2001-01-01T00:00:00+00:00"), ping(2, ts=now_iso())]
    response = await api.client.post("/v1/ingest/gps", json=items, headers=VENDOR)
    body = response.json()
    assert body["accepted"] == 1
    assert body["rejected"][0]["errors"][0]["type"] == "timestamp_too_old"


async def test_the_window_is_configurable() -> None:
    producer = FakeProducer()
    settings = make_settings().model_copy(
        update={
            "bounds": make_settings().bounds.model_copy(update={"max_future_skew_s": 5.0}),
        }
    )
    app = create_app(settings, producer=producer, dedup=MemoryDedup())
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            items = [ping(1, ts=now_iso(dt.timedelta(seconds=60)))]
            response = await client.post("/v1/ingest/gps", json=items, headers=VENDOR)
    assert response.json()["rejected"][0]["errors"][0]["type"] == "timestamp_in_future"


@pytest.mark.parametrize("levels", [40, 300, 1000])
@pytest.mark.parametrize(
    ("route", "headers", "item"),
    [
        ("/v1/ingest/gps", VENDOR, ping(1)),
        ("/v1/ingest/payments", OP, payment(1)),
        ("/v1/ingest/contacts", OP, contact(1)),
    ],
)
async def test_deep_nesting_in_a_field_is_a_per_item_reject_not_a_500(
    api: Api, route: str, headers: dict[str, str], item: dict[str, Any], levels: int
) -> None:
    good = orjson.dumps(item)
    deep = good[:-1] + b',"event_id":"deep","extra":' + nested(levels) + b"}"
    deep = deep.replace(b'"event_id":"', b'"event_id":"x', 1)  # a distinct first id
    body = b"[" + deep + b"," + good + b"]"
    response = await api.client.post(
        route, content=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 1
    (reject,) = result["rejected"]
    assert reject["reason"] == "too_deep"
    assert reject["errors"][0]["field"].startswith("extra")
    (dead,) = api.producer.on("deadletter")
    assert dead.headers["skipwatch-reason"] == b"too_deep"
    orjson.loads(dead.value)  # serialisable, however deep the input was


async def test_deep_nesting_in_a_loan_is_422_naming_the_field(api: Api) -> None:
    loan = (
        b'{"borrower": {"name": "A", "phone": "+8613800000001"},'
        b' "vehicle": {"vin": "LSVAB12C3DE456701", "plate": "A1"}, "home_region": '
        + nested(300)
        + b"}"
    )
    response = await api.client.put(
        "/v1/loans/L1", content=loan, headers={**OP, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"].startswith("home_region")
    assert "nested deeper than 32 levels" in response.json()["message"]


async def test_traccar_deep_attributes_and_far_future_fix_are_rejected_cleanly(api: Api) -> None:
    forward = position_forward()
    raw = orjson.dumps(forward)
    deep = raw.replace(b'"attributes":{', b'"attributes":{"x":' + nested(600) + b",", 1)
    response = await api.client.post(
        "/v1/ingest/traccar", content=deep, headers={**VENDOR, "Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["rejected"][0]["reason"] == "too_deep"
    orjson.loads(api.producer.on("deadletter")[0].value)

    future = position_forward(fixTime=now_iso(dt.timedelta(days=3)))
    response = await api.client.post("/v1/ingest/traccar", json=future, headers=VENDOR)
    body = response.json()
    assert body["accepted"] == 0
    assert body["rejected"][0]["errors"][0]["field"] == "ts"
    assert body["rejected"][0]["errors"][0]["type"] == "timestamp_in_future"


async def test_traccar_speed_overflow_and_unbounded_strings_are_rejected(api: Api) -> None:
    response = await api.client.post(
        "/v1/ingest/traccar", json=position_forward(speed=1e300), headers=VENDOR
    )
    assert reject_fields(response.json()) == [["speed_kmh"]]
    forward = position_forward()
    forward["position"]["protocol"] = "x" * 5000
    response = await api.client.post("/v1/ingest/traccar", json=forward, headers=VENDOR)
    assert reject_fields(response.json()) == [["position.protocol"]]
    forward = position_forward(accuracy=1e308)
    response = await api.client.post("/v1/ingest/traccar", json=forward, headers=VENDOR)
    assert reject_fields(response.json()) == [["position.accuracy"]]

"""Batch ingest on a fake producer: per-item rejects, dead letters, limits, duplicates, 503s."""

from __future__ import annotations

import httpx
import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client.parser import text_string_to_metric_families

from rules.events import GpsPing
from services.api import create_app
from services.api.dedup import MemoryDedup
from services.api.publisher import partition_for
from tests.unit.api.support import (
    OPERATOR,
    VENDOR_KEY,
    Api,
    FakeProducer,
    Sent,
    bearer,
    make_settings,
    ping,
)

pytestmark = pytest.mark.unit

VENDOR = {"X-Api-Key": VENDOR_KEY}


def metric(text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def test_accepted_pings_are_produced_keyed_by_device(api: Api) -> None:
    items = [ping(n) for n in range(20)]
    response = await api.client.post("/v1/ingest/gps", json=items, headers=VENDOR)

    assert response.status_code == 200
    assert response.json() == {"accepted": 20, "duplicates": 0, "rejected": [], "ignored": 0}
    sent = api.producer.on("gps.raw")
    assert len(sent) == 20
    by_id = {GpsPing.model_validate_json(s.value).event_id: s for s in sent}
    assert set(by_id) == {f"ping-{n}" for n in range(20)}
    for n in range(20):
        record = by_id[f"ping-{n}"]
        assert record.key == f"dev-{n % 7}".encode()
        # Kafka's default partitioner, so other producers of gps.raw agree on the partition.
        assert record.partition == partition_for(record.key, api.producer.partitions)
        assert GpsPing.model_validate_json(record.value) == GpsPing.model_validate(items[n])


async def test_records_of_one_device_keep_their_order(api: Api) -> None:
    items = [ping(n, device_id="dev-same") for n in range(30)]
    await api.client.post("/v1/ingest/gps", json=items, headers=VENDOR)
    ids = [GpsPing.model_validate_json(s.value).event_id for s in api.producer.on("gps.raw")]
    assert ids == [f"ping-{n}" for n in range(30)]


async def test_full_batches_are_split_without_losing_records(producer: FakeProducer) -> None:
    producer.batch_capacity = 3
    app = create_app(make_settings(), producer=producer, dedup=MemoryDedup())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            items = [ping(n, device_id="dev-same") for n in range(10)]
            response = await client.post("/v1/ingest/gps", json=items, headers=VENDOR)
    assert response.json()["accepted"] == 10
    assert producer.batches == 4
    ids = [GpsPing.model_validate_json(s.value).event_id for s in producer.on("gps.raw")]
    assert ids == [f"ping-{n}" for n in range(10)]


async def test_vendor_is_filled_from_the_key(api: Api) -> None:
    item = ping(1)
    del item["vendor"]
    response = await api.client.post("/v1/ingest/gps", json=[item], headers=VENDOR)
    assert response.json()["accepted"] == 1
    (record,) = api.producer.on("gps.raw")
    assert GpsPing.model_validate_json(record.value).vendor == "vendor-a"


async def test_valid_and_mixed_batches_write_the_same_records(api: Api) -> None:
    """The same pings (vendor given or filled from the key) give byte-identical records whether
    or not their batch also holds a reject."""
    items = [ping(n, fix="lbs", alarms=["sos"]) if n % 2 else ping(n) for n in range(6)]
    for item in items[::3]:
        del item["vendor"]
    retried = [{**item, "event_id": f"{item['event_id']}-b"} for item in items]
    first = await api.client.post("/v1/ingest/gps", json=items, headers=VENDOR)
    second = await api.client.post(
        "/v1/ingest/gps", json=[*retried, ping(9, lat=91.0)], headers=VENDOR
    )
    assert first.json()["accepted"] == second.json()["accepted"] == 6
    assert [r["index"] for r in second.json()["rejected"]] == [6]
    sent = api.producer.on("gps.raw")
    assert len(sent) == 12

    def by_id(records: list[Sent]) -> dict[str, tuple[bytes | None, bytes]]:
        # The value with the event_id cut out, byte for byte.
        out = {}
        for record in records:
            event_id = orjson.loads(record.value)["event_id"]
            key = event_id.removesuffix("-b")
            out[key] = (record.key, record.value.replace(f'"{event_id}"'.encode(), b'""'))
        return out

    assert by_id(sent[:6]) == by_id(sent[6:])
    assert all(GpsPing.model_validate_json(s.value).vendor == "vendor-a" for s in sent)


async def test_a_vendor_cannot_write_another_vendors_pings(api: Api) -> None:
    response = await api.client.post(
        "/v1/ingest/gps", json=[ping(1, vendor="vendor-b"), ping(2)], headers=VENDOR
    )
    body = response.json()
    assert body["accepted"] == 1
    (reject,) = body["rejected"]
    assert reject["index"] == 0
    assert reject["reason"] == "vendor_mismatch"
    assert reject["errors"][0]["field"] == "vendor"
    (dead,) = api.producer.on("deadletter")
    assert dead.headers["skipwatch-reason"] == b"vendor_mismatch"


async def test_operator_must_name_the_vendor(api: Api) -> None:
    item = ping(1)
    del item["vendor"]
    response = await api.client.post("/v1/ingest/gps", json=[item], headers=bearer(OPERATOR))
    (reject,) = response.json()["rejected"]
    assert reject["errors"][0]["field"] == "vendor"


async def test_rejects_are_reported_per_item_naming_fields_and_dead_lettered(api: Api) -> None:
    items = [
        ping(0),
        ping(1, lat=91.0),
        ping(2, ts="2024-05-01T08:00:00"),  # naive: a validation error (DESIGN §4)
        "not an object",
        ping(4, colour="red"),
        ping(5),
    ]
    response = await api.client.post("/v1/ingest/gps", json=items, headers=VENDOR)

    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    rejects = {r["index"]: r for r in body["rejected"]}
    assert set(rejects) == {1, 2, 3, 4}
    assert rejects[1]["event_id"] == "ping-1"
    assert [e["field"] for e in rejects[1]["errors"]] == ["lat"]
    assert [e["field"] for e in rejects[2]["errors"]] == ["ts"]
    assert rejects[3]["event_id"] is None
    assert [e["field"] for e in rejects[3]["errors"]] == ["(item)"]
    assert [e["field"] for e in rejects[4]["errors"]] == ["colour"]

    dead = api.producer.on("deadletter")
    assert len(dead) == 4
    first = next(d for d in dead if orjson.loads(d.value) == items[1])
    assert first.key == b"dev-1"
    assert first.headers["skipwatch-reason"] == b"invalid_event"
    assert first.headers["skipwatch-source-topic"] == b"t.gps.raw"
    assert first.headers["skipwatch-detail"].startswith(b"lat:")
    assert first.headers["skipwatch-principal"] == b"vendor:vendor-a"

    metrics = (await api.client.get("/metrics")).text
    labels = {"source": "gps", "reason": "invalid_event"}
    assert metric(metrics, "skipwatch_ingest_rejected_total", labels) == 4
    assert metric(metrics, "skipwatch_ingest_accepted_total", {"source": "gps"}) == 2


async def test_repeats_are_counted_and_skipped(api: Api) -> None:
    items = [ping(n) for n in range(5)]
    first = await api.client.post("/v1/ingest/gps", json=items, headers=VENDOR)
    again = await api.client.post("/v1/ingest/gps", json=[*items, ping(9), ping(9)], headers=VENDOR)
    assert first.json()["accepted"] == 5
    assert again.json() == {"accepted": 1, "duplicates": 6, "rejected": [], "ignored": 0}
    ids = [GpsPing.model_validate_json(s.value).event_id for s in api.producer.on("gps.raw")]
    assert sorted(ids) == sorted([f"ping-{n}" for n in range(5)] + ["ping-9"])


async def test_kafka_timeout_is_503_with_retry_after_and_not_remembered(api: Api) -> None:
    api.producer.fail_with = KafkaTimeoutError()
    response = await api.client.post("/v1/ingest/gps", json=[ping(1)], headers=VENDOR)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json()["error"] == "unavailable"

    # Nothing was acknowledged, so the retry must be written, not skipped as a duplicate.
    api.producer.fail_with = None
    retry = await api.client.post("/v1/ingest/gps", json=[ping(1)], headers=VENDOR)
    assert retry.json()["accepted"] == 1
    assert retry.json()["duplicates"] == 0


async def test_no_ack_within_produce_timeout_is_503(api: Api) -> None:
    api.producer.hang = True
    response = await api.client.post("/v1/ingest/gps", json=[ping(1)], headers=VENDOR)
    assert response.status_code == 503
    assert "Retry-After" in response.headers


async def test_rejects_are_not_answered_before_the_dead_letter_is_written(api: Api) -> None:
    api.producer.fail_with = KafkaTimeoutError()
    response = await api.client.post("/v1/ingest/gps", json=[ping(1, lat=99)], headers=VENDOR)
    assert response.status_code == 503


class TestBodyLimits:
    async def test_not_json_is_422_naming_the_body(self, api: Api) -> None:
        response = await api.client.post("/v1/ingest/gps", content=b"[{", headers=VENDOR)
        assert response.status_code == 422
        assert response.json()["field"] == "body"
        assert "not valid JSON" in response.json()["message"]

    async def test_object_instead_of_array_is_422(self, api: Api) -> None:
        response = await api.client.post("/v1/ingest/gps", json={"items": []}, headers=VENDOR)
        assert response.status_code == 422
        assert "JSON array" in response.json()["message"]

    async def test_too_many_items_is_413(self, api: Api) -> None:
        items = [ping(n) for n in range(51)]
        response = await api.client.post("/v1/ingest/gps", json=items, headers=VENDOR)
        assert response.status_code == 413
        assert "51 items exceeds 50" in response.json()["message"]
        assert api.producer.sent == []

    async def test_declared_oversize_body_is_413(self, api: Api) -> None:
        body = b"[" + b" " * (64 * 1024) + b"]"
        response = await api.client.post("/v1/ingest/gps", content=body, headers=VENDOR)
        assert response.status_code == 413

    async def test_streamed_oversize_body_is_413(self, api: Api) -> None:
        async def chunks():  # type: ignore[no-untyped-def]
            yield b"["
            for _ in range(100):
                yield b" " * 1024
            yield b"]"

        response = await api.client.post("/v1/ingest/gps", content=chunks(), headers=VENDOR)
        assert response.status_code == 413

    async def test_empty_batch_is_fine(self, api: Api) -> None:
        response = await api.client.post("/v1/ingest/gps", json=[], headers=VENDOR)
        assert response.json() == {"accepted": 0, "duplicates": 0, "rejected": [], "ignored": 0}


class TestOtherStreams:
    async def test_payments_and_contacts_keyed_by_loan(self, api: Api) -> None:
        payment = {
            "event_id": "pay-1",
            "loan_id": "loan-7",
            "ts": "2024-05-01T00:00:00+08:00",
            "type": "payment_failed",
            "installment_no": 3,
            "amount": 3100.0,
        }
        contact = {
            "event_id": "call-1",
            "loan_id": "loan-7",
            "ts": "2024-05-02T10:00:00+08:00",
            "party": "borrower",
            "channel": "call",
            "outcome": "powered_off",
        }
        r1 = await api.client.post("/v1/ingest/payments", json=[payment], headers=bearer(OPERATOR))
        r2 = await api.client.post("/v1/ingest/contacts", json=[contact], headers=bearer(OPERATOR))
        assert (r1.json()["accepted"], r2.json()["accepted"]) == (1, 1)
        assert [s.key for s in api.producer.on("payments")] == [b"loan-7"]
        assert [s.key for s in api.producer.on("contacts")] == [b"loan-7"]

        bad = {**contact, "event_id": "call-2", "outcome": "ghosted"}
        r3 = await api.client.post("/v1/ingest/contacts", json=[bad], headers=bearer(OPERATOR))
        assert r3.json()["rejected"][0]["errors"][0]["field"] == "outcome"

    async def test_payment_repeats_are_skipped_per_topic(self, api: Api) -> None:
        payment = {
            "event_id": "same-id",
            "loan_id": "loan-7",
            "ts": "2024-05-01T00:00:00+08:00",
            "type": "installment_due",
            "installment_no": 1,
            "amount": 1.0,
        }
        await api.client.post("/v1/ingest/payments", json=[payment], headers=bearer(OPERATOR))
        again = await api.client.post(
            "/v1/ingest/payments", json=[payment], headers=bearer(OPERATOR)
        )
        assert again.json()["duplicates"] == 1
        # The same id on another stream is another event.
        response = await api.client.post(
            "/v1/ingest/gps", json=[ping(0, event_id="same-id")], headers=VENDOR
        )
        assert response.json()["accepted"] == 1


LOAN = {
    "borrower": {"name": "张三", "phone": "+8613800138000"},
    "vehicle": {"vin": "LSVAU2180N2183294", "plate": "浙A12345"},
    "devices": [{"device_id": "dev-1", "kind": "wired"}],
    "home_region": {"center": [30.25, 120.16], "radius_km": 50},
    "schedule": [{"installment_no": 1, "due_date": "2024-06-01", "amount": 3100}],
}


class TestLoans:
    async def test_put_writes_the_loan_keyed_by_id(self, api: Api) -> None:
        response = await api.client.put("/v1/loans/loan-9", json=LOAN, headers=bearer(OPERATOR))
        assert response.status_code == 200
        assert response.json() == {"loan_id": "loan-9", "accepted": 1}
        (record,) = api.producer.on("loans")
        assert record.key == b"loan-9"
        assert orjson.loads(record.value)["loan_id"] == "loan-9"
        # PUT is idempotent by nature (compacted topic): a repeat is written again, not skipped.
        await api.client.put("/v1/loans/loan-9", json=LOAN, headers=bearer(OPERATOR))
        assert len(api.producer.on("loans")) == 2

    async def test_body_loan_id_must_match_the_path(self, api: Api) -> None:
        body = {**LOAN, "loan_id": "loan-other"}
        response = await api.client.put("/v1/loans/loan-9", json=body, headers=bearer(OPERATOR))
        assert response.status_code == 422
        assert response.json()["field"] == "loan_id"
        assert api.producer.on("loans") == []

    async def test_invalid_loan_is_422_naming_the_field_and_dead_lettered(self, api: Api) -> None:
        body = {**LOAN, "borrower": {"name": "张三", "phone": "call me"}}
        response = await api.client.put("/v1/loans/loan-9", json=body, headers=bearer(OPERATOR))
        assert response.status_code == 422
        assert response.json()["field"] == "borrower.phone"
        (dead,) = api.producer.on("deadletter")
        assert dead.key == b"loan-9"
        assert dead.headers["skipwatch-source-topic"] == b"t.loans"

    async def test_array_body_is_422(self, api: Api) -> None:
        response = await api.client.put("/v1/loans/loan-9", json=[], headers=bearer(OPERATOR))
        assert response.status_code == 422

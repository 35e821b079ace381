"""App wiring: readiness, a Kafka that is not there at start, OpenAPI, request metrics."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.api import create_app
from services.api.dedup import MemoryDedup
from tests.unit.api.support import VENDOR_KEY, Api, FakeProducer, make_settings, ping

pytestmark = pytest.mark.unit


async def test_readyz_follows_kafka_reachability(api: Api) -> None:
    assert (await api.client.get("/readyz")).json() == {
        "status": "ready",
        "kafka": True,
        "dedup": True,
        "view": "off",  # no projector with an injected producer
    }
    api.producer.unreachable = True
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["kafka"] is False
    assert (await api.client.get("/healthz")).status_code == 200


async def test_api_comes_up_without_kafka_and_answers_503_until_it_connects() -> None:
    producer = FakeProducer(fail_start=True)
    app = create_app(make_settings(), producer=producer, dedup=MemoryDedup())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            assert (await client.get("/readyz")).status_code == 503
            response = await client.post(
                "/v1/ingest/gps", json=[ping()], headers={"X-Api-Key": VENDOR_KEY}
            )
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "5"
    assert producer.sent == []


async def test_openapi_documents_bodies_and_security(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    for name in ("GpsPing", "PaymentEvent", "ContactAttempt", "Loan", "TraccarForward"):
        assert name in components
    body = schema["paths"]["/v1/ingest/gps"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["items"] == {"$ref": "#/components/schemas/GpsPing"}
    assert set(schema["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    # Every reference resolves (the event models' nested types were merged in too).
    for ref in refs(schema):
        assert ref.removeprefix("#/components/schemas/") in components, ref
    assert (await api.client.get("/docs")).status_code == 200


async def test_requests_are_counted_by_route_template(api: Api) -> None:
    await api.client.put("/v1/loans/loan-1", json={})
    await api.client.put("/v1/loans/loan-2", json={})
    text = (await api.client.get("/metrics")).text
    assert (
        'skipwatch_http_requests_total{method="PUT",route="/v1/loans/{loan_id}",status="401"} 2.0'
        in text
    )
    assert "loan-1" not in text

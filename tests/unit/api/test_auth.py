"""Credentials and roles: 401 without or with an unknown credential, 403 for a wrong role."""

from __future__ import annotations

import orjson
import pytest

from services.api.auth import sign_body
from tests.unit.api.support import (
    ADMIN,
    OPERATOR,
    SIGNING_SECRET,
    SIGNING_VENDOR_KEY,
    VENDOR_KEY,
    VIEWER,
    Api,
    bearer,
    ping,
)

pytestmark = pytest.mark.unit

INGEST_ROUTES = [
    ("POST", "/v1/ingest/gps"),
    ("POST", "/v1/ingest/traccar"),
    ("POST", "/v1/ingest/payments"),
    ("POST", "/v1/ingest/contacts"),
    ("PUT", "/v1/loans/loan-1"),
]


@pytest.mark.parametrize(("method", "path"), INGEST_ROUTES)
async def test_every_ingest_route_needs_a_credential(api: Api, method: str, path: str) -> None:
    response = await api.client.request(method, path, content=b"[]")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    body = response.json()
    assert body["error"] == "unauthenticated"
    assert body["field"] == "Authorization"
    assert api.producer.sent == []


@pytest.mark.parametrize(
    "headers",
    [bearer("not-a-known-token-at-all"), {"X-Api-Key": "not-a-known-key-at-all"}],
)
async def test_unknown_credential_is_401(api: Api, headers: dict[str, str]) -> None:
    response = await api.client.post("/v1/ingest/gps", content=b"[]", headers=headers)
    assert response.status_code == 401
    assert response.json()["message"] == "unknown or revoked credential"


async def test_non_bearer_authorization_is_401(api: Api) -> None:
    response = await api.client.post(
        "/v1/ingest/gps", content=b"[]", headers={"Authorization": f"Basic {ADMIN}"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize(("method", "path"), INGEST_ROUTES)
async def test_viewer_cannot_ingest(api: Api, method: str, path: str) -> None:
    response = await api.client.request(method, path, content=b"[]", headers=bearer(VIEWER))
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/ingest/payments"), ("POST", "/v1/ingest/contacts"), ("PUT", "/v1/loans/l-1")],
)
async def test_vendor_key_is_limited_to_gps_routes(api: Api, method: str, path: str) -> None:
    response = await api.client.request(
        method, path, content=b"[]", headers={"X-Api-Key": VENDOR_KEY}
    )
    assert response.status_code == 403
    assert "GPS ingest" in response.json()["message"]


@pytest.mark.parametrize("headers", [{"X-Api-Key": VENDOR_KEY}, bearer(VENDOR_KEY)])
async def test_vendor_key_may_ingest_gps_as_header_or_bearer(
    api: Api, headers: dict[str, str]
) -> None:
    response = await api.client.post("/v1/ingest/gps", json=[ping()], headers=headers)
    assert response.status_code == 200
    assert response.json()["accepted"] == 1


@pytest.mark.parametrize("token", [OPERATOR, ADMIN])
async def test_operator_and_admin_may_ingest_everything(api: Api, token: str) -> None:
    response = await api.client.post("/v1/ingest/gps", json=[ping()], headers=bearer(token))
    assert response.status_code == 200
    response = await api.client.post("/v1/ingest/payments", json=[], headers=bearer(token))
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_and_metrics_need_no_credential(api: Api, path: str) -> None:
    response = await api.client.get(path)
    assert response.status_code == 200


async def test_unknown_route_answers_in_the_error_shape(api: Api) -> None:
    response = await api.client.get("/v1/nothing-here", headers=bearer(ADMIN))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


class TestSignature:
    """Vendor-b has a signing secret: its requests need X-Skipwatch-Signature over the raw body."""

    async def test_missing_signature_is_401(self, api: Api) -> None:
        response = await api.client.post(
            "/v1/ingest/gps",
            json=[ping(vendor="vendor-b")],
            headers={"X-Api-Key": SIGNING_VENDOR_KEY},
        )
        assert response.status_code == 401
        assert response.json()["error"] == "bad_signature"
        assert response.json()["field"] == "X-Skipwatch-Signature"
        assert api.producer.sent == []

    async def test_signature_over_other_bytes_is_401(self, api: Api) -> None:
        body = orjson.dumps([ping(vendor="vendor-b")])
        signature = sign_body(SIGNING_SECRET, body + b" ")
        response = await api.client.post(
            "/v1/ingest/gps",
            content=body,
            headers={"X-Api-Key": SIGNING_VENDOR_KEY, "X-Skipwatch-Signature": signature},
        )
        assert response.status_code == 401
        assert "does not match" in response.json()["message"]

    async def test_wrong_scheme_is_401(self, api: Api) -> None:
        body = orjson.dumps([ping(vendor="vendor-b")])
        signature = sign_body(SIGNING_SECRET, body).replace("sha256=", "md5=")
        response = await api.client.post(
            "/v1/ingest/gps",
            content=body,
            headers={"X-Api-Key": SIGNING_VENDOR_KEY, "X-Skipwatch-Signature": signature},
        )
        assert response.status_code == 401

    async def test_correct_signature_is_accepted(self, api: Api) -> None:
        body = orjson.dumps([ping(vendor="vendor-b")])
        response = await api.client.post(
            "/v1/ingest/gps",
            content=body,
            headers={
                "X-Api-Key": SIGNING_VENDOR_KEY,
                "X-Skipwatch-Signature": sign_body(SIGNING_SECRET, body)
                .upper()
                .replace("SHA256=", "sha256="),
            },
        )
        assert response.status_code == 200
        assert response.json()["accepted"] == 1

    async def test_vendor_without_secret_and_users_need_no_signature(self, api: Api) -> None:
        for headers in ({"X-Api-Key": VENDOR_KEY}, bearer(OPERATOR)):
            response = await api.client.post("/v1/ingest/gps", json=[ping()], headers=headers)
            assert response.status_code == 200

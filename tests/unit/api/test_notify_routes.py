"""Webhook, receiver and silence routes: roles are checked before any state is touched."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from services.api import create_app
from services.api.dedup import MemoryDedup
from tests.unit.api.support import (
    ADMIN,
    OPERATOR,
    VENDOR_KEY,
    VIEWER,
    Api,
    FakeProducer,
    bearer,
    make_settings,
)

pytestmark = pytest.mark.unit

SAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "notify" / "routing.example.yaml"
EP = "ep_" + "0" * 24


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/webhooks"),
        ("GET", f"/v1/webhooks/{EP}"),
        ("PATCH", f"/v1/webhooks/{EP}"),
        ("DELETE", f"/v1/webhooks/{EP}"),
        ("POST", f"/v1/webhooks/{EP}/rotate-secret"),
        ("GET", f"/v1/webhooks/{EP}/deliveries"),
        ("POST", f"/v1/webhooks/{EP}/deliveries/msg_{'0' * 26}/redeliver"),
        ("POST", f"/v1/webhooks/{EP}/redeliver-dead"),
        ("GET", "/v1/receivers"),
    ],
)
async def test_webhook_routes_are_admin_only(api: Api, method: str, path: str) -> None:
    assert (await api.client.request(method, path)).status_code == 401
    for token in (OPERATOR, VIEWER):
        response = await api.client.request(method, path, headers=bearer(token), json={})
        assert response.status_code == 403, (path, token)
        assert response.json()["message"] == "requires the admin role"
    response = await api.client.request(method, path, headers={"X-Api-Key": VENDOR_KEY}, json={})
    assert response.status_code == 403


async def test_silence_routes_need_viewer_to_read_and_operator_to_change(api: Api) -> None:
    assert (await api.client.get("/v1/silences")).status_code == 401
    body = {"matchers": ['loan="L1"'], "ends_at": "2030-01-01T00:00:00Z", "comment": "x"}
    response = await api.client.post("/v1/silences", headers=bearer(VIEWER), json=body)
    assert response.status_code == 403
    response = await api.client.post(f"/v1/silences/sil_{'0' * 24}/expire", headers=bearer(VIEWER))
    assert response.status_code == 403


async def test_receivers_lists_the_routing_config_without_secrets() -> None:
    app_settings = make_settings()
    settings = app_settings.model_copy(
        update={"notify": app_settings.notify.model_copy(update={"routing_config": SAMPLE})}
    )
    app = create_app(settings, producer=FakeProducer(), dedup=MemoryDedup())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        response = await client.get("/v1/receivers", headers=bearer(ADMIN))
    assert response.status_code == 200
    got = {r["name"]: r["integrations"] for r in response.json()}
    assert got == {
        "collections-wecom": [{"kind": "wecom", "host": "qyapi.weixin.qq.com"}],
        "oncall-dingtalk": [{"kind": "dingtalk", "host": "oapi.dingtalk.com"}],
        "case-system": [{"kind": "webhook", "host": "cases.example.com"}],
    }
    assert (
        "key=" not in response.text and "SEC" not in response.text and "whsec_" not in response.text
    )

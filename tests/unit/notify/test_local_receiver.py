"""`skipwatch up`'s notification pieces: the generated routing file and the printing receiver."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest

from services.local import COMPONENTS, DEV_RECEIVER_PORT, dev_routing
from services.notify.config import load_config
from services.notify.devreceiver import receiver_app
from services.notify.messages import webhook_body
from services.notify.signing import SigningKey, new_secret, webhook_headers
from tests.unit.notify.factories import message

pytestmark = pytest.mark.unit


def test_up_runs_the_dispatcher_and_a_receiver_it_routes_to(tmp_path: Path) -> None:
    assert COMPONENTS["dispatcher"] == ["dispatcher"]
    assert COMPONENTS["receiver"][0] == "notify-receiver"
    config, secret = dev_routing(tmp_path)
    routing = load_config(config)
    (hook,) = routing.receivers["local"].webhook_configs
    assert hook.url == f"http://127.0.0.1:{DEV_RECEIVER_PORT}/hook" and hook.secret == secret
    assert dev_routing(tmp_path)[1] == secret  # kept across runs


async def test_the_receiver_prints_verified_webhooks_and_rejects_forged_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = new_secret()
    body = webhook_body(message(id="msg_dev"), dashboard_url="http://127.0.0.1:8000")
    now = dt.datetime.now(dt.UTC)
    good = webhook_headers([SigningKey(secret)], msg_id="msg_dev", body=body, now=now)
    forged = webhook_headers([SigningKey(new_secret())], msg_id="msg_dev", body=body, now=now)
    transport = httpx.ASGITransport(app=receiver_app(secret))
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        assert (await client.post("/hook", content=body, headers=good)).status_code == 204
        assert (await client.post("/hook", content=body, headers=forged)).status_code == 400
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(
        "verified msg_dev: alert.firing critical loan=L-1001 rule=missed_payment_unreachable risk=87"
    )
    assert out[1].startswith("REJECTED msg_dev")

"""The worker's per-loan status reaches the API's view: a running worker publishes it to
`<prefix>loan-status`, the projector stores it in Redis, `GET /v1/loans/{id}` returns the
resident points and signals, and `GET /v1/overview` counts loans by signal from it."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest

from rules.events import InputEvent
from services.api import create_app
from services.api.dedup import MemoryDedup
from services.settings import Settings
from tests.integration.conftest import Stack
from tests.integration.test_pipeline import wait_committed
from tests.scenarios import at, contact, loan, ping
from tests.unit.api.support import VIEWER, FakeProducer, bearer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def routine(loan_id: str, days: int) -> list[InputEvent]:
    """Home (2 km east) 19:00-08:00, an office (6 km east) 09:00-18:00, a ping an hour."""
    out: list[InputEvent] = []
    for day in range(days):
        for start, hours, east in ((at(1, 19), 13, 2.0), (at(2, 9), 9, 6.0)):
            for hour in range(hours + 1):
                when = start + dt.timedelta(days=day, hours=hour)
                out.append(ping(f"{loan_id}-w", when, east, len(out), speed_kmh=0.0))
    return out


async def test_worker_status_reaches_the_loan_view_and_the_overview(
    stack: Stack, redis_url: str, redis_prefix: str
) -> None:
    settings = Settings.model_validate({
        "kafka": {"bootstrap_servers": stack.bootstrap, "topic_prefix": stack.prefix,
                  "partitions": stack.partitions},
        "redis": {"url": redis_url, "key_prefix": redis_prefix},
        "auth": {"tokens": {VIEWER: "viewer"}},
    })  # fmt: skip
    stack.start_worker()
    await stack.produce([loan("L-status"), loan("L-calm", due="2026-03-25")])
    await wait_committed(stack, "device-bindings", 2)
    pings = routine("L-status", 4)
    calls = [contact("L-status", at(5, 18) + dt.timedelta(minutes=n), "no_answer", n)
             for n in range(3)]  # fmt: skip
    await stack.produce([*pings, *calls, ping("L-calm-w", at(2, 9), 2.0, 0, speed_kmh=0.0)])
    app = create_app(settings, producer=FakeProducer(), dedup=MemoryDedup(), projector=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):

        async def loan_view() -> dict[str, Any]:
            async with asyncio.timeout(120):
                while True:
                    stack.check_workers()
                    answer = await http.get("/v1/loans/L-status", headers=bearer(VIEWER))
                    body: dict[str, Any] = answer.json()
                    signals = body.get("signals") or {}
                    if answer.status_code == 200 and signals.get("unreachable"):
                        return body
                    await asyncio.sleep(0.5)

        body = await loan_view()
        assert body["signals"]["overdue"] and body["signals"]["days_past_due"] >= 4
        assert not body["signals"]["out_of_region"] and not body["signals"]["at_risk_place"]
        assert body["signals_as_of"].startswith("2026-03-05T10:02")  # 18:02 CST, the last call
        kinds = sorted(p["kind"] for p in body["resident_points"])
        assert kinds == ["day", "night"], body["resident_points"]
        night = next(p for p in body["resident_points"] if p["kind"] == "night")
        assert night["parked_hours"] >= 24 and night["night_hours"] > night["day_hours"]
        calm = (await http.get("/v1/loans/L-calm", headers=bearer(VIEWER))).json()
        assert calm["signals"] is not None and not calm["signals"]["overdue"]
        assert calm["resident_points"] == []
        # L-calm's tracker last reported on day 2 and the stream's time is day 5: once the
        # deadline sweep has advanced it, it is offline too (the status the sweep publishes).
        wanted = {
            "out_of_region": 0, "offline": 1, "at_risk_place": 0, "overdue": 1, "unreachable": 1,
        }  # fmt: skip
        async with asyncio.timeout(60):
            while True:
                overview = (await http.get("/v1/overview", headers=bearer(VIEWER))).json()
                if overview["loans_by_signal"] == wanted:
                    break
                await asyncio.sleep(0.5)

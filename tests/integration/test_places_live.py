"""A risk place drawn through the API reaches a running worker (no restart): a car already
parked there, then staying past the rule's dwell, raises the risk-place alert."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest

from rules.events import AlertEvent, AlertStatus
from services.api import create_app
from services.api.dedup import MemoryDedup
from services.infra import free_port
from services.settings import Settings
from tests.integration.conftest import Stack
from tests.integration.test_pipeline import wait_committed
from tests.scenarios import at, loan, ping
from tests.unit.api.support import ADMIN, FakeProducer, bearer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
RULE = "risk-place-dwell-overdue"  # 2 h at a risk place with a payment overdue


async def places_updates(stack: Stack, at_least: int, timeout_s: float = 60) -> None:
    worker = stack.workers[0]
    async with asyncio.timeout(timeout_s):
        while worker.log_path.read_text(errors="replace").count("risk places updated") < at_least:
            stack.check_workers()
            await asyncio.sleep(0.2)


async def test_place_drawn_through_the_api_reaches_the_running_worker(
    stack: Stack, redis_url: str, redis_prefix: str
) -> None:
    settings = Settings.model_validate({
        "kafka": {"bootstrap_servers": stack.bootstrap, "topic_prefix": stack.prefix,
                  "partitions": stack.partitions},
        "redis": {"url": redis_url, "key_prefix": redis_prefix},
        "auth": {"tokens": {ADMIN: "admin"}},
    })  # fmt: skip
    # The API's own producer is a fake (no ingest here); the places go through real Kafka.
    app = create_app(settings, producer=FakeProducer(), dedup=MemoryDedup(), projector=False)
    port = free_port()
    worker = stack.start_worker(SKIPWATCH_WORKER__METRICS_PORT=str(port))
    await places_updates(stack, 1)  # the topic replayed: the catalog alone
    # Parked 6 km east of Chengdu's centre, away from every catalog place, overdue since 03-01.
    first = [ping("L-draw-w", at(2, 9, m), 6.0, n, speed_kmh=0.0, acc_on=False)
             for n, m in enumerate(range(0, 40, 10))]  # fmt: skip
    await stack.produce([loan("L-draw")])
    await wait_committed(stack, "device-bindings", 1)
    await stack.produce(first)
    await wait_committed(stack, "gps.raw", len(first))
    lat, lon = first[0].lat, first[0].lon
    d = 0.0015  # ≈ 165 m north-south, 145 m east-west
    polygon = [[lat - d, lon - d], [lat - d, lon + d], [lat + d, lon + d], [lat + d, lon - d]]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        created = await http.post("/v1/places", headers=bearer(ADMIN), json={
            "id": "drawn-lot", "kind": "second_pledge_lot", "name": "新画的二押点",
            "polygon": polygon,
        })  # fmt: skip
        assert created.status_code == 201, created.text
        listed = await http.get("/v1/places", headers=bearer(ADMIN),
                                params={"lat": lat, "lon": lon, "radius_m": 50})  # fmt: skip
        assert [p["id"] for p in listed.json()["items"]] == ["drawn-lot"]
        audit = (await http.get("/v1/places/audit", headers=bearer(ADMIN))).json()["items"]
        assert [(a["place_id"], a["action"], a["actor"]) for a in audit] == [
            ("drawn-lot", "create", "admin")
        ]
    await places_updates(stack, 2)  # the worker read it, still the same process
    later = [ping("L-draw-w", at(2, 9, 40) + dt.timedelta(minutes=m), 6.0, 10 + n,
                  speed_kmh=0.0, acc_on=False)
             for n, m in enumerate(range(0, 181, 10))]  # fmt: skip
    await stack.produce(later)

    def fired(alerts: list[AlertEvent]) -> bool:
        return any(a.rule_id == RULE and a.loan_id == "L-draw" for a in alerts)

    alerts = await stack.alerts(until=fired, timeout_s=120)
    mine = [a for a in alerts if a.rule_id == RULE and a.loan_id == "L-draw"]
    assert mine and mine[0].status == AlertStatus.FIRING, worker.log_tail()
    values = {e.get("name"): e.get("value") for e in mine[0].model_dump()["evidence"]}
    assert values["vehicle.risk_place_kind"] == "second_pledge_lot"
    # The stay counts from the first fix after the place reached the worker (09:40), not from
    # when the car parked (09:00): the rule's 2 h dwell is met at 11:40.
    assert abs(mine[0].started_at - at(2, 11, 40)) < dt.timedelta(seconds=1)
    assert worker.restarts == 0 and worker.proc is not None and worker.proc.poll() is None
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert "skipwatch_worker_risk_places 14.0" in metrics  # the 13 catalog places + the drawn one

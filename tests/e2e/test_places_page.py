"""Risk places in a real browser against the real API, Kafka, Redis and a running worker: an
admin draws a polygon around where a car is parked; the worker picks the place up without a
restart; the car, staying on, raises the risk-place alert, which appears in the queue.

Then a silence for the loan: the alert shows it is muted and by which silence.

Screenshots: places.png (the page with the drawn place), places-alert.png (the queue),
alert-silenced.png."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from services.kafka import ensure_topics
from services.settings import Settings
from tests.e2e.test_dashboard import chromium, running_api, screenshot, sign_in, wait_until
from tests.integration.conftest import Stack
from tests.integration.test_pipeline import wait_committed
from tests.scenarios import at, loan, ping

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
ADMIN = "e2e-admin-token-000000001"
VIEWER = "e2e-viewer-token-00000001"
RULE = "risk-place-dwell-overdue"
LOAN_ID = "L-e2e-draw"


async def worker_saw_places(stack: Stack, at_least: int) -> bool:
    stack.check_workers()
    text = stack.workers[0].log_path.read_text(errors="replace")
    return text.count("risk places updated") >= at_least


async def test_admin_draws_a_place_and_a_car_parked_inside_raises_the_alert(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, redis_prefix: str, tmp_path: Path
) -> None:
    await ensure_topics(kafka_bootstrap, topic_prefix, partitions=2)
    stack = Stack(kafka_bootstrap, topic_prefix, 2, tmp_path)
    settings = Settings.model_validate({
        "kafka": {"bootstrap_servers": kafka_bootstrap, "topic_prefix": topic_prefix,
                  "partitions": 2},
        "redis": {"url": redis_url, "key_prefix": redis_prefix},
        "auth": {"tokens": {ADMIN: "admin", VIEWER: "viewer"}},
        "api": {"map_tiles_url": "http://127.0.0.1:9/{z}/{x}/{y}.png"},  # tiles unreachable
    })  # fmt: skip
    parked = [ping(f"{LOAN_ID}-w", at(2, 9, m), 6.0, n, speed_kmh=0.0, acc_on=False)
              for n, m in enumerate(range(0, 40, 10))]  # fmt: skip
    lat, lon = parked[0].lat, parked[0].lon
    try:
        worker = stack.start_worker()
        await wait_until(lambda: worker_saw_places(stack, 1), 90)
        await stack.produce([loan(LOAN_ID)])
        await wait_committed(stack, "device-bindings", 1)
        await stack.produce(parked)
        async with running_api(settings) as base, chromium() as browser:
            page = await browser.new_page(viewport={"width": 1360, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            await sign_in(page, base, ADMIN)
            await page.locator("#nav a[href='#/places']").click()
            await expect(page.locator("#pl-rows tr")).to_have_count(13, timeout=30_000)
            await page.locator("#pl-new-polygon").click()
            # Centre the map on the car, then click four corners ≈ 150 m around it.
            await page.evaluate(
                "([lat, lon]) => document.getElementById('pl-map').swMap.setView([lat, lon], 16, { animate: false })",
                [lat, lon],
            )
            d = 0.0014
            for dlat, dlon in ((-d, -d), (-d, d), (d, d), (d, -d)):
                x, y = await page.evaluate(
                    "([lat, lon]) => { const p = document.getElementById('pl-map').swMap"
                    ".latLngToContainerPoint([lat, lon]); return [p.x, p.y]; }",
                    [lat + dlat, lon + dlon],
                )
                # relative to the map where it is at the click (the page may still be laying out)
                await page.locator("#pl-map").click(position={"x": x, "y": y})
            await expect(page.locator("#pl-map")).to_have_attribute("data-vertices", "4")
            await expect(page.locator("#pl-map path.sw-draft")).to_have_count(1)
            await page.locator("#pl-f-name").fill("新画的二押点")
            await page.locator("#pl-f-kind").select_option("second_pledge_lot")
            await page.locator("#pl-f-id").fill("e2e-lot")
            await page.locator("#pl-save").click()
            await expect(page.locator("tr[data-id='e2e-lot']")).to_be_visible(timeout=15_000)
            await expect(page.locator("#pl-map path.sw-place-second_pledge_lot")).not_to_have_count(
                0
            )
            await expect(page.locator("#pl-audit li").first).to_contain_text("e2e-lot")
            await screenshot(page, tmp_path, "places")

            # Without a mouse: a circle typed in, and a self-intersecting polygon refused with
            # the API's reason under the form.
            await page.locator("#pl-new-circle").click()
            await page.locator("#pl-f-name").fill("典当行（键盘输入）")
            await page.locator("#pl-f-kind").select_option("pawn_shop")
            await page.locator("#pl-f-id").fill("e2e-typed")
            await page.locator("#pl-f-radius").fill("80")
            await page.locator("#pl-f-lat").fill(str(lat + 0.01))
            await page.locator("#pl-f-lon").fill(str(lon))
            await page.locator("#pl-f-lon").press("Enter")  # submits the form
            await expect(page.locator("tr[data-id='e2e-typed']")).to_contain_text("80")
            await page.locator("#pl-new-polygon").click()
            await page.locator("#pl-f-name").fill("bowtie")
            bowtie = [(lat, lon), (lat + d, lon + d), (lat, lon + d), (lat + d, lon)]
            await page.locator("#pl-f-vertices").fill("\n".join(f"{a}, {b}" for a, b in bowtie))
            await expect(page.locator("#pl-map")).to_have_attribute("data-vertices", "4")
            await page.locator("#pl-save").click()
            await expect(page.locator("#pl-f-error")).to_contain_text("Self-intersection")
            await page.locator("#pl-cancel").click()
            await expect(page.locator("#pl-form")).to_be_hidden()

            admin = {"Authorization": f"Bearer {ADMIN}"}
            async with httpx.AsyncClient(base_url=base, headers=admin, timeout=30) as client:
                place = (await client.get("/v1/places/e2e-lot")).json()
                assert place["shape"] == "polygon" and len(place["polygon"]) == 4
                assert place["updated_by"] == "admin"
                # The drawn square holds the car: within ~10 m of each intended corner.
                for (plat, plon), (dlat, dlon) in zip(
                    place["polygon"], ((-d, -d), (-d, d), (d, d), (d, -d)), strict=True
                ):
                    assert abs(plat - (lat + dlat)) < 1e-4, (place["polygon"], lat, lon)
                    assert abs(plon - (lon + dlon)) < 1e-4, (place["polygon"], lat, lon)
                await wait_until(lambda: worker_saw_places(stack, 2), 60)
                staying = [
                    ping(f"{LOAN_ID}-w", at(2, 9, 40) + dt.timedelta(minutes=m), 6.0, 10 + n,
                         speed_kmh=0.0, acc_on=False)
                    for n, m in enumerate(range(0, 181, 10))
                ]  # fmt: skip
                await stack.produce(staying)

                async def fired() -> Any:
                    body = (await client.get("/v1/alerts", params={"loan": LOAN_ID})).json()
                    found = [a for a in body["items"] if a["rule_id"] == RULE]
                    if not found:
                        await asyncio.sleep(0.5)
                    return found[0] if found else None

                alert = await wait_until(fired, 120)
            assert worker.restarts == 0 and worker.proc is not None and worker.proc.poll() is None
            await page.locator("#nav a[href='#/']").click()
            row = page.locator(f"tr[data-id='{alert['id']}']")
            await expect(row).to_be_visible(timeout=30_000)
            await row.click()
            await expect(
                page.locator("#panel-map path.sw-place-second_pledge_lot")
            ).not_to_have_count(0, timeout=15_000)
            await screenshot(page, tmp_path, "places-alert")

            # A silence for the loan: the alert shows it is muted, and by which silence.
            async with httpx.AsyncClient(base_url=base, headers=admin, timeout=30) as client:
                created = await client.post("/v1/silences", json={
                    "matchers": [f'loan="{LOAN_ID}"'], "comment": "e2e: car being recovered",
                    "ends_at": (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat(),
                })  # fmt: skip
                assert created.status_code == 201, created.text
                sid = created.json()["id"]

                async def muted() -> bool:
                    body = (await client.get(f"/v1/alerts/{alert['id']}")).json()
                    if not body["silenced"]:
                        await asyncio.sleep(0.3)
                    return bool(body["silenced"]) and body["silenced_by"] == [sid]

                await wait_until(muted, 60)
            await row.click()
            await expect(page.locator("#silenced-by")).to_have_attribute("data-silences", sid)
            await screenshot(page, tmp_path, "alert-silenced")
            assert not errors, errors
            assert not [c for c in console if "Content Security Policy" in c], console
    finally:
        for process in stack.workers:
            process.stop()

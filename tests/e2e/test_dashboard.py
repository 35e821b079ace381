"""The dashboard in a real browser (Debian's Chromium via Playwright) against the real API,
projector, Kafka and Redis: sign in with a token, see an alert arrive live, open its evidence and
the loan's timeline, acknowledge it; a viewer sees masked personal data.

Screenshots go to the test's tmp dir (and to $SKIPWATCH_SCREENSHOT_DIR when set).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, Page, async_playwright, expect

from rules.events import AlertEvent, AlertStatus, Severity
from services import infra
from services.api import create_app
from services.kafka import ensure_topics
from services.settings import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_INSTALLED = Path(CHROMIUM).exists()
pytestmark = pytest.mark.e2e
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWER = "e2e-viewer-token-000000001"
OPERATOR = "e2e-operator-token-0000001"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def alert(n: int, **overrides: Any) -> AlertEvent:
    values: dict[str, Any] = {
        "alert_id": f"e2e-alert-{n}",
        "fingerprint": f"fp-{n}",
        "rule_id": "missed_payment_unreachable_out_of_region",
        "loan_id": "L-1001",
        "severity": Severity.CRITICAL,
        "status": AlertStatus.FIRING,
        "title": "失联预警：逾期 + 手机关机 + 车辆离开常驻地",
        "summary": "Missed payment, phone unreachable, car out of region (days_past_due=4)",
        "evidence": (
            {"kind": "state", "name": "payment.days_past_due", "value": 4},
            {"kind": "state", "name": "contact.consecutive_failures", "value": 5},
            {
                "kind": "state",
                "name": "vehicle.outside_home_region_for",
                "value": 93600.0,
                "unit": "s",
                "text": "1d 2h",
            },
            {"kind": "borrower", "name": "张三", "phone": "+8613800138000"},
            {
                "kind": "event",
                "topic": "contacts",
                "event_id": "call-7781",
                "what": "latest failed contact",
            },
            {
                "kind": "risk",
                "score": 87,
                "reasons": [
                    {"family": "payment", "code": "dpd", "points": 25, "detail": "4 days past due"},
                    {"family": "contact", "code": "off", "points": 22, "detail": "phone off"},
                ],
            },
        ),
        "risk_score": 87,
        "started_at": NOW - dt.timedelta(hours=3, minutes=n),
        "updated_at": NOW - dt.timedelta(hours=3, minutes=n),
        "event_time": NOW - dt.timedelta(hours=3, minutes=n),
        "location": {"lat": 30.6586, "lon": 104.0648},
    }
    values.update(overrides)
    return AlertEvent(**values)


LOAN = {
    "loan_id": "L-1001",
    "borrower": {"name": "张三", "phone": "+8613800138000"},
    "vehicle": {"vin": "LSVAU2180N2183294", "plate": "川A·8K2Q1"},
    "devices": [{"device_id": "dev-1001", "kind": "wired"}],
}


async def produce(bootstrap: str, records: list[tuple[str, str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send(topic, value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[str]:
    port = infra.free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    # A missing browser fails the test (never a skip): `make test` installs it (deploy/sysdeps.sh).
    assert CHROMIUM_INSTALLED, (
        "needs Debian's Chromium: deploy/sysdeps.sh or apt-get install chromium"
    )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    keep_copy(path)
    return path


def keep_copy(path: Path) -> None:
    extra = os.environ.get("SKIPWATCH_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)


async def sign_in(page: Page, base: str, token: str) -> None:
    await page.goto(base + "/")
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#live")).to_have_text("Live", timeout=30_000)


async def test_operator_sees_a_live_alert_opens_evidence_and_acks_it(
    kafka_bootstrap: str,
    redis_url: str,
    topic_prefix: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    await ensure_topics(kafka_bootstrap, topic_prefix, partitions=2)
    settings = Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": kafka_bootstrap, "topic_prefix": topic_prefix},
            "redis": {"url": redis_url, "key_prefix": redis_prefix},
            "auth": {"tokens": {VIEWER: "viewer", OPERATOR: "operator"}},
        }
    )
    payment = {
        "event_id": "pay-77", "loan_id": "L-1001", "ts": (NOW - dt.timedelta(days=4)).isoformat(),
        "type": "installment_due", "installment_no": 7, "amount": 4380.0,
    }  # fmt: skip
    contact = {
        "event_id": "call-7781", "loan_id": "L-1001", "ts": (NOW - dt.timedelta(hours=5)).isoformat(),
        "party": "borrower", "channel": "call", "outcome": "powered_off",
    }  # fmt: skip
    older = alert(
        2,
        alert_id="e2e-alert-older",
        loan_id="L-2002",
        severity=Severity.WARNING,
        rule_id="first_missed_payment_no_answer",
        title="First missed payment and nobody answers",
        risk_score=48,
        started_at=NOW - dt.timedelta(days=1, hours=2),
    )
    await produce(
        kafka_bootstrap,
        [
            (topic_prefix + "loans", "L-1001", orjson.dumps(LOAN)),
            (topic_prefix + "payments", "L-1001", orjson.dumps(payment)),
            (topic_prefix + "contacts", "L-1001", orjson.dumps(contact)),
            (topic_prefix + "alerts", older.loan_id, older.model_dump_json().encode()),
        ],
    )
    async with running_api(settings) as base, chromium() as browser:
        page = await browser.new_page(viewport={"width": 1360, "height": 820})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        await page.goto(base + "/")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await screenshot(page, tmp_path, "01-sign-in")
        await sign_in(page, base, OPERATOR)
        await expect(page.locator("tr[data-id='e2e-alert-older']")).to_be_visible(timeout=30_000)

        # Produced while the page is open: it must appear without a reload.
        fresh = alert(1)
        await produce(
            kafka_bootstrap,
            [(topic_prefix + "alerts", fresh.loan_id, fresh.model_dump_json().encode())],
        )
        row = page.locator(f"tr[data-id='{fresh.alert_id}']")
        await expect(row).to_be_visible(timeout=30_000)
        await expect(row).to_contain_text("失联预警")
        await expect(row).to_contain_text("critical")
        await screenshot(page, tmp_path, "02-live-alert")

        await row.get_by_role("button", name=fresh.title).click()
        panel = page.locator("#panel")
        await expect(panel.get_by_role("heading", name=fresh.title)).to_be_visible()
        evidence = panel.get_by_role("list", name="Evidence")
        await expect(evidence).to_contain_text("payment.days_past_due")
        await expect(evidence).to_contain_text("1d 2h")
        await expect(evidence).to_contain_text("4 days past due")
        timeline = panel.get_by_role("list", name="Loan timeline")
        await expect(timeline).to_contain_text("powered off")
        await expect(timeline).to_contain_text("installment due")
        await expect(panel).to_contain_text("张三")  # operators see the borrower in full

        await panel.get_by_role("button", name="Acknowledge").click()
        await expect(panel.locator(".facts .status")).to_have_text("acknowledged")
        await expect(row).to_contain_text("acknowledged")
        await screenshot(page, tmp_path, "03-acknowledged")
        await timeline.scroll_into_view_if_needed()
        await screenshot(page, tmp_path, "04-loan-timeline")
        assert errors == []

        async with httpx.AsyncClient(base_url=base) as client:
            stored = await client.get(
                f"/v1/alerts/{fresh.alert_id}", headers={"Authorization": f"Bearer {VIEWER}"}
            )
        assert stored.json()["status"] == "acknowledged"
        assert stored.json()["acknowledged"]["by"] == "operator"

        # A viewer: same alert, personal data masked, and acting is refused.
        viewer_page = await browser.new_page(viewport={"width": 1360, "height": 820})
        await sign_in(viewer_page, base, VIEWER)
        await viewer_page.locator("#f-status").select_option("acknowledged")
        viewer_row = viewer_page.locator(f"tr[data-id='{fresh.alert_id}']")
        await viewer_row.get_by_role("button", name=fresh.title).click()
        viewer_panel = viewer_page.locator("#panel")
        await expect(viewer_panel).to_contain_text("张* · +86138****8000")
        await expect(viewer_panel).not_to_contain_text("张三")
        await viewer_panel.get_by_role("button", name="Resolve").click()
        await expect(viewer_page.locator("#toast")).to_contain_text("read-only")
        await screenshot(viewer_page, tmp_path, "05-viewer-masked")

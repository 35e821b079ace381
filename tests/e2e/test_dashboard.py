"""The dashboard in a real browser (Debian's Chromium via Playwright) against the real API,
projector, Kafka and Redis: sign in with a token, see an alert arrive live, open it; its map
draws the track, the home region, risk places, the alert's location and both trackers' last
positions with no tile server reachable; replay the track; acknowledge (confirmed through the
API); the loan view; switch language and back (remembered); a viewer sees masked personal data
and no action buttons; the phone width.

Screenshots go to docs/screenshots/ (or $SKIPWATCH_SCREENSHOT_DIR) and the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, Page, async_playwright, expect

from rules.events import AlertEvent, AlertStatus, Severity
from services import infra
from services.api import create_app
from services.kafka import deadletter_headers, ensure_topics
from services.loan_status import LoanStatus
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
        "location": {"lat": LOT[0], "lon": LOT[1]},
    }
    values.update(overrides)
    return AlertEvent(**values)


LOT = (30.7142, 104.0335)  # cd-2p-001, a second-pledge lot in the shipped Chengdu catalogue
HOME = (30.6586, 104.0648)
LOAN = {
    "loan_id": "L-1001",
    "borrower": {"name": "张三", "phone": "+8613800138000"},
    "vehicle": {"vin": "LSVAU2180N2183294", "plate": "川A·8K2Q1"},
    "devices": [
        {"device_id": "dev-1001", "kind": "wired"},
        {"device_id": "dev-1002", "kind": "wireless"},
    ],
    "home_region": {"center": list(HOME), "radius_km": 3},
}


def pings() -> list[dict[str, Any]]:
    """Home at night, a 40-minute drive to the lot, parked there since: the wired tracker every
    30 s; the wireless one twice (cell-tower fixes)."""
    start = NOW - dt.timedelta(hours=8)
    out: list[dict[str, Any]] = []
    for n in range(8 * 120):
        at = start + dt.timedelta(seconds=30 * n)
        step = min(max(n - 240, 0), 80) / 80  # 0 before the drive, 1 after
        moving = 240 <= n < 320
        out.append({
            "event_id": f"dev-1001-{n}", "device_id": "dev-1001", "vendor": "e2e",
            "ts": at.isoformat(), "device_kind": "wired", "speed_kmh": 38.0 if moving else 0.0,
            # North first, then west: an L-shaped drive.
            "lat": HOME[0] + (LOT[0] - HOME[0]) * min(1.0, 2 * step),
            "lon": HOME[1] + (LOT[1] - HOME[1]) * max(0.0, 2 * step - 1),
        })  # fmt: skip
    for n, (lat, lon) in enumerate([HOME, (LOT[0] + 0.003, LOT[1] - 0.004)]):
        out.append({
            "event_id": f"dev-1002-{n}", "device_id": "dev-1002", "vendor": "e2e", "fix": "lbs",
            "ts": (start + dt.timedelta(hours=3 * n + 1)).isoformat(), "device_kind": "wireless",
            "lat": lat, "lon": lon,
        })  # fmt: skip
    return out


def status(loan_id: str, points: list[tuple[float, float, str]]) -> bytes:
    """A loan status as the worker publishes it (services/loan_status.py)."""
    return LoanStatus.model_validate({
        "loan_id": loan_id, "as_of": NOW,
        "signals": {"out_of_region": True, "offline": False, "at_risk_place": False,
                    "overdue": True, "days_past_due": 4, "unreachable": False, "risk_score": 87},
        "resident_points": [
            {"lat": lat, "lon": lon, "kind": kind, "parked_hours": 30.0,
             "night_hours": 20.0 if kind == "night" else 2.0,
             "day_hours": 10.0 if kind == "night" else 28.0}
            for lat, lon, kind in points
        ],
    }).model_dump_json().encode()  # fmt: skip


async def produce(
    bootstrap: str,
    records: list[tuple[str, str, bytes]],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send(topic, value, key=key.encode(), headers=headers)
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


SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def keep_copy(path: Path) -> None:
    folder = Path(os.environ.get("SKIPWATCH_SCREENSHOT_DIR") or SCREENSHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, folder / path.name)


async def sign_in(page: Page, base: str, token: str) -> None:
    await page.goto(base + "/")
    await page.locator("#token").fill(token)
    await page.locator("#login-form button[type=submit]").click()
    await expect(page.locator("#live")).to_have_attribute("data-state", "on", timeout=30_000)


def extent(svg_path: str | None) -> float:
    """The larger side (px) of the box around an SVG path's points."""
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", svg_path or "")]
    xs, ys = numbers[0::2], numbers[1::2]
    return max(max(xs) - min(xs), max(ys) - min(ys)) if xs else 0.0


async def wait_until(check: Any, timeout_s: float = 30.0) -> Any:
    async with asyncio.timeout(timeout_s):
        while not (result := await check()):
            await asyncio.sleep(0.25)
    return result


async def test_operator_sees_a_live_alert_on_a_map_replays_and_acks_it(
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
            # Nothing listens there: every tile fails, the map must draw on its plain background.
            "api": {"map_tiles_url": "http://127.0.0.1:9/{z}/{x}/{y}.png"},
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
        rule_id="first-missed-all-contacts-failing",
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
            *(
                (topic_prefix + "loan-status", loan_id, status(loan_id, points))
                for loan_id, points in (
                    ("L-1001", [(*HOME, "night"), (30.6700, 104.0600, "day")]),
                    ("L-2002", []),
                )
            ),
        ],
    )
    async with running_api(settings) as base, chromium() as browser:
        operator = {"Authorization": f"Bearer {OPERATOR}"}
        async with httpx.AsyncClient(base_url=base) as client:

            async def registered() -> bool:
                return (await client.get("/v1/loans/L-1001", headers=operator)).status_code == 200

            await wait_until(registered)
            await produce(
                kafka_bootstrap,
                [(topic_prefix + "gps.raw", p["device_id"], orjson.dumps(p)) for p in pings()],
            )

            previous: list[Any] = [None]

            async def tracked() -> Any:
                # Complete (both trackers' newest pings) and settled (the same twice in a row).
                body = (await client.get("/v1/loans/L-1001/track", headers=operator)).json()
                done = len(body.get("latest", [])) == 2
                done = done and body["latest"][0]["event_id"].endswith("-959")
                settled = done and body == previous[0]
                previous[0] = body
                if not settled:
                    await asyncio.sleep(1.0)
                return body if settled else None

            track = await wait_until(tracked)
        # 80 moving fixes (and the first stop), the parked hours thinned to one per 15 min.
        wired = [f for f in track["fixes"] if f["device_id"] == "dev-1001"]
        assert 80 < len(wired) < 120, len(wired)

        page = await browser.new_page(viewport={"width": 1360, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # The strict CSP must not block anything the page does (Leaflet sets styles through the
        # CSSOM, which CSP allows; inline style attributes would be refused and logged).
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)

        await page.goto(base + "/")
        # Chinese by default.
        await expect(page.locator("#login h1")).to_have_text("登录")
        await screenshot(page, tmp_path, "01-sign-in")
        await sign_in(page, base, OPERATOR)
        await expect(page.locator("tr[data-id='e2e-alert-older']")).to_be_visible(timeout=30_000)
        # Rule titles are translated by rule id.
        await expect(page.locator("tr[data-id='e2e-alert-older']")).to_contain_text(
            "首期逾期且所有联系人均无应答"
        )

        # Produced while the page is open: it must appear without a reload.
        fresh = alert(1, rule_id="long-dwell-second-pledge-lot")
        await produce(
            kafka_bootstrap,
            [(topic_prefix + "alerts", fresh.loan_id, fresh.model_dump_json().encode())],
        )
        row = page.locator(f"tr[data-id='{fresh.alert_id}']")
        await expect(row).to_be_visible(timeout=30_000)
        await expect(row).to_contain_text("在二押点长时间停留")
        await expect(row).to_contain_text("严重")
        await screenshot(page, tmp_path, "02-queue")

        await row.locator(".title-btn").click()
        panel = page.locator("#panel")
        await expect(panel.locator("h2")).to_have_text("在二押点长时间停留")
        # The rule's description in Chinese, from the rule file through GET /v1/rules.
        await expect(panel.locator(".rule-description")).to_contain_text(
            "已知二押点停留 6 小时以上"
        )
        await expect(panel.locator(".evidence")).to_contain_text("payment.days_past_due")
        await expect(panel.locator(".evidence")).to_contain_text("4 days past due")
        await expect(panel.locator(".timeline")).to_contain_text("powered off")
        await expect(panel).to_contain_text("张三")  # operators see the borrower in full

        # The map, drawn with every tile failing: assert on Leaflet's SVG layers.
        the_map = panel.locator("#panel-map")
        # The first draw waits for the places reader's replay (slow on a loaded machine).
        await expect(the_map.locator("path.sw-track")).to_have_count(2, timeout=30_000)
        await expect(the_map.locator("path.sw-home")).to_have_count(1)
        await expect(the_map.locator("path.sw-alert")).to_have_count(1)
        await expect(the_map.locator("path.sw-last")).to_have_count(2)
        await expect(the_map.locator("path.sw-last-wireless")).to_have_count(1)
        await expect(the_map.locator("path.sw-accuracy")).to_have_count(1)  # the LBS fix
        await expect(the_map.locator("path.sw-place-second_pledge_lot").first).to_be_attached()
        await expect(the_map.locator(".map-note")).to_be_visible()  # "tiles unavailable"
        # Last known positions as text: tracker kind, fix type and age.
        await expect(the_map.locator(".lastpos li[data-device='dev-1002']")).to_contain_text(
            "无线定位器 · 基站 · 4小时"
        )
        await expect(the_map.locator(".lastpos li[data-device='dev-1001']")).to_contain_text(
            "有线定位器 · GPS"
        )
        await expect(the_map.locator(".legend")).to_contain_text(f"{len(track['fixes'])} 个定位点")
        track_path = await the_map.locator("path.sw-track").first.get_attribute("d")
        assert extent(track_path) > 80  # a line across the map, not a dot

        # Replay: the slider runs to the end, the cursor moves and the played line grows.
        slider = the_map.locator("input[type=range]")
        maximum = int(await slider.get_attribute("max") or 0)
        assert maximum == len(wired) - 1
        cursor = the_map.locator("path.sw-cursor")
        before = await cursor.get_attribute("d")
        await the_map.locator(".replay button").click()
        await expect(slider).to_have_value(str(maximum), timeout=20_000)
        assert await cursor.get_attribute("d") != before
        played = await the_map.locator("path.sw-played").get_attribute("d")
        assert extent(played) == extent(track_path)  # played to the end: the whole drive
        await panel.locator("#panel-map").scroll_into_view_if_needed()
        await screenshot(page, tmp_path, "03-alert-with-map")

        await panel.locator("[data-action=ack]").click()
        await expect(panel.locator(".facts .status").first).to_have_text("已确认")
        await expect(row).to_contain_text("已确认")
        async with httpx.AsyncClient(base_url=base) as client:
            stored = await client.get(
                f"/v1/alerts/{fresh.alert_id}", headers={"Authorization": f"Bearer {VIEWER}"}
            )
        assert stored.json()["status"] == "acknowledged"
        assert stored.json()["acknowledged"]["by"] == "operator"

        # Switch to English and back; the choice survives a reload.
        await page.locator("#lang").click()
        await expect(page.locator("#alerts-heading")).to_have_text("Alerts")
        await expect(row).to_contain_text("Long stay at a second-pledge lot")
        await expect(panel.locator(".rule-description")).to_contain_text("known 二押点 for 6 h")
        await expect(panel.locator("[data-action=ack]")).to_have_text("Acknowledge")
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await page.reload()
        await expect(page.locator("#alerts-heading")).to_have_text("Alerts", timeout=30_000)
        await page.locator("#lang").click()
        await expect(page.locator("#alerts-heading")).to_have_text("告警")

        # The published WGS-84 -> GCJ-02 transform (wandergis/coordtransform's test vector),
        # identity outside China.
        shifted = await page.evaluate(
            "import('/static/map.js').then(m => [m.wgs84ToGcj02(39.915, 116.404),"
            " m.wgs84ToGcj02(48.8566, 2.3522)])"
        )
        assert shifted[0] == pytest.approx([39.91640428150164, 116.41024449916938], abs=1e-9)
        assert shifted[1] == [48.8566, 2.3522]

        # The loan view: the big map and the replay, stopped half way; the resident points of
        # the loan's status (`<prefix>loan-status`, produced above as a worker would).
        await page.goto(f"{base}/#/loan/L-1001")
        loan_map = page.locator("#loan-map")
        await expect(loan_map.locator("path.sw-track")).to_have_count(2, timeout=30_000)
        await expect(loan_map.locator("path.sw-home")).to_have_count(1)
        await expect(loan_map.locator("path.sw-resident-night")).to_have_count(1)
        await expect(loan_map.locator("path.sw-resident-day")).to_have_count(1)
        await loan_map.locator("input[type=range]").fill(str(maximum // 2))
        await expect(loan_map.locator(".cursor-text")).to_contain_text("km/h")
        await screenshot(page, tmp_path, "04-loan-track-replay")

        # The overview: its figures are the API's counts for the same data. Two records
        # dead-lettered (as a worker does) count on it too.
        await produce(
            kafka_bootstrap,
            [(topic_prefix + "deadletter", f"dl-{n}", b"{}") for n in range(2)],
            headers=deadletter_headers("invalid", topic_prefix + "payments", "e2e"),
        )
        await page.locator("#nav a[href='#/overview']").click()
        await expect(page.locator("[data-figure=open-total]")).to_be_visible(timeout=30_000)
        async with httpx.AsyncClient(base_url=base, headers=operator) as client:
            listed = {
                status: (await client.get("/v1/alerts", params={"status": status})).json()["items"]
                for status in ("firing", "acknowledged", "silenced")
            }
            local = dt.datetime.now(ZoneInfo("Asia/Shanghai"))
            midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
            window = {
                "since": midnight.isoformat(),
                "until": (midnight + dt.timedelta(days=1)).isoformat(),
            }
            today = (await client.get("/v1/alerts", params=window)).json()["items"]
        opened = [a for items in listed.values() for a in items]
        figures = {
            "open-total": len(opened),
            "open-critical": sum(a["severity"] == "critical" for a in opened),
            "open-warning": sum(a["severity"] == "warning" for a in opened),
            "status-firing": len(listed["firing"]),
            "status-acknowledged": len(listed["acknowledged"]),
            "ack-count": 1,
            # Both loans' statuses: 4 days past due, out of the home region.
            "signal-overdue": 2,
            "signal-out_of_region": 2,
            "signal-at_risk_place": 0,
        }
        assert figures["open-total"] == 2 and figures["status-acknowledged"] == 1
        for key, value in figures.items():
            await expect(page.locator(f"[data-figure='{key}']")).to_have_text(str(value))
        await expect(page.locator(f"[data-day='{midnight.date().isoformat()}']")).to_have_text(
            str(len(today))
        )
        await expect(page.locator(".overview table").last).to_contain_text("L-1001")
        # Dead letters and failed deliveries (read from Kafka) as the API counts them.
        await expect(page.locator("[data-figure='deadletter-total']")).to_be_visible(timeout=45_000)
        async with httpx.AsyncClient(base_url=base, headers=operator) as client:
            failures = (await client.get("/v1/overview/failures")).json()
        assert failures["dead_letters"]["by_reason"] == {"invalid": {"total": 2, "last_24h": 2}}
        for key, value in {
            "deadletter-total": failures["dead_letters"]["total"],
            "deadletter-24h": failures["dead_letters"]["last_24h"],
            "delivery-dead": failures["deliveries"]["dead"]["total"],
            "delivery-failed": failures["deliveries"]["failed"]["total"],
        }.items():
            await expect(page.locator(f"[data-figure='{key}']")).to_have_text(str(value))
        await expect(page.locator("[data-reason='invalid']")).to_have_text("2")
        await screenshot(page, tmp_path, "07-overview")

        # The queue: filter by label (with counts), keyboard selection, bulk acknowledge.
        bulk = [
            alert(n, alert_id=f"e2e-bulk-{n}", loan_id="L-3003", rule_id="tracker-power-cut",
                  labels={"team": "recovery"}, severity=Severity.WARNING, risk_score=60 + n)
            for n in (3, 4)
        ]  # fmt: skip
        await produce(
            kafka_bootstrap,
            [(topic_prefix + "alerts", a.loan_id, a.model_dump_json().encode()) for a in bulk],
        )
        await page.locator("#nav a[href='#/']").click()
        for a in bulk:
            await expect(page.locator(f"tr[data-id='{a.alert_id}']")).to_be_visible(timeout=30_000)
        await expect(page.locator("#q-label option[value='team=recovery']")).to_have_text(
            "team=recovery (2)"
        )
        await page.locator("#q-label").select_option("team=recovery")
        await expect(page.locator("#rows tr")).to_have_count(2)
        await page.locator("#q-sort").select_option("risk")
        await expect(page.locator("#rows tr").first).to_have_attribute("data-id", "e2e-bulk-4")
        await page.locator("#alerts-heading").focus()
        for key in ("j", "x", "j", "x"):
            await page.keyboard.press(key)
        await expect(page.locator("#bulk [data-checked]")).to_have_attribute("data-checked", "2")
        await screenshot(page, tmp_path, "08-queue-bulk")
        await page.locator("#bulk [data-bulk=ack]").click()
        await expect(page.locator("#bulk")).to_be_hidden()
        async with httpx.AsyncClient(base_url=base, headers=operator) as client:
            for a in bulk:

                async def acked(alert_id: str = a.alert_id) -> bool:
                    got = (await client.get(f"/v1/alerts/{alert_id}")).json()
                    return bool(got["status"] == "acknowledged")

                await wait_until(acked, 10)
        await page.keyboard.press("k")
        await page.keyboard.press("Enter")
        await expect(page.locator("#panel h2")).to_have_text("定位器断电")

        assert errors == []
        blocked = [m for m in console if "Content Security Policy" in m]
        assert blocked == []
        # The only console errors are the tiles that could not be fetched.
        assert all(
            "ERR_CONNECTION_REFUSED" in m or "Failed to load resource" in m for m in console
        ), console

        # A viewer: masked personal data, no action buttons.
        viewer_page = await browser.new_page(viewport={"width": 1360, "height": 900})
        await sign_in(viewer_page, base, VIEWER)
        await viewer_page.locator("#f-status").select_option("acknowledged")
        viewer_row = viewer_page.locator(f"tr[data-id='{fresh.alert_id}']")
        await viewer_row.locator(".title-btn").click()
        viewer_panel = viewer_page.locator("#panel")
        await expect(viewer_panel).to_contain_text("张* · +86138****8000")
        await expect(viewer_panel).not_to_contain_text("张三")
        await expect(viewer_panel.locator("#panel-map path.sw-track")).to_have_count(2)
        await expect(viewer_panel.locator("[data-action]")).to_have_count(0)
        await screenshot(viewer_page, tmp_path, "05-viewer-masked")

        # A phone's width: the queue and the alert stack, the map still draws.
        phone = await browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
        await sign_in(phone, base, OPERATOR)
        await phone.locator(f"tr[data-id='{fresh.alert_id}'] .title-btn").click()
        await expect(phone.locator("#panel-map path.sw-track")).to_have_count(2)
        width = await phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways at phone width ({width}px)"
        await screenshot(phone, tmp_path, "06-phone")

        # Server-side filters and counts over more than a page (last, so the other screenshots
        # keep a short queue): 130 older alerts and, older still, the only alert of its rule.
        # The first page (100 rows) does not hold it; the rule filter's count is the API's, and
        # choosing it lists exactly that alert.
        filler = [
            alert(n, alert_id=f"e2e-fill-{n:03d}", loan_id=f"L-9{n:03d}", rule_id="offline-7d",
                  severity=Severity.INFO, risk_score=5, started_at=NOW - dt.timedelta(days=2, minutes=n))
            for n in range(130)
        ]  # fmt: skip
        needle = alert(
            999, alert_id="e2e-needle", loan_id="L-9999", rule_id="needle-rule",
            severity=Severity.INFO, risk_score=1, started_at=NOW - dt.timedelta(days=3),
        )  # fmt: skip
        await produce(
            kafka_bootstrap,
            [
                (topic_prefix + "alerts", a.loan_id, a.model_dump_json().encode())
                for a in [*filler, needle]
            ],
        )
        open_params = [("status", "firing"), ("status", "acknowledged")]
        async with httpx.AsyncClient(base_url=base, headers=operator) as client:

            async def projected() -> dict[str, Any] | None:
                body = (await client.get("/v1/alerts/facets", params=open_params)).json()
                # Every produced alert projected (the alerts topic's partitions are read at
                # their own pace: the needle can be in before some of the filler).
                done = body["rule"].get("needle-rule") == 1
                return body if done and body["rule"].get("offline-7d", 0) >= len(filler) else None

            facets = await wait_until(projected, 30)
        assert facets["total"] > 100
        await page.locator("#q-label").select_option("")
        await page.locator("#q-sort").select_option("severity")
        await expect(page.locator("#counts [data-total]")).to_have_attribute(
            "data-total", str(facets["total"])
        )
        await expect(page.locator("#rows tr")).to_have_count(100)
        await expect(page.locator("#more")).to_be_visible()
        await expect(page.locator("tr[data-id='e2e-needle']")).to_have_count(0)
        rule_option = page.locator("#q-rule option[value='needle-rule']")
        await expect(rule_option).to_have_attribute(
            "data-count", str(facets["rule"]["needle-rule"])
        )
        fill_option = page.locator("#q-rule option[value='offline-7d']")
        await expect(fill_option).to_have_attribute("data-count", str(facets["rule"]["offline-7d"]))
        await page.locator("#q-rule").select_option("needle-rule")
        await expect(page.locator("#rows tr")).to_have_count(1)
        await expect(page.locator("#rows tr").first).to_have_attribute("data-id", "e2e-needle")
        await expect(page.locator("#counts [data-total]")).to_have_attribute("data-total", "1")
        await screenshot(page, tmp_path, "09-queue-server-filter")
        await page.locator("#q-rule").select_option("")
        await expect(page.locator("#rows tr")).to_have_count(100)
        await page.locator("#more").click()
        await expect(page.locator("#rows tr")).to_have_count(facets["total"])
        await expect(page.locator("#more")).to_be_hidden()
        await expect(page.locator("#rows tr").last).to_have_attribute("data-id", "e2e-needle")
        assert errors == []

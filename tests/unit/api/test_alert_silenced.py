"""`silenced` / `silenced_by` on an alert: the active notification silences matching it now."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest

from rules.events import Severity
from services.api import create_app
from services.api.dedup import MemoryDedup
from services.api.silence_watch import SilenceWatch
from services.notify.records import SilenceRecord
from tests.unit.api.support import VIEWER, FakeProducer, bearer, make_settings
from tests.unit.api.test_alerts_api import FakeView, alert, seed

pytestmark = pytest.mark.unit
NOW = dt.datetime.now(dt.UTC)


def silence(sid: str, matchers: list[str], start_h: float, end_h: float) -> SilenceRecord:
    return SilenceRecord(
        id=sid, matchers=matchers, starts_at=NOW + dt.timedelta(hours=start_h),
        ends_at=NOW + dt.timedelta(hours=end_h), created_by="operator", comment="c",
        created_at=NOW - dt.timedelta(hours=2),
    )  # fmt: skip


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, FakeView]]:
    settings = make_settings()
    silences = {
        s.id: s
        for s in (
            silence("sil_" + "a" * 24, ['loan="L1"'], -1, 1),
            silence("sil_" + "b" * 24, ["severity=~crit.*"], -2, 1),
            silence("sil_" + "c" * 24, ['loan="L2"'], -3, -1),  # expired
            silence("sil_" + "d" * 24, ['loan="L2"'], 1, 2),  # not started
        )
    }
    view = FakeView()
    app = create_app(settings, producer=FakeProducer(), dedup=MemoryDedup(), alert_view=view,
                     silence_watch=SilenceWatch(settings, fixed=silences))  # fmt: skip
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            yield http, view


async def test_alert_shows_the_silences_muting_it(
    client: tuple[httpx.AsyncClient, FakeView],
) -> None:
    http, view = client
    await seed(view, alert(1, loan_id="L1", severity=Severity.CRITICAL), alert(2, loan_id="L2"))
    one = (await http.get("/v1/alerts/a1", headers=bearer(VIEWER))).json()
    assert one["severity"] == "critical"
    assert one["silenced"] is True
    assert one["silenced_by"] == ["sil_" + "b" * 24, "sil_" + "a" * 24]  # oldest first
    two = (await http.get("/v1/alerts/a2", headers=bearer(VIEWER))).json()
    assert (two["silenced"], two["silenced_by"]) == (False, [])  # L2's: expired, not started
    listed = (await http.get("/v1/alerts", headers=bearer(VIEWER))).json()["items"]
    assert {a["id"]: a["silenced_by"] for a in listed} == {
        "a1": one["silenced_by"], "a2": two["silenced_by"],
    }  # fmt: skip


async def test_unknown_until_the_silences_are_read() -> None:
    watch = SilenceWatch(make_settings())
    assert watch.muting(alert(1), NOW) is None  # not started: nothing read
    assert watch.items() is None

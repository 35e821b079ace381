"""A silence created through the API shows on the alert it mutes (`silenced`, `silenced_by`),
read back from the real `notify.silences` topic; expiring it clears the flag."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest

from rules.events import Severity
from services.api import create_app
from services.api.dedup import MemoryDedup
from services.kafka import ensure_topics
from services.notify.state import ensure_notify_topics
from services.settings import Settings
from tests.unit.api.support import OPERATOR, VIEWER, FakeProducer, bearer
from tests.unit.api.test_alerts_api import alert

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_silence_shows_on_the_alert_and_expiry_clears_it(
    kafka_bootstrap: str, topic_prefix: str, redis_url: str, redis_prefix: str
) -> None:
    settings = Settings.model_validate({
        "kafka": {"bootstrap_servers": kafka_bootstrap, "topic_prefix": topic_prefix,
                  "partitions": 2},
        "redis": {"url": redis_url, "key_prefix": redis_prefix},
        "auth": {"tokens": {OPERATOR: "operator", VIEWER: "viewer"}},
    })  # fmt: skip
    await ensure_topics(kafka_bootstrap, topic_prefix, 2)
    await ensure_notify_topics(settings)
    app = create_app(settings, producer=FakeProducer(), dedup=MemoryDedup(), projector=False)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        view = app.state.alert_view
        for n, loan in ((1, "L-muted"), (2, "L-other")):
            await view.apply(alert(n, loan_id=loan, severity=Severity.CRITICAL, started_at=now,
                                   updated_at=now, event_time=now))  # fmt: skip

        async def both(until: Any) -> dict[str, dict[str, Any]]:
            async with asyncio.timeout(60):
                while True:
                    items = (await http.get("/v1/alerts", headers=bearer(VIEWER))).json()["items"]
                    got = {a["loan_id"]: a for a in items}
                    if until(got):
                        return got
                    await asyncio.sleep(0.2)

        before = await both(lambda g: all(a["silenced"] is not None for a in g.values()))
        assert [a["silenced"] for a in before.values()] == [False, False]
        created = await http.post("/v1/silences", headers=bearer(OPERATOR), json={
            "matchers": ['loan="L-muted"'], "comment": "customer in hospital",
            "ends_at": (now + dt.timedelta(hours=2)).isoformat(),
        })  # fmt: skip
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        muted = await both(lambda g: g["L-muted"]["silenced"])
        assert muted["L-muted"]["silenced_by"] == [sid]
        assert muted["L-other"]["silenced"] is False
        one = (await http.get("/v1/alerts/a1", headers=bearer(VIEWER))).json()
        assert (one["silenced"], one["silenced_by"]) == (True, [sid])
        expired = await http.post(f"/v1/silences/{sid}/expire", headers=bearer(OPERATOR))
        assert expired.status_code == 200
        after = await both(lambda g: g["L-muted"]["silenced"] is False)
        assert after["L-muted"]["silenced_by"] == []

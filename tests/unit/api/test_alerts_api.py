"""Alert routes on a fake view: filters, cursors, roles, actions published to Kafka, masking."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from rules.events import AlertEvent, AlertStatus, Severity
from services.alert_index import (
    OPEN_STATUSES,
    PLAIN,
    AlertQuery,
    Display,
    Facets,
    Sort,
    facets,
    search,
)
from services.api import create_app
from services.api.dedup import MemoryDedup
from services.loan_status import SIGNALS, LoanStatus
from services.store import AlertPage, AlertRecord, LoanSummary, TimelineEntry, merge
from tests.unit.api.support import (
    ADMIN,
    OPERATOR,
    VENDOR_KEY,
    VIEWER,
    FakeProducer,
    bearer,
    make_settings,
)

pytestmark = pytest.mark.unit

T0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)


def alert(n: int = 1, **overrides: Any) -> AlertEvent:
    values: dict[str, Any] = {
        "alert_id": f"a{n}",
        "fingerprint": f"fp{n}",
        "rule_id": "skip_seed",
        "loan_id": "L1",
        "severity": Severity.WARNING,
        "status": AlertStatus.FIRING,
        "title": "失联预警",
        "summary": "borrower phone +8613800138000 powered off",
        "evidence": (
            {"kind": "state", "name": "contact.consecutive_failures", "value": 4},
            {"kind": "borrower", "name": "张三", "phone": "+8613800138000"},
            {"kind": "event", "topic": "contacts", "event_id": "c-13800138000x", "what": "call"},
        ),
        "risk_score": 60,
        "started_at": T0 + dt.timedelta(minutes=n),
        "updated_at": T0 + dt.timedelta(minutes=n),
        "event_time": T0 + dt.timedelta(minutes=n),
    }
    values.update(overrides)
    return AlertEvent(**values)


@dataclass
class FakeView:
    """The view's contract over a dict, using the real merge rules."""

    records: dict[str, AlertRecord] = field(default_factory=dict)
    loans: dict[str, LoanSummary] = field(default_factory=dict)
    timelines: dict[str, list[TimelineEntry]] = field(default_factory=dict)
    applied: list[AlertEvent] = field(default_factory=list)
    statuses: dict[str, LoanStatus] = field(default_factory=dict)

    async def get(self, alert_id: str) -> AlertRecord | None:
        return self.records.get(alert_id)

    async def apply(self, event: AlertEvent) -> AlertRecord | None:
        self.applied.append(event)
        record = merge(self.records.get(event.alert_id), event)
        if record is not None:
            self.records[event.alert_id] = record
        return record

    async def list_alerts(
        self,
        query: AlertQuery,
        *,
        now: dt.datetime,
        sort: Sort = Sort.NEWEST,
        cursor: str | None = None,
        limit: int = 50,
        display: Display = PLAIN,
    ) -> AlertPage:
        metas = [r.meta() for r in self.records.values()]
        page = search(metas, query, now=now, sort=sort, cursor=cursor, limit=limit, display=display)
        return AlertPage([self.records[i] for i in page.ids], page.next_cursor, page.total)

    async def facets(
        self, query: AlertQuery, *, now: dt.datetime, display: Display = PLAIN
    ) -> Facets:
        metas = [r.meta() for r in self.records.values()]
        if query.open_only:  # what the Redis view reads
            metas = [m for m in metas if m.is_open]
            return facets(metas, query, now=now, display=display, statuses=OPEN_STATUSES)
        return facets(metas, query, now=now, display=display)

    async def loan_summary(self, loan_id: str) -> LoanSummary | None:
        return self.loans.get(loan_id)

    async def timeline(self, loan_id: str, *, limit: int = 200) -> list[TimelineEntry]:
        return self.timelines.get(loan_id, [])[:limit]

    @asynccontextmanager
    async def changes(self) -> AsyncIterator[AsyncIterator[AlertRecord]]:
        async def nothing() -> AsyncIterator[AlertRecord]:
            return
            yield

        yield nothing()

    async def signal_counts(self) -> dict[str, int]:
        flags = [status.flags() for status in self.statuses.values()]
        return {name: sum(name in f for f in flags) for name in SIGNALS}

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


@dataclass
class ViewApi:
    client: httpx.AsyncClient
    view: FakeView
    producer: FakeProducer


@pytest.fixture
async def view_api() -> AsyncIterator[ViewApi]:
    view, producer = FakeView(), FakeProducer()
    app = create_app(make_settings(), producer=producer, dedup=MemoryDedup(), alert_view=view)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield ViewApi(client, view, producer)


async def seed(view: FakeView, *events: AlertEvent) -> None:
    for event in events:
        await view.apply(event)
    view.applied.clear()


async def test_list_filters_and_paginates(view_api: ViewApi) -> None:
    await seed(
        view_api.view,
        *(alert(n, severity=Severity.CRITICAL if n % 2 else Severity.WARNING) for n in range(1, 8)),
        alert(9, loan_id="L2", rule_id="tracker_cut"),
    )
    client = view_api.client
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, "severity": "critical"}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/alerts", params=params, headers=bearer(VIEWER))).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a7", "a5", "a3", "a1"]
    by_loan = await client.get("/v1/alerts", params={"loan": "L2"}, headers=bearer(VIEWER))
    assert [a["id"] for a in by_loan.json()["items"]] == ["a9"]
    by_rule = await client.get("/v1/alerts", params={"rule": "tracker_cut"}, headers=bearer(VIEWER))
    assert [a["id"] for a in by_rule.json()["items"]] == ["a9"]


async def test_list_rejects_bad_cursor_and_naive_times(view_api: ViewApi) -> None:
    client = view_api.client
    bad = await client.get("/v1/alerts", params={"cursor": "zzz"}, headers=bearer(VIEWER))
    assert bad.status_code == 422 and bad.json()["field"] == "cursor"
    naive = await client.get(
        "/v1/alerts", params={"since": "2024-05-01T08:00:00"}, headers=bearer(VIEWER)
    )
    assert naive.status_code == 422 and naive.json()["field"] == "since"
    status = await client.get("/v1/alerts", params={"status": "open"}, headers=bearer(VIEWER))
    assert status.status_code == 422


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-Api-Key": VENDOR_KEY}, 403), (bearer("not-a-known-token-at-all"), 401)],
)
async def test_reads_need_a_user_token(
    view_api: ViewApi, headers: dict[str, str], status: int
) -> None:
    await seed(view_api.view, alert())
    for path in ("/v1/alerts", "/v1/alerts/a1", "/v1/alerts/stream", "/v1/loans/L1"):
        assert (await view_api.client.get(path, headers=headers)).status_code == status, path


async def test_viewer_sees_masked_personal_data_operator_does_not(view_api: ViewApi) -> None:
    await seed(view_api.view, alert())
    viewer = (await view_api.client.get("/v1/alerts/a1", headers=bearer(VIEWER))).json()
    person = viewer["evidence"][1]
    assert person == {"kind": "borrower", "name": "张*", "phone": "+86138****8000"}
    assert viewer["summary"] == "borrower phone +86138****8000 powered off"
    # Signal names and ids are not personal data and stay as they are.
    assert viewer["evidence"][0]["name"] == "contact.consecutive_failures"
    assert viewer["evidence"][2]["event_id"] == "c-13800138000x"
    assert viewer["title"] == "失联预警"
    operator = (await view_api.client.get("/v1/alerts/a1", headers=bearer(OPERATOR))).json()
    assert operator["evidence"][1]["name"] == "张三"
    assert operator["evidence"][1]["phone"] == "+8613800138000"


async def test_ack_publishes_to_kafka_then_changes_the_view(view_api: ViewApi) -> None:
    await seed(view_api.view, alert())
    response = await view_api.client.post("/v1/alerts/a1/ack", headers=bearer(OPERATOR))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "acknowledged"
    assert body["acknowledged"]["by"] == "operator"
    sent = view_api.producer.on("alerts")
    assert len(sent) == 1 and sent[0].key == b"L1"
    published = AlertEvent.model_validate_json(sent[0].value)
    assert published.status is AlertStatus.ACKNOWLEDGED
    assert published.labels["skipwatch/action"] == "ack"
    assert view_api.view.applied == [published]
    # A repeat is a no-op: no second event.
    again = await view_api.client.post("/v1/alerts/a1/ack", headers=bearer(ADMIN))
    assert again.status_code == 200 and again.json()["status"] == "acknowledged"
    assert len(view_api.producer.on("alerts")) == 1
    listed = await view_api.client.get(
        "/v1/alerts", params={"status": "acknowledged"}, headers=bearer(VIEWER)
    )
    assert [a["id"] for a in listed.json()["items"]] == ["a1"]


async def test_actions_need_an_operator(view_api: ViewApi) -> None:
    await seed(view_api.view, alert())
    for path, body in (
        ("ack", None),
        ("resolve", None),
        ("assign", {"assignee": "c7"}),
        ("snooze", {"minutes": 5}),
    ):
        for headers in (bearer(VIEWER), {"X-Api-Key": VENDOR_KEY}):
            response = await view_api.client.post(
                f"/v1/alerts/a1/{path}", json=body, headers=headers
            )
            assert response.status_code == 403, (path, response.text)
    assert view_api.producer.sent == []


async def test_kafka_down_means_503_and_no_change(view_api: ViewApi) -> None:
    await seed(view_api.view, alert())
    view_api.producer.hang = True
    response = await view_api.client.post("/v1/alerts/a1/resolve", headers=bearer(OPERATOR))
    assert response.status_code == 503
    assert view_api.view.applied == []
    record = await view_api.view.get("a1")
    assert record is not None and record.ops is None


async def test_assign_resolve_and_conflicts(view_api: ViewApi) -> None:
    await seed(view_api.view, alert())
    client = view_api.client
    assigned = await client.post(
        "/v1/alerts/a1/assign", json={"assignee": "华东催收组"}, headers=bearer(OPERATOR)
    )
    assert assigned.json()["assigned"]["assignee"] == "华东催收组"
    assert assigned.json()["status"] == "firing"
    resolved = await client.post("/v1/alerts/a1/resolve", headers=bearer(OPERATOR))
    assert resolved.json()["status"] == "resolved"
    assert resolved.json()["resolved"]["by"] == "operator"
    conflict = await client.post("/v1/alerts/a1/ack", headers=bearer(OPERATOR))
    assert conflict.status_code == 409 and conflict.json()["error"] == "conflict"
    missing = await client.post("/v1/alerts/nope/ack", headers=bearer(OPERATOR))
    assert missing.status_code == 404
    bad = await client.post("/v1/alerts/a1/assign", json={"assignee": " "}, headers=bearer(ADMIN))
    assert bad.status_code == 422
    statuses = [
        AlertEvent.model_validate_json(s.value).status for s in view_api.producer.on("alerts")
    ]
    assert statuses == [AlertStatus.FIRING, AlertStatus.RESOLVED]


async def test_snooze_validation_and_effect(view_api: ViewApi) -> None:
    await seed(view_api.view, alert())
    client = view_api.client
    for body in ({}, {"minutes": 5, "until": "2030-01-01T00:00:00+08:00"}, {"minutes": 0},
                 {"until": "2030-01-01T00:00:00"}, {"until": "2020-01-01T00:00:00+00:00"}):  # fmt: skip
        response = await client.post("/v1/alerts/a1/snooze", json=body, headers=bearer(OPERATOR))
        assert response.status_code == 422, body
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).replace(microsecond=0)
    response = await client.post(
        "/v1/alerts/a1/snooze",
        content=orjson.dumps({"until": until.isoformat()}),
        headers={**bearer(OPERATOR), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "silenced"
    assert dt.datetime.fromisoformat(response.json()["silenced_until"]) == until


async def test_unknown_alert_is_404(view_api: ViewApi) -> None:
    response = await view_api.client.get("/v1/alerts/nope", headers=bearer(VIEWER))
    assert response.status_code == 404 and response.json()["error"] == "not_found"


async def test_openapi_lists_the_alert_routes(view_api: ViewApi) -> None:
    paths = (await view_api.client.get("/openapi.json")).json()["paths"]
    for path in (
        "/v1/alerts",
        "/v1/alerts/stream",
        "/v1/alerts/{alert_id}",
        "/v1/alerts/{alert_id}/ack",
        "/v1/alerts/{alert_id}/assign",
        "/v1/alerts/{alert_id}/resolve",
        "/v1/alerts/{alert_id}/snooze",
        "/v1/loans/{loan_id}/timeline",
    ):
        assert path in paths, path
    assert "get" in paths["/v1/loans/{loan_id}"] and "put" in paths["/v1/loans/{loan_id}"]


async def test_dashboard_is_served_with_a_strict_policy(view_api: ViewApi) -> None:
    page = await view_api.client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "失联预警" in page.text
    script = await view_api.client.get("/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert (await view_api.client.get("/static/../app.py")).status_code == 404
    assert (await view_api.client.get("/static/secrets.txt")).status_code == 404


@pytest.mark.parametrize(
    ("assignee", "for_viewer"),
    [
        ("collector 13800138000", "collector 138****8000"),
        ("王 +86 138-0013-8000", "王 +86138****8000"),
        ("华东催收组", "华东催收组"),
        ("collector-07", "collector-07"),
    ],
)
async def test_viewers_see_phone_numbers_in_assignees_masked(
    view_api: ViewApi, assignee: str, for_viewer: str
) -> None:
    await seed(view_api.view, alert())
    client = view_api.client
    response = await client.post(
        "/v1/alerts/a1/assign", json={"assignee": assignee}, headers=bearer(OPERATOR)
    )
    assert response.json()["assigned"]["assignee"] == assignee
    as_operator = (await client.get("/v1/alerts/a1", headers=bearer(OPERATOR))).json()
    assert as_operator["assigned"]["assignee"] == assignee
    for path in ("/v1/alerts/a1", "/v1/alerts"):
        body = (await client.get(path, headers=bearer(VIEWER))).json()
        shown = body if path.endswith("a1") else body["items"][0]
        assert shown["assigned"]["assignee"] == for_viewer, path

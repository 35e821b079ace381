"""`GET /v1/alerts` filters and sorts and `GET /v1/alerts/facets` over HTTP (fake view): the
query parameters, their 422s in the one error shape, masking, and the OpenAPI document."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from rules.events import AlertStatus, Severity
from tests.unit.api.support import OPERATOR, VIEWER, bearer
from tests.unit.api.test_alerts_api import T0, ViewApi, alert, seed, view_api

pytestmark = pytest.mark.unit
__all__ = ["view_api"]  # the fixture


async def _queue(view_api: ViewApi) -> None:
    await seed(
        view_api.view,
        alert(1, rule_id="tracker-cut", severity=Severity.CRITICAL, risk_score=90),
        alert(2, rule_id="long-dwell", risk_score=30, labels={"team": "recovery"}),
        alert(3, rule_id="long-dwell", risk_score=70, labels={"team": "collections"}),
        alert(4, rule_id="offline", severity=Severity.INFO, risk_score=10, loan_id="L9"),
        alert(5, rule_id="tracker-cut", status=AlertStatus.RESOLVED, risk_score=50),
    )
    assign = await view_api.client.post(
        "/v1/alerts/a3/assign", json={"assignee": "张三 13800138000"}, headers=bearer(OPERATOR)
    )
    assert assign.status_code == 200
    ack = await view_api.client.post("/v1/alerts/a2/ack", headers=bearer(OPERATOR))
    assert ack.status_code == 200


async def _ids(view_api: ViewApi, params: Any, token: str = OPERATOR) -> list[str]:
    response = await view_api.client.get("/v1/alerts", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["items"])
    return [a["id"] for a in body["items"]]


async def test_filters_repeat_and_combine(view_api: ViewApi) -> None:
    await _queue(view_api)
    assert await _ids(view_api, [("rule", "tracker-cut"), ("rule", "offline")]) == [
        "a5",
        "a4",
        "a1",
    ]
    assert await _ids(view_api, [("status", "firing"), ("status", "acknowledged")]) == [
        "a4",
        "a3",
        "a2",
        "a1",
    ]
    assert await _ids(view_api, {"assignee": "unassigned", "rule": "long-dwell"}) == ["a2"]
    assert await _ids(view_api, {"assignee": "张三 13800138000"}) == ["a3"]
    assert await _ids(view_api, [("label", "team=recovery"), ("label", "team=collections")]) == [
        "a3",
        "a2",
    ]
    assert await _ids(view_api, {"label": "team=recovery", "status": "firing"}) == []
    assert await _ids(view_api, {"severity": "info", "loan": "L9"}) == ["a4"]
    since = (T0 + dt.timedelta(minutes=2)).isoformat()
    until = (T0 + dt.timedelta(minutes=4)).isoformat()
    assert await _ids(view_api, {"since": since, "until": until}) == ["a3", "a2"]


async def test_sorts(view_api: ViewApi) -> None:
    await _queue(view_api)
    assert await _ids(view_api, {"sort": "-risk_score"}) == ["a1", "a3", "a5", "a2", "a4"]
    assert await _ids(view_api, {"sort": "risk_score"}) == ["a4", "a2", "a5", "a3", "a1"]
    # Severity, ties newest first.
    assert await _ids(view_api, {"sort": "-severity"}) == ["a1", "a5", "a3", "a2", "a4"]
    assert await _ids(view_api, {"sort": "started_at"}) == ["a1", "a2", "a3", "a4", "a5"]


async def test_pages_keep_sort_and_total(view_api: ViewApi) -> None:
    await _queue(view_api)
    seen: list[str] = []
    params: dict[str, Any] = {"sort": "-risk_score", "limit": 2}
    while True:
        response = await view_api.client.get("/v1/alerts", params=params, headers=bearer(VIEWER))
        body = response.json()
        assert body["total"] == 5
        seen += [a["id"] for a in body["items"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == ["a1", "a3", "a5", "a2", "a4"]
    other = await view_api.client.get(
        "/v1/alerts", params={"cursor": params["cursor"]}, headers=bearer(VIEWER)
    )
    assert other.status_code == 422 and other.json()["field"] == "cursor"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sort": "age"}, "sort"),
        ({"severity": "bad"}, "severity"),
        ({"status": "open"}, "status"),
        ({"label": "team"}, "label"),
        ({"label": "=x"}, "label"),
        ({"rule": "x" * 129}, "rule"),
        ({"limit": 501}, "limit"),
        ({"limit": 0}, "limit"),
        ({"since": "2026-05-01T08:00:00"}, "since"),
        ({"since": "2026-05-02T08:00:00Z", "until": "2026-05-01T08:00:00Z"}, "until"),
        ({"until": "yesterday"}, "until"),
        ({"cursor": "zzz"}, "cursor"),
    ],
)
async def test_bad_parameters_are_422_naming_the_field(
    view_api: ViewApi, params: dict[str, Any], field: str
) -> None:
    for path in ("/v1/alerts", "/v1/alerts/facets"):
        if field in ("sort", "limit", "cursor") and path.endswith("facets"):
            continue  # parameters of the list only
        response = await view_api.client.get(path, params=params, headers=bearer(VIEWER))
        assert response.status_code == 422, (path, params)
        body = response.json()
        assert body["error"] == "invalid_request"
        # FastAPI's own checks say `query.<name>[.<index>]`, the route's own `<name>`.
        assert field in body["field"].split("."), body


async def test_facets_count_over_the_view_and_mask_for_viewers(view_api: ViewApi) -> None:
    await _queue(view_api)
    client = view_api.client
    params = [("status", "firing"), ("status", "acknowledged"), ("rule", "long-dwell")]
    as_operator = await client.get("/v1/alerts/facets", params=params, headers=bearer(OPERATOR))
    body = as_operator.json()
    assert body["total"] == 2
    assert body["rule"] == {"long-dwell": 2, "tracker-cut": 1, "offline": 1}  # rule filter left out
    assert body["status"] == {"firing": 1, "acknowledged": 1, "silenced": 0}  # resolved not read
    every = await client.get("/v1/alerts/facets", headers=bearer(OPERATOR))
    assert every.json()["status"] == {"firing": 3, "acknowledged": 1, "resolved": 1, "silenced": 0}
    assert body["severity"] == {"info": 0, "warning": 2, "critical": 0}
    assert body["assignee"] == {"unassigned": 1, "张三 13800138000": 1}
    assert body["label"]["team"] == {"recovery": 1, "collections": 1}
    viewer = (await client.get("/v1/alerts/facets", params=params, headers=bearer(VIEWER))).json()
    assert viewer["assignee"] == {"unassigned": 1, "张三 138****8000": 1}
    # A facet value works as a filter for whoever saw it.
    masked = {"assignee": "张三 138****8000"}
    assert await _ids(view_api, masked, token=VIEWER) == ["a3"]
    assert await _ids(view_api, masked, token=OPERATOR) == []


async def test_unassigned_is_reserved(view_api: ViewApi) -> None:
    await _queue(view_api)
    response = await view_api.client.post(
        "/v1/alerts/a1/assign", json={"assignee": "Unassigned"}, headers=bearer(OPERATOR)
    )
    assert response.status_code == 422 and response.json()["field"] == "body.assignee"


async def test_facets_in_openapi_with_a_response_model(view_api: ViewApi) -> None:
    spec = (await view_api.client.get("/openapi.json")).json()
    route = spec["paths"]["/v1/alerts/facets"]["get"]
    ref = route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert {"total", "rule", "severity", "status", "assignee", "label"} <= set(schema["required"])
    names = {p["name"] for p in route["parameters"]}
    assert {"rule", "severity", "status", "assignee", "label", "loan", "since", "until"} <= names
    listing = {p["name"] for p in spec["paths"]["/v1/alerts"]["get"]["parameters"]}
    assert names | {"sort", "cursor", "limit"} == listing

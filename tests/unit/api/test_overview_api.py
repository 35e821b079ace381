"""`GET /v1/overview` on the fake view: every figure equals what `/v1/alerts` lists."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rules.events import AlertStatus, Severity
from services.api.overview import percentile
from services.loan_status import LoanStatus
from tests.unit.api.support import OPERATOR, VENDOR_KEY, VIEWER, bearer
from tests.unit.api.test_alerts_api import ViewApi, alert, seed, view_api

pytestmark = pytest.mark.unit
__all__ = ["view_api"]

SHANGHAI = ZoneInfo("Asia/Shanghai")


def state(name: str, value: Any) -> dict[str, Any]:
    return {"kind": "state", "name": name, "value": value}


async def listed(view_api: ViewApi, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await view_api.client.get("/v1/alerts", params=query, headers=bearer(VIEWER))
        ).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def loan_status(loan_id: str, at: dt.datetime, **flags: Any) -> LoanStatus:
    signals = {
        "out_of_region": False, "offline": False, "at_risk_place": False, "overdue": False,
        "days_past_due": 0, "unreachable": False, "risk_score": 10, **flags,
    }  # fmt: skip
    return LoanStatus.model_validate(
        {"loan_id": loan_id, "as_of": at, "signals": signals, "resident_points": []}
    )


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 90) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(n) for n in range(1, 11)], 90) == 9.0


async def test_overview_figures_match_the_alert_list(view_api: ViewApi) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    hours = [1, 2, 5, 26, 30, 50, 75, 24 * 20]
    specs = [
        dict(severity=Severity.CRITICAL, rule_id="r-place", loan_id="L1", risk_score=90,
             evidence=(state("vehicle.at_risk_place", True), state("payment.days_past_due", 3))),
        dict(severity=Severity.WARNING, rule_id="r-place", loan_id="L2", risk_score=55,
             evidence=(state("vehicle.outside_home_region", True),)),
        dict(severity=Severity.CRITICAL, rule_id="r-offline", loan_id="L3", risk_score=80,
             evidence=(state("device.all_offline", True), state("payment.days_past_due", 0))),
        dict(severity=Severity.INFO, rule_id="r-info", loan_id="L1", risk_score=20,
             evidence=(state("vehicle.outside_home_region_for", 7200.0),)),
        dict(severity=Severity.WARNING, rule_id="r-offline", loan_id="L4", risk_score=60,
             status=AlertStatus.RESOLVED, evidence=(state("device.offline.wired", True),)),
        dict(severity=Severity.WARNING, rule_id="r-place", loan_id="L5", risk_score=40, evidence=()),
        dict(severity=Severity.CRITICAL, rule_id="r-x", loan_id="L6", risk_score=70, evidence=()),
        dict(severity=Severity.WARNING, rule_id="r-x", loan_id="L7", risk_score=10, evidence=()),
    ]  # fmt: skip
    events = []
    for n, (h, spec) in enumerate(zip(hours, specs, strict=True), start=1):
        at = now - dt.timedelta(hours=h)
        events.append(alert(n, started_at=at, updated_at=at, event_time=at, **spec))
    await seed(view_api.view, *events)
    client = view_api.client
    for alert_id in ("a1", "a3"):
        assert (
            await client.post(f"/v1/alerts/{alert_id}/ack", headers=bearer(OPERATOR))
        ).is_success
    snooze = await client.post(
        "/v1/alerts/a6/snooze", json={"minutes": 60}, headers=bearer(OPERATOR)
    )
    assert snooze.is_success

    for loan_id, flags in {
        "L1": {"at_risk_place": True, "overdue": True, "days_past_due": 3},
        "L2": {"out_of_region": True},
        "L3": {"offline": True, "unreachable": True},
        "L4": {},
        "L9": {"out_of_region": True, "overdue": True, "days_past_due": 1},
    }.items():
        view_api.view.statuses[loan_id] = loan_status(loan_id, now, **flags)
    body = (await client.get("/v1/overview", headers=bearer(VIEWER))).json()
    assert body["truncated"] is False

    opened = []
    for status in ("firing", "acknowledged", "silenced"):
        items = await listed(view_api, status=status)
        assert body["open_by_status"][status] == len(items)
        opened += items
    assert body["open_total"] == len(opened) == 7
    for severity in ("critical", "warning", "info"):
        assert body["open_by_severity"][severity] == sum(a["severity"] == severity for a in opened)
    rules = {r["rule_id"]: r["count"] for r in body["open_by_rule"]}
    assert rules == {"r-place": 3, "r-offline": 1, "r-info": 1, "r-x": 2}
    assert body["open_by_rule"][0]["rule_id"] == "r-place"

    assert len(body["per_day"]) == 14
    for day in body["per_day"]:
        start = dt.datetime.combine(dt.date.fromisoformat(day["date"]), dt.time(), SHANGHAI)
        items = await listed(
            view_api, since=start.isoformat(), until=(start + dt.timedelta(days=1)).isoformat()
        )
        # The fake view ignores since/until (the Redis view applies them): filter here.
        items = [
            a
            for a in items
            if start <= dt.datetime.fromisoformat(a["started_at"]) < start + dt.timedelta(days=1)
        ]
        assert day["count"] == len(items), day
    assert sum(d["count"] for d in body["per_day"]) == 7  # the 20-day-old one is outside

    ack = body["time_to_ack"]
    assert ack["count"] == 2
    assert ack["p50_s"] == pytest.approx(3600, abs=30)  # a1: started 1 h before its ack
    assert ack["p90_s"] == pytest.approx(5 * 3600, abs=30)  # a3: 5 h

    # From the worker's loan statuses, loans without an open alert (L9) included.
    assert body["loans_by_signal"] == {
        "out_of_region": 2,  # L2, L9
        "offline": 1,  # L3
        "at_risk_place": 1,  # L1
        "overdue": 2,  # L1, L9
        "unreachable": 1,  # L3
    }
    worst = body["worst_loans"]
    assert [w["loan_id"] for w in worst] == ["L1", "L3", "L6", "L2", "L5", "L7"]
    assert worst[0] == {
        "loan_id": "L1", "risk_score": 90, "severity": "critical", "open_alerts": 2,
        "rule_id": "r-place",
    }  # fmt: skip


async def test_overview_checks(view_api: ViewApi) -> None:
    client = view_api.client
    bad = await client.get("/v1/overview", params={"tz": "Mars/Olympus"}, headers=bearer(VIEWER))
    assert bad.status_code == 422 and bad.json()["field"] == "tz"
    assert (
        await client.get("/v1/overview", params={"days": 0}, headers=bearer(VIEWER))
    ).status_code == 422
    assert (await client.get("/v1/overview")).status_code == 401
    assert (await client.get("/v1/overview", headers={"X-Api-Key": VENDOR_KEY})).status_code == 403
    empty = (await client.get("/v1/overview", params={"days": 3}, headers=bearer(VIEWER))).json()
    assert empty["open_total"] == 0 and len(empty["per_day"]) == 3
    assert empty["time_to_ack"] == {"count": 0, "p50_s": None, "p90_s": None}

"""Loan read routes on a fake view: summary, masking for viewers, timeline, 404."""

from __future__ import annotations

import datetime as dt

import pytest

from rules.events import AlertStatus, Loan, Severity
from services.store import LoanSummary, TimelineEntry, merge
from tests.unit.api.support import OPERATOR, VENDOR_KEY, VIEWER, bearer
from tests.unit.api.test_alerts_api import T0, ViewApi, alert, view_api

pytestmark = pytest.mark.unit
__all__ = ["view_api"]  # the fixture, re-used

LOAN = Loan.model_validate(
    {
        "loan_id": "L1",
        "borrower": {"name": "张三", "phone": "+8613800138000"},
        "vehicle": {"vin": "LSVAU2180N2183294", "plate": "川A·12345"},
        "devices": [{"device_id": "dev-1", "kind": "wired"}],
    }
)


def summary() -> LoanSummary:
    firing = merge(None, alert(1, risk_score=55))
    critical = merge(None, alert(2, risk_score=90, severity=Severity.CRITICAL))
    assert firing is not None and critical is not None
    return LoanSummary(
        loan_id="L1",
        loan=LOAN,
        open_alerts=[firing, critical],
        risk_score=90,
        last_event_at=T0,
        alert_count=3,
    )


async def test_loan_summary_masks_for_viewers(view_api: ViewApi) -> None:
    view_api.view.loans["L1"] = summary()
    viewer = (await view_api.client.get("/v1/loans/L1", headers=bearer(VIEWER))).json()
    assert viewer["borrower"] == {"name": "张*", "phone": "+86138****8000"}
    assert viewer["vehicle"]["plate"] == "川A·12345"
    assert viewer["risk_score"] == 90
    assert [a["id"] for a in viewer["open_alerts"]] == ["a2", "a1"]  # most severe first
    assert viewer["open_alerts"][0]["evidence"][1]["name"] == "张*"
    operator = (await view_api.client.get("/v1/loans/L1", headers=bearer(OPERATOR))).json()
    assert operator["borrower"] == {"name": "张三", "phone": "+8613800138000"}


async def test_unknown_loan_is_404_and_vendor_keys_are_refused(view_api: ViewApi) -> None:
    response = await view_api.client.get("/v1/loans/nope", headers=bearer(VIEWER))
    assert response.status_code == 404
    timeline = await view_api.client.get("/v1/loans/nope/timeline", headers=bearer(VIEWER))
    assert timeline.status_code == 404
    vendor = await view_api.client.get("/v1/loans/L1", headers={"X-Api-Key": VENDOR_KEY})
    assert vendor.status_code == 403


async def test_timeline_newest_first_and_masked(view_api: ViewApi) -> None:
    view_api.view.loans["L1"] = summary()
    view_api.view.timelines["L1"] = [
        TimelineEntry(
            ts=T0 + dt.timedelta(hours=1),
            kind="alert",
            data={"alert_id": "a1", "status": AlertStatus.FIRING.value, "title": "失联预警"},
        ),
        TimelineEntry(
            ts=T0,
            kind="contact",
            data={"event_id": "c1", "outcome": "powered_off", "phone": "13800138000"},
        ),
    ]
    body = (await view_api.client.get("/v1/loans/L1/timeline", headers=bearer(VIEWER))).json()
    assert [i["kind"] for i in body["items"]] == ["alert", "contact"]
    assert body["items"][1]["data"]["phone"] == "138****8000"
    limited = await view_api.client.get(
        "/v1/loans/L1/timeline", params={"limit": 1}, headers=bearer(VIEWER)
    )
    assert len(limited.json()["items"]) == 1

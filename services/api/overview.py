"""`GET /v1/overview`: the portfolio at a glance, computed from the same view `/v1/alerts` lists.

Open alerts by severity, status and rule; alerts started per day; time to acknowledge; loans by
current signal; the worst loans by risk score. Every figure is a count over what
`GET /v1/alerts` returns for the matching filter (a test compares them), read through the same
`AlertView.list_alerts`, so it works on any view and never disagrees with the list.

Loans by current signal (out of region, offline, at a risk place, overdue, unreachable) count
the worker's **loan statuses** (`<prefix>loan-status`, projected into the view): every loan the
worker holds, with or without an open alert.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from rules.events import AlertStatus, Severity
from services.alert_index import AlertQuery
from services.api.alerts import AlertViewDep, utcnow
from services.api.deps import ViewerPrincipal
from services.api.errors import InvalidRequest
from services.api.schemas import ErrorBody
from services.store import AlertRecord, AlertView

router = APIRouter(prefix="/v1", tags=["alerts"])
# Alerts one overview reads at most per question (open alerts; alerts of the window).
BUDGET = 50_000
WORST = 10
OPEN = (AlertStatus.FIRING, AlertStatus.ACKNOWLEDGED, AlertStatus.SILENCED)


class RuleCount(BaseModel):
    rule_id: str
    count: int
    by_severity: dict[str, int]


class DayCount(BaseModel):
    date: dt.date
    count: int
    by_severity: dict[str, int]


class AckTimes(BaseModel):
    count: int = Field(description="Alerts started in the window that were acknowledged.")
    p50_s: float | None
    p90_s: float | None


class WorstLoan(BaseModel):
    loan_id: str
    risk_score: int
    severity: Severity
    open_alerts: int
    rule_id: str = Field(description="The rule of its highest-scored open alert.")


class OverviewOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    generated_at: dt.datetime
    timezone: str
    days: int
    open_total: int
    open_by_severity: dict[str, int]
    open_by_status: dict[str, int]
    open_by_rule: list[RuleCount] = Field(description="Most open alerts first.")
    per_day: list[DayCount] = Field(description="Alerts started per local day, oldest first.")
    time_to_ack: AckTimes = Field(description="started_at → first ack in force, in seconds.")
    loans_by_signal: dict[str, int] = Field(
        description="Loans whose current status (the worker's, `<prefix>loan-status`) shows "
        "the signal: out_of_region, offline, at_risk_place, overdue, unreachable."
    )
    worst_loans: list[WorstLoan]
    truncated: bool = Field(description="A question hit the budget; figures are lower bounds.")


async def _collect(
    view: AlertView, query: AlertQuery, now: dt.datetime
) -> tuple[list[AlertRecord], bool]:
    # One read of at most BUDGET records: each list call reads the view's search index once.
    page = await view.list_alerts(query, now=now, limit=BUDGET)
    return page.items, page.next_cursor is not None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _severities(counter: Counter[str]) -> dict[str, int]:
    return {s.value: counter.get(s.value, 0) for s in Severity}


@router.get(
    "/overview",
    summary="Open alerts, alerts per day, time to acknowledge, loans by signal, worst loans",
    response_model=OverviewOut,
    responses={
        401: {"model": ErrorBody, "description": "No credential or an unknown one."},
        403: {"model": ErrorBody, "description": "Vendor ingest keys may not read alerts."},
        422: {"model": ErrorBody, "description": "A bad time zone or number of days."},
    },
)
async def overview(
    who: ViewerPrincipal,
    view: AlertViewDep,
    days: Annotated[
        int, Query(ge=1, le=90, description="Days of `per_day` and `time_to_ack`.")
    ] = 14,
    tz: Annotated[
        str, Query(max_length=64, description="IANA zone of the days.")
    ] = "Asia/Shanghai",
) -> OverviewOut:
    """Figures over the alert view (see the module notes): `open_*` count what
    `GET /v1/alerts?status=firing|acknowledged|silenced` lists; `per_day` what
    `GET /v1/alerts?since=<local midnight>&until=<next midnight>` lists; `time_to_ack` is over
    alerts started in the last `days` days whose ack is in force."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"unknown IANA time zone {tz!r}", field="tz") from None
    now = utcnow()
    truncated = False

    open_records, cut = await _collect(view, AlertQuery(statuses=frozenset(OPEN)), now)
    truncated |= cut
    by_status = Counter(r.status(now).value for r in open_records)
    by_severity = Counter(r.base.severity.value for r in open_records)
    rules: dict[str, Counter[str]] = defaultdict(Counter)
    for r in open_records:
        rules[r.base.rule_id][r.base.severity.value] += 1
    by_rule = sorted(
        (
            RuleCount(rule_id=rule, count=sum(c.values()), by_severity=_severities(c))
            for rule, c in rules.items()
        ),
        key=lambda rc: (-rc.count, rc.rule_id),
    )

    today = now.astimezone(zone).date()
    first = today - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(first, dt.time(), zone)
    recent, cut = await _collect(view, AlertQuery(since=since), now)
    truncated |= cut
    day_counts: dict[dt.date, Counter[str]] = {
        first + dt.timedelta(days=i): Counter() for i in range(days)
    }
    ack_s: list[float] = []
    for r in recent:
        day = r.base.started_at.astimezone(zone).date()
        if day in day_counts:
            day_counts[day][r.base.severity.value] += 1
        ops = r.ops_in_force()
        if ops is not None and ops.acknowledged is not None:
            ack_s.append(max(0.0, (ops.acknowledged.at - r.base.started_at).total_seconds()))

    worst: dict[str, list[AlertRecord]] = defaultdict(list)
    for r in open_records:
        worst[r.base.loan_id].append(r)
    ranked = []
    for loan_id, records in worst.items():
        top = max(records, key=lambda r: (r.base.risk_score, r.base.severity.rank))
        ranked.append(
            WorstLoan(
                loan_id=loan_id,
                risk_score=top.base.risk_score,
                severity=max((r.base.severity for r in records), key=lambda s: s.rank),
                open_alerts=len(records),
                rule_id=top.base.rule_id,
            )
        )
    ranked.sort(key=lambda w: (-w.risk_score, -w.severity.rank, w.loan_id))

    return OverviewOut(
        generated_at=now,
        timezone=tz,
        days=days,
        open_total=len(open_records),
        open_by_severity=_severities(by_severity),
        open_by_status={s.value: by_status.get(s.value, 0) for s in OPEN},
        open_by_rule=by_rule,
        per_day=[
            DayCount(date=d, count=sum(c.values()), by_severity=_severities(c))
            for d, c in sorted(day_counts.items())
        ],
        time_to_ack=AckTimes(
            count=len(ack_s), p50_s=percentile(ack_s, 50), p90_s=percentile(ack_s, 90)
        ),
        loans_by_signal=await view.signal_counts(),
        worst_loans=ranked[:WORST],
        truncated=truncated,
    )

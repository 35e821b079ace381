"""Loan read routes (DESIGN §6): a loan's state summary and its timeline, from the Redis view.

(`PUT /v1/loans/{loan_id}`, which writes a loan, is an ingest route: services/api/ingest.py.)
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from services.api.alerts import AlertViewDep, masked_for, utcnow
from services.api.deps import ViewerPrincipal
from services.api.errors import NotFound
from services.api.schemas import ErrorBody
from services.api.views import LoanOut, TimelineOut, loan_out, timeline_out

router = APIRouter(prefix="/v1", tags=["loans"])

LoanId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No credential or an unknown one."},
    403: {"model": ErrorBody, "description": "Vendor ingest keys may not read loans."},
    404: {"model": ErrorBody, "description": "The view knows no loan or alert with this id."},
}


@router.get(
    "/loans/{loan_id}",
    summary="A loan's state: borrower, vehicle, risk score, open alerts",
    response_model=LoanOut,
    responses=_ERRORS,
)
async def get_loan(loan_id: LoanId, who: ViewerPrincipal, view: AlertViewDep) -> LoanOut:
    """The loan as registered (borrower name and phone masked for viewers), the highest risk
    score among its open alerts, the open alerts (most severe first) and the newest event time."""
    summary = await view.loan_summary(loan_id)
    if summary is None:
        raise NotFound(f"no loan {loan_id!r}", field="loan_id")
    return loan_out(summary, now=utcnow(), masked=masked_for(who))


@router.get(
    "/loans/{loan_id}/timeline",
    summary="What happened to a loan, newest first",
    response_model=TimelineOut,
    responses=_ERRORS,
)
async def get_timeline(
    loan_id: LoanId,
    who: ViewerPrincipal,
    view: AlertViewDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> TimelineOut:
    """Alert changes (worker and operators), payments, contact attempts and vehicle positions,
    ordered by event time. Capped per loan (`api.timeline_cap`, default the newest 200); pings
    are sampled to every alarm plus one position per device per `api.timeline_ping_interval_s`."""
    summary = await view.loan_summary(loan_id)
    entries = await view.timeline(loan_id, limit=limit)
    if summary is None and not entries:
        raise NotFound(f"no loan {loan_id!r}", field="loan_id")
    return timeline_out(loan_id, entries, masked=masked_for(who))

"""Loan read routes (DESIGN §6): a loan's state summary, its timeline and its track, from the
Redis view.

(`PUT /v1/loans/{loan_id}`, which writes a loan, is an ingest route: services/api/ingest.py.)
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.api.alerts import AlertViewDep, masked_for, utcnow
from services.api.deps import SettingsDep, ViewerPrincipal
from services.api.errors import InvalidRequest, NotFound, ServiceUnavailable
from services.api.schemas import ErrorBody
from services.api.views import LoanOut, TimelineOut, loan_out, timeline_out
from services.track import TrackFix, TrackView

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


# --- track --------------------------------------------------------------------------------------

DEFAULT_TRACK_WINDOW = dt.timedelta(hours=72)
MAX_TRACK_WINDOW = dt.timedelta(days=31)


class FixOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    ts: AwareDatetime = Field(description="Event time of the fix.")
    lat: float = Field(description="WGS-84 latitude, as the tracker reported it.")
    lon: float = Field(description="WGS-84 longitude.")
    speed_kmh: float | None
    heading: float | None
    fix: str = Field(
        description="How the position was found: `gps` (~10 m), `wifi` (~50 m), `lbs` (cell "
        "towers, ~0.5-2 km) or `none` (the tracker's last position, repeated)."
    )
    acc_on: bool | None = Field(description="Ignition on, when the tracker reports it.")
    device_id: str
    device_kind: str = Field(description="`wired` or `wireless` tracker.")
    alarms: list[str]
    event_id: str


class TrackOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    loan_id: str
    from_: AwareDatetime = Field(alias="from", serialization_alias="from")
    to: AwareDatetime
    fixes: list[FixOut] = Field(
        description="Oldest first: every moving fix and alarm, one per "
        "`api.track_parked_interval_s` (15 min) while parked."
    )
    latest: list[FixOut] = Field(
        description="Each tracker's newest ping (whatever the window): last known positions."
    )
    truncated: bool = Field(description="The window held more than `limit` fixes: the newest.")
    retention_h: float = Field(description="How far behind its newest fix a track is kept.")
    max_fixes: int = Field(description="Most fixes kept per loan.")


def _fix_out(fix: TrackFix) -> FixOut:
    return FixOut(**fix.as_json())


def get_track_view(request: Request) -> TrackView:
    view: TrackView | None = request.app.state.track_view
    if view is None:
        raise ServiceUnavailable("this API process keeps no loan tracks")
    return view


@router.get(
    "/loans/{loan_id}/track",
    summary="Where a loan's car has been: fixes to replay, and each tracker's last position",
    response_model=TrackOut,
    response_model_by_alias=True,
    responses=_ERRORS | {422: {"model": ErrorBody, "description": "A bad window."}},
)
async def get_track(
    loan_id: LoanId,
    who: ViewerPrincipal,
    view: AlertViewDep,
    request: Request,
    settings: SettingsDep,
    from_: Annotated[
        dt.datetime | None,
        Query(alias="from", description="Start (RFC 3339 with offset); default `to` - 72 h."),
    ] = None,
    to: Annotated[
        dt.datetime | None,
        Query(description="End (inclusive); default the loan's newest fix (else now)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> TrackOut:
    """The loan's track in `[from, to]`, oldest first. Positions are WGS-84 as reported and are
    not masked for viewers (DESIGN §6 masks names and phone numbers; the position is what the
    risk desk works with). Kept per loan for `api.track_retention_h` (168 h) behind its newest
    fix and at most `api.track_max_fixes` (5000) fixes; rebuilt from `<prefix>gps.raw` with the
    rest of the view."""
    track_view = get_track_view(request)
    for name, value in (("from", from_), ("to", to)):
        if value is not None and value.tzinfo is None:
            raise InvalidRequest(f"{name} must carry a UTC offset (RFC 3339)", field=name)
    newest = await track_view.newest(loan_id)
    if newest is None and await view.loan_summary(loan_id) is None:
        raise NotFound(f"no loan {loan_id!r}", field="loan_id")
    end = to or newest or utcnow()
    start = from_ or end - DEFAULT_TRACK_WINDOW
    if start >= end:
        raise InvalidRequest("`from` must be before `to`", field="from")
    if end - start > MAX_TRACK_WINDOW:
        raise InvalidRequest("the window may span at most 31 days", field="from")
    track = await track_view.track(loan_id, start, end, limit=limit)
    return TrackOut.model_validate(
        {
            "loan_id": loan_id,
            "from": start,
            "to": end,
            "fixes": [_fix_out(f) for f in track.fixes],
            "latest": [_fix_out(f) for f in track.latest],
            "truncated": track.truncated,
            "retention_h": settings.api.track_retention_h,
            "max_fixes": settings.api.track_max_fixes,
        }
    )

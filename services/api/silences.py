"""Silences (DESIGN §6): `/v1/silences` — mute notifications of alerts whose labels match, for a
while. Kept in the compacted `<prefix>notify.silences` topic; the dispatcher reads it. Reading
needs a viewer, creating and expiring an operator (silencing is acting on alerts)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.api.alerts import AlertViewDep
from services.api.deps import OperatorPrincipal, ViewerPrincipal
from services.api.errors import InvalidRequest, NotFound
from services.api.notify_state import NotifyStateDep
from services.api.schemas import ErrorBody
from services.notify import service
from services.notify.records import SilenceRecord
from services.notify.routing import alert_labels

router = APIRouter(prefix="/v1", tags=["silences"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No credential or an unknown one."},
    403: {"model": ErrorBody, "description": "Reading needs a viewer, changing an operator."},
    404: {"model": ErrorBody, "description": "No such silence."},
    422: {"model": ErrorBody, "description": "Invalid matchers or times."},
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SilenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matchers: list[str] = Field(
        min_length=1,
        description='Label matchers, all must match: `loan="L-1"`, `rule!=x`, `team=~"coll.*"`, '
        '`region!~"华北"`. Labels: the rule\'s labels plus severity, rule, loan, status.',
    )
    starts_at: AwareDatetime | None = Field(None, description="Default: now.")
    ends_at: AwareDatetime
    comment: str = Field(min_length=1, max_length=1000)


class SilenceOut(BaseModel):
    id: str
    matchers: list[str]
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    created_by: str
    comment: str
    created_at: AwareDatetime
    state: str = Field(description="pending (not started), active or expired.")

    @classmethod
    def of(cls, record: SilenceRecord, now: dt.datetime) -> SilenceOut:
        if now < record.starts_at:
            state = "pending"
        elif now < record.ends_at:
            state = "active"
        else:
            state = "expired"
        return cls(**record.model_dump(), state=state)


SilenceId = Annotated[str, Path(pattern=r"^sil_[0-9a-f]{24}$")]


@router.post(
    "/silences",
    summary="Create a silence",
    status_code=201,
    response_model=SilenceOut,
    responses=_ERRORS,
)
async def create_silence(
    body: SilenceIn, who: OperatorPrincipal, state: NotifyStateDep
) -> SilenceOut:
    now = utcnow()
    try:
        record = await service.create_silence(
            state, matchers=body.matchers, starts_at=body.starts_at or now, ends_at=body.ends_at,
            created_by=who.name, comment=body.comment, now=now,
        )  # fmt: skip
    except service.InvalidRequest as exc:
        raise InvalidRequest(str(exc), field=exc.field) from None
    return SilenceOut.of(record, now)


@router.get(
    "/silences", summary="List silences", response_model=list[SilenceOut], responses=_ERRORS
)
async def list_silences(
    who: ViewerPrincipal,
    state: NotifyStateDep,
    view: AlertViewDep,
    include_expired: Annotated[bool, Query(description="Also list expired silences.")] = False,
    alert_id: Annotated[
        str | None,
        Query(max_length=128, description="Only the silences muting this alert now."),
    ] = None,
) -> list[SilenceOut]:
    """Silences, newest first; with `alert_id`, the active ones whose matchers match the alert's
    labels (its rule's labels plus severity, rule, loan, status): why it is not notified."""
    now = utcnow()
    records = list(state.silences.items.values())
    if alert_id is not None:
        record = await view.get(alert_id)
        if record is None:
            raise NotFound(f"no alert {alert_id!r}", field="alert_id")
        labels = alert_labels(record.effective(now))
        records = [r for r in records if r.mutes(labels, now)]
    found = [SilenceOut.of(r, now) for r in records]
    if not include_expired:
        found = [s for s in found if s.state != "expired"]
    return sorted(found, key=lambda s: s.starts_at, reverse=True)


@router.post(
    "/silences/{silence_id}/expire",
    summary="Expire a silence now",
    response_model=SilenceOut,
    responses=_ERRORS,
)
async def expire_silence(
    silence_id: SilenceId, who: OperatorPrincipal, state: NotifyStateDep
) -> SilenceOut:
    """Ends the silence: the next change of a matching alert is notified."""
    now = utcnow()
    try:
        record = await service.expire_silence(state, silence_id=silence_id, now=now)
    except service.NotFoundError as exc:
        raise NotFound(str(exc), field="silence_id") from None
    return SilenceOut.of(record, now)

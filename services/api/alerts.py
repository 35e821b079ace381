"""Alert routes (DESIGN §6): list, read, act on, and stream alerts from the Redis view.

Reads need a viewer token (names and phone numbers masked) or higher; actions need an operator.
An action is written to `<prefix>alerts` first and answered 503 when Kafka does not take it, so
the view never shows a change that the source of truth does not have.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from rules.events import AlertEvent, AlertStatus, Severity
from services.api.auth import Principal, Role
from services.api.deps import ContextDep, OperatorPrincipal, SettingsDep, ViewerPrincipal
from services.api.errors import InvalidRequest, NotFound, ServiceUnavailable, SkipwatchError
from services.api.publisher import OutRecord
from services.api.schemas import ErrorBody
from services.api.silence_watch import SilenceWatchDep
from services.api.views import AlertOut, AlertPageOut, AssignIn, SnoozeIn, alert_out
from services.store import (
    MAX_PAGE,
    Action,
    AlertNotFound,
    AlertQuery,
    AlertView,
    InvalidCursor,
    InvalidTransition,
    act_on_alert,
)

router = APIRouter(prefix="/v1", tags=["alerts"])


class Conflict(SkipwatchError):
    status_code = 409
    code = "conflict"


def get_alert_view(request: Request) -> AlertView:
    view: AlertView = request.app.state.alert_view
    return view


AlertViewDep = Annotated[AlertView, Depends(get_alert_view)]
AlertId = Annotated[str, Path(min_length=1, max_length=128, description="The alert's `id`.")]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def masked_for(principal: Principal) -> bool:
    """Viewers see names and phone numbers masked; operators and admins see them whole."""
    return not principal.has_role(Role.OPERATOR)


_READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No credential or an unknown one."},
    403: {"model": ErrorBody, "description": "Vendor ingest keys may not read alerts."},
}
_ACT_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No credential or an unknown one."},
    403: {"model": ErrorBody, "description": "Needs an operator or admin token."},
    404: {"model": ErrorBody, "description": "No alert with this id."},
    409: {"model": ErrorBody, "description": "The alert is resolved (ack and snooze only)."},
    503: {
        "model": ErrorBody,
        "description": "Kafka did not acknowledge the change; nothing changed. Retry.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}


@router.get(
    "/alerts",
    summary="List alerts, newest first",
    response_model=AlertPageOut,
    responses=_READ_ERRORS | {422: {"model": ErrorBody, "description": "A bad filter or cursor."}},
)
async def list_alerts(
    who: ViewerPrincipal,
    view: AlertViewDep,
    silences: SilenceWatchDep,
    status: Annotated[AlertStatus | None, Query(description="Current status.")] = None,
    severity: Annotated[Severity | None, Query()] = None,
    rule: Annotated[str | None, Query(max_length=128, description="Rule id.")] = None,
    loan: Annotated[str | None, Query(max_length=128, description="Loan id.")] = None,
    since: Annotated[
        dt.datetime | None, Query(description="Started at or after (RFC 3339 with offset).")
    ] = None,
    until: Annotated[dt.datetime | None, Query(description="Started before.")] = None,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> AlertPageOut:
    """Alerts ordered by `started_at`, newest first, optionally filtered. Pagination is by an
    opaque cursor over (started_at, id): pages do not shift when alerts arrive meanwhile. Keep the
    same filters when passing a cursor."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidRequest(f"{name} must carry a UTC offset (RFC 3339)", field=name)
    query = AlertQuery(
        status=status, severity=severity, rule_id=rule, loan_id=loan, since=since, until=until
    )
    now = utcnow()
    try:
        page = await view.list_alerts(query, now=now, cursor=cursor, limit=limit)
    except InvalidCursor as exc:
        raise InvalidRequest(str(exc), field="cursor") from None
    masked = masked_for(who)
    return AlertPageOut(
        items=[
            alert_out(r, now=now, masked=masked).with_silences(
                silences.muting(r.effective(now), now)
            )
            for r in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/alerts/stream",
    summary="Live alert changes (server-sent events)",
    response_class=EventSourceResponse,
    responses=_READ_ERRORS
    | {200: {"content": {"text/event-stream": {}}, "description": "An endless event stream."}},
)
async def stream_alerts(
    who: ViewerPrincipal, view: AlertViewDep, settings: SettingsDep
) -> EventSourceResponse:
    """`text/event-stream` of every alert the view writes from now on: `event: alert` with an
    AlertOut as `data` (masked for viewers), one `event: ready` first, and a `: ping` comment
    every `api.sse_heartbeat_s` seconds. Authenticate with the `Authorization` header like every
    other route (the dashboard reads the stream with `fetch`, so tokens never go into URLs).
    After a reconnect, list `/v1/alerts` again to pick up what happened meanwhile."""
    masked = masked_for(who)

    async def events() -> AsyncIterator[ServerSentEvent]:
        async with view.changes() as changes:
            yield ServerSentEvent(event="ready", data="{}")
            async for record in changes:
                out = alert_out(record, now=utcnow(), masked=masked)
                yield ServerSentEvent(event="alert", id=out.id, data=out.model_dump_json())

    return EventSourceResponse(
        events(),
        ping=settings.api.sse_heartbeat_s,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/alerts/{alert_id}",
    summary="One alert with its evidence",
    response_model=AlertOut,
    responses=_READ_ERRORS | {404: {"model": ErrorBody, "description": "No such alert."}},
)
async def get_alert(
    alert_id: AlertId, who: ViewerPrincipal, view: AlertViewDep, silences: SilenceWatchDep
) -> AlertOut:
    """The alert, with `silenced`/`silenced_by`: the notification silences muting it now."""
    record = await view.get(alert_id)
    if record is None:
        raise NotFound(f"no alert {alert_id!r}", field="alert_id")
    now = utcnow()
    out = alert_out(record, now=now, masked=masked_for(who))
    return out.with_silences(silences.muting(record.effective(now), now))


async def _act(
    context: ContextDep,
    view: AlertView,
    who: Principal,
    alert_id: str,
    action: Action,
    **details: Any,
) -> AlertOut:
    topic = context.settings.topic("alerts")

    async def publish(event: AlertEvent) -> None:
        record = OutRecord(
            topic=topic, key=event.loan_id.encode(), value=event.model_dump_json().encode()
        )
        result = await context.publisher.publish([record])
        if result.error is not None:
            raise ServiceUnavailable(f"Kafka did not acknowledge the change: {result.error!r}")

    now = utcnow()
    try:
        record = await act_on_alert(
            view, publish, alert_id, action, by=who.name, now=now, **details
        )
    except AlertNotFound:
        raise NotFound(f"no alert {alert_id!r}", field="alert_id") from None
    except InvalidTransition as exc:
        raise Conflict(str(exc)) from None
    return alert_out(record, now=now, masked=masked_for(who))


@router.post(
    "/alerts/{alert_id}/ack",
    summary="Acknowledge an alert",
    response_model=AlertOut,
    responses=_ACT_ERRORS,
)
async def ack_alert(
    alert_id: AlertId, who: OperatorPrincipal, view: AlertViewDep, context: ContextDep
) -> AlertOut:
    """Status `acknowledged`: someone is on it. Recorded with who and when, published to
    `<prefix>alerts`. Repeating it changes nothing. Voided if the alert later escalates."""
    return await _act(context, view, who, alert_id, Action.ACK)


@router.post(
    "/alerts/{alert_id}/assign",
    summary="Assign an alert to a collector",
    response_model=AlertOut,
    responses=_ACT_ERRORS,
)
async def assign_alert(
    alert_id: AlertId,
    body: AssignIn,
    who: OperatorPrincipal,
    view: AlertViewDep,
    context: ContextDep,
) -> AlertOut:
    """Set the assignee (status unchanged); published to `<prefix>alerts`."""
    return await _act(context, view, who, alert_id, Action.ASSIGN, assignee=body.assignee)


@router.post(
    "/alerts/{alert_id}/resolve",
    summary="Resolve an alert by hand",
    response_model=AlertOut,
    responses=_ACT_ERRORS,
)
async def resolve_alert(
    alert_id: AlertId, who: OperatorPrincipal, view: AlertViewDep, context: ContextDep
) -> AlertOut:
    """Status `resolved` for this episode (e.g. the borrower was reached and paid). If the rule
    escalates to a higher severity later, the alert fires again."""
    return await _act(context, view, who, alert_id, Action.RESOLVE)


@router.post(
    "/alerts/{alert_id}/snooze",
    summary="Silence an alert for a while",
    response_model=AlertOut,
    responses=_ACT_ERRORS | {422: {"model": ErrorBody, "description": "A bad `until`/`minutes`."}},
)
async def snooze_alert(
    alert_id: AlertId,
    body: SnoozeIn,
    who: OperatorPrincipal,
    view: AlertViewDep,
    context: ContextDep,
) -> AlertOut:
    """Status `silenced` until `until` (or for `minutes`); afterwards the alert is back to what
    it was (firing or acknowledged). Published to `<prefix>alerts`."""
    now = utcnow()
    end = body.end(now)
    if end <= now:
        raise InvalidRequest("`until` must be in the future", field="until")
    return await _act(context, view, who, alert_id, Action.SNOOZE, until=end)

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
from services.alert_index import UNASSIGNED, AlertQuery, Display, InvalidCursor, Sort
from services.api.auth import Principal, Role
from services.api.deps import ContextDep, OperatorPrincipal, SettingsDep, ViewerPrincipal
from services.api.errors import Conflict, InvalidRequest, NotFound, ServiceUnavailable
from services.api.publisher import OutRecord
from services.api.schemas import ErrorBody
from services.api.silence_watch import SilenceWatchDep
from services.api.views import (
    AlertOut,
    AlertPageOut,
    AssignIn,
    FacetsOut,
    SnoozeIn,
    alert_out,
    mask_free_text,
    mask_text,
)
from services.store import (
    MAX_PAGE,
    Action,
    AlertNotFound,
    AlertView,
    InvalidTransition,
    act_on_alert,
)

router = APIRouter(prefix="/v1", tags=["alerts"])


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


# Viewers filter and count assignees and label values as they see them (masked).
_MASKED = Display(assignee=mask_free_text, label=mask_text)


def display_for(principal: Principal) -> Display:
    return _MASKED if masked_for(principal) else Display()


_MAX_VALUES = 50  # values per repeatable filter


def _values(name: str, values: list[str] | None) -> frozenset[str]:
    given = values or []
    if len(given) > _MAX_VALUES:
        raise InvalidRequest(f"at most {_MAX_VALUES} `{name}` values", field=name)
    for value in given:
        if not value or len(value) > 128:
            raise InvalidRequest(f"`{name}` values are 1 to 128 characters", field=name)
    return frozenset(given)


def alert_query(
    status: Annotated[
        list[AlertStatus] | None,
        Query(
            description="Current status; repeat for either (`status=firing&status=acknowledged`)."
        ),
    ] = None,
    severity: Annotated[list[Severity] | None, Query(description="Repeatable.")] = None,
    rule: Annotated[list[str] | None, Query(description="Rule id; repeatable.")] = None,
    assignee: Annotated[
        list[str] | None,
        Query(
            description=f"Assignee as shown (masked for viewers); `{UNASSIGNED}`: nobody. "
            "Repeatable."
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        Query(
            description="`key=value` of an alert label (e.g. `team=recovery`); repeatable: "
            "values of one key are alternatives, different keys all apply."
        ),
    ] = None,
    loan: Annotated[str | None, Query(min_length=1, max_length=128, description="Loan id.")] = None,
    since: Annotated[
        dt.datetime | None, Query(description="Started at or after (RFC 3339 with offset).")
    ] = None,
    until: Annotated[dt.datetime | None, Query(description="Started before (RFC 3339).")] = None,
) -> AlertQuery:
    """The filters `GET /v1/alerts` and `GET /v1/alerts/facets` share."""
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidRequest(f"{name} must carry a UTC offset (RFC 3339)", field=name)
    if since is not None and until is not None and until <= since:
        raise InvalidRequest("`until` must be after `since`", field="until")
    labels: dict[str, set[str]] = {}
    for pair in _values("label", label):
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise InvalidRequest(f"label {pair!r} is not `key=value`", field="label")
        labels.setdefault(key, set()).add(value)
    return AlertQuery(
        rules=_values("rule", rule),
        severities=frozenset(severity or ()),
        statuses=frozenset(status or ()),
        assignees=_values("assignee", assignee),
        labels={k: frozenset(v) for k, v in labels.items()},
        loan_id=loan,
        since=since,
        until=until,
    )


AlertQueryDep = Annotated[AlertQuery, Depends(alert_query)]


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
    summary="List alerts: filter, sort, page",
    response_model=AlertPageOut,
    responses=_READ_ERRORS
    | {422: {"model": ErrorBody, "description": "A bad filter, sort, limit or cursor."}},
)
async def list_alerts(
    who: ViewerPrincipal,
    view: AlertViewDep,
    silences: SilenceWatchDep,
    query: AlertQueryDep,
    sort: Annotated[
        Sort,
        Query(
            description="`-started_at` newest first (default), `started_at` oldest first, "
            "`-severity`/`severity`, `-risk_score`/`risk_score`. Ties: newest first, then id."
        ),
    ] = Sort.NEWEST,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"At most {MAX_PAGE}.")] = 50,
) -> AlertPageOut:
    """Alerts matching every filter given, in `sort` order, with `total` (all pages). Pages are
    keyset pages over the sort key and the alert id: alerts that arrive meanwhile never shift or
    repeat the pages not read yet. Keep the filters and the sort when passing a cursor. Each
    request reads the view's search index for the statuses asked (open alerts for the queue):
    see docs/api.md for the cost."""
    now = utcnow()
    try:
        page = await view.list_alerts(
            query, now=now, sort=sort, cursor=cursor, limit=limit, display=display_for(who)
        )
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
        total=page.total,
    )


@router.get(
    "/alerts/facets",
    summary="Alert counts per rule, severity, status, assignee and label value",
    response_model=FacetsOut,
    responses=_READ_ERRORS | {422: {"model": ErrorBody, "description": "A bad filter."}},
)
async def alert_facets(who: ViewerPrincipal, view: AlertViewDep, query: AlertQueryDep) -> FacetsOut:
    """Counts over every alert in the view (not a page), for the same filters as `GET
    /v1/alerts`. Each dimension is counted under all the *other* filters, so an option's count
    is what choosing it lists; `total` is what the filters as given list."""
    now = utcnow()
    counted = await view.facets(query, now=now, display=display_for(who))
    return FacetsOut.of(counted, now=now)


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

"""Webhook endpoints (DESIGN §6, §7): `/v1/webhooks` CRUD, their deliveries, redelivery, and
`/v1/receivers` (what the routing config defines). Admin only.

Endpoints live in the compacted `<prefix>notify.endpoints` topic, deliveries in
`<prefix>notify.deliveries`; the dispatcher (`skipwatch dispatcher`) reads both. The signing
secret is returned once, when the endpoint is created or its secret rotated.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rules.events import Severity
from services.api.deps import AdminPrincipal, SettingsDep
from services.api.errors import Conflict, InvalidRequest, NotFound, ServiceUnavailable
from services.api.notify_state import NotifyContextDep, NotifyStateDep
from services.api.schemas import ErrorBody
from services.notify import service
from services.notify.config import ConfigError, load_config
from services.notify.model import EventType
from services.notify.records import Attempt, DeliveryRecord, EndpointRecord

router = APIRouter(prefix="/v1", tags=["webhooks"])

EndpointId = Annotated[str, Path(pattern=r"^ep_[0-9a-f]{24}$")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No credential or an unknown one."},
    403: {"model": ErrorBody, "description": "Requires the admin role."},
    404: {"model": ErrorBody, "description": "No such webhook or delivery."},
    422: {
        "model": ErrorBody,
        "description": "Invalid body, or a destination the SSRF guard refuses.",
    },
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookFilter(_In):
    event_types: list[EventType] = Field(
        default_factory=list, description="Types to send; empty: all four."
    )
    min_severity: Severity = Severity.INFO
    rules: list[str] = Field(default_factory=list, description="Rule ids; empty: every rule.")
    labels: list[str] = Field(
        default_factory=list,
        description='Label matchers that must all match, e.g. `team="collections"`, '
        '`region=~"华东|华南"`.',
    )


class WebhookIn(WebhookFilter):
    url: str = Field(description="http(s) URL; private, loopback and metadata addresses refused.")
    description: str = Field("", max_length=500)
    secret: str | None = Field(
        None, description="`whsec_` + base64 of 24-64 bytes; generated when omitted."
    )


class WebhookPatch(_In):
    url: str | None = None
    description: str | None = Field(None, max_length=500)
    enabled: bool | None = Field(None, description="true re-enables a disabled endpoint.")
    event_types: list[EventType] | None = None
    min_severity: Severity | None = None
    rules: list[str] | None = None
    labels: list[str] | None = None


class RotateIn(_In):
    overlap_hours: float = Field(24.0, ge=0, le=24 * 30, description="Both secrets sign meanwhile.")
    secret: str | None = None


class WebhookOut(BaseModel):
    id: str
    url: str
    description: str
    event_types: list[EventType]
    min_severity: Severity
    rules: list[str]
    labels: list[str]
    enabled: bool
    disabled_reason: str | None
    disabled_at: AwareDatetime | None
    failing_since: AwareDatetime | None
    created_at: AwareDatetime
    secrets_expiring: list[AwareDatetime | None] = Field(
        description="One entry per signing secret: when it stops signing (null: never)."
    )


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing secret. Shown only now: store it.")


class AttemptOut(BaseModel):
    at: AwareDatetime
    outcome: str
    status: int | None
    reason: str | None
    detail: str
    latency_ms: float

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptOut:
        return cls.model_validate(attempt.model_dump())


class DeliveryOut(BaseModel):
    id: str = Field(description="Also the `webhook-id` header, the same on every attempt.")
    state: str
    created_at: AwareDatetime
    next_at: AwareDatetime | None
    attempt_count: int
    generation: int = Field(description="How many times it was manually redelivered.")
    types: list[EventType]
    alert_ids: list[str]
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, record: DeliveryRecord) -> DeliveryOut:
        return cls(
            id=record.id,
            state=record.state,
            created_at=record.created_at,
            next_at=record.next_at,
            attempt_count=record.attempt_count,
            generation=record.generation,
            types=[n.type for n in record.notices],
            alert_ids=[str(n.alert.get("alert_id")) for n in record.notices],
            attempts=[AttemptOut.of(a) for a in record.attempts],
        )


def webhook_out(record: EndpointRecord) -> WebhookOut:
    data = record.model_dump(exclude={"keys", "deleted"})
    return WebhookOut(**data, secrets_expiring=[k.expires_at for k in record.keys])


def _invalid(exc: service.NotifyError) -> Exception:
    if isinstance(exc, service.NotFoundError):
        return NotFound(str(exc))
    if isinstance(exc, service.StateConflict):
        return Conflict(str(exc))
    if isinstance(exc, service.NotConfigured):
        return ServiceUnavailable(str(exc))
    field = exc.field if isinstance(exc, service.InvalidRequest) else None
    return InvalidRequest(str(exc), field=field)


@router.post(
    "/webhooks",
    summary="Create a webhook endpoint",
    status_code=201,
    response_model=WebhookCreated,
    responses=_ERRORS,
)
async def create_webhook(
    body: WebhookIn, who: AdminPrincipal, context: NotifyContextDep
) -> WebhookCreated:
    """Saves the endpoint after checking its destination (SSRF guard). The secret is in this
    answer only."""
    state = await context.state()
    try:
        filters = body.model_dump(include=set(WebhookFilter.model_fields))
        record, secret = await service.create_endpoint(
            state, context.guard, url=body.url, now=utcnow(), secret=body.secret,
            description=body.description, **filters,
        )  # fmt: skip
    except service.NotifyError as exc:
        raise _invalid(exc) from None
    return WebhookCreated(**webhook_out(record).model_dump(), secret=secret)


@router.get(
    "/webhooks",
    summary="List webhook endpoints",
    response_model=list[WebhookOut],
    responses=_ERRORS,
)
async def list_webhooks(who: AdminPrincipal, state: NotifyStateDep) -> list[WebhookOut]:
    records = [r for r in state.endpoints.items.values() if not r.deleted]
    return [webhook_out(r) for r in sorted(records, key=lambda r: r.created_at)]


@router.get(
    "/webhooks/{endpoint_id}",
    summary="One webhook endpoint",
    response_model=WebhookOut,
    responses=_ERRORS,
)
async def get_webhook(
    endpoint_id: EndpointId, who: AdminPrincipal, state: NotifyStateDep
) -> WebhookOut:
    try:
        return webhook_out(service.get_endpoint(state, endpoint_id))
    except service.NotifyError as exc:
        raise _invalid(exc) from None


@router.patch(
    "/webhooks/{endpoint_id}",
    summary="Change a webhook endpoint",
    response_model=WebhookOut,
    responses=_ERRORS,
)
async def patch_webhook(
    endpoint_id: EndpointId, body: WebhookPatch, who: AdminPrincipal, context: NotifyContextDep
) -> WebhookOut:
    """Change its URL (checked again), filter or description; `enabled: true` re-enables an
    endpoint the dispatcher disabled (HTTP 410, or failing for too long)."""
    state = await context.state()
    try:
        record = await service.update_endpoint(
            state,
            context.guard,
            endpoint_id=endpoint_id,
            changes=body.model_dump(exclude_none=True),
        )
    except service.NotifyError as exc:
        raise _invalid(exc) from None
    return webhook_out(record)


@router.delete(
    "/webhooks/{endpoint_id}",
    summary="Delete a webhook endpoint",
    status_code=204,
    responses=_ERRORS,
)
async def delete_webhook(
    endpoint_id: EndpointId, who: AdminPrincipal, state: NotifyStateDep
) -> Response:
    try:
        await service.delete_endpoint(state, endpoint_id=endpoint_id)
    except service.NotifyError as exc:
        raise _invalid(exc) from None
    return Response(status_code=204)


@router.post(
    "/webhooks/{endpoint_id}/rotate-secret",
    summary="Rotate the signing secret",
    response_model=WebhookCreated,
    responses=_ERRORS,
)
async def rotate_webhook_secret(
    endpoint_id: EndpointId, body: RotateIn, who: AdminPrincipal, state: NotifyStateDep
) -> WebhookCreated:
    """A new secret signs from now on; the old ones keep signing for `overlap_hours` (messages
    carry both signatures meanwhile, space-separated, as Standard Webhooks allows)."""
    try:
        record, secret = await service.rotate_secret(
            state, endpoint_id=endpoint_id, now=utcnow(),
            overlap=dt.timedelta(hours=body.overlap_hours), secret=body.secret,
        )  # fmt: skip
    except service.NotifyError as exc:
        raise _invalid(exc) from None
    return WebhookCreated(**webhook_out(record).model_dump(), secret=secret)


@router.get(
    "/webhooks/{endpoint_id}/deliveries",
    summary="Deliveries to an endpoint, newest first",
    response_model=list[DeliveryOut],
    responses=_ERRORS,
)
async def list_deliveries(
    endpoint_id: EndpointId,
    who: AdminPrincipal,
    state: NotifyStateDep,
    delivery_state: Annotated[
        str | None, Query(alias="state", pattern="^(pending|delivered|dead|failed)$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryOut]:
    """Each delivery with its attempts: status code, latency, reason of failure."""
    try:
        service.get_endpoint(state, endpoint_id)
    except service.NotifyError as exc:
        raise _invalid(exc) from None
    records = service.deliveries_of(state, endpoint_id, limit=100_000)
    if delivery_state is not None:
        records = [r for r in records if r.state == delivery_state]
    return [DeliveryOut.of(r) for r in records[:limit]]


@router.post(
    "/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    summary="Redeliver one delivery",
    response_model=DeliveryOut,
    responses={**_ERRORS, 409: {"model": ErrorBody, "description": "Still pending."}},
)
async def redeliver_one(
    endpoint_id: EndpointId,
    delivery_id: Annotated[str, Path(pattern=r"^msg_[0-9a-f]{26}$")],
    who: AdminPrincipal,
    state: NotifyStateDep,
) -> DeliveryOut:
    """Runs the retry schedule again from the start, with the same `webhook-id`."""
    record = state.deliveries.items.get(delivery_id)
    if record is None or record.endpoint != endpoint_id:
        raise NotFound(f"no delivery {delivery_id!r} to {endpoint_id}")
    try:
        return DeliveryOut.of(await service.redeliver(state, delivery_id=delivery_id, now=utcnow()))
    except service.NotifyError as exc:
        raise _invalid(exc) from None


class RedeliveredOut(BaseModel):
    redelivered: int


@router.post(
    "/webhooks/{endpoint_id}/redeliver-dead",
    summary="Redeliver everything dead-lettered",
    response_model=RedeliveredOut,
    responses=_ERRORS,
)
async def redeliver_dead(
    endpoint_id: EndpointId, who: AdminPrincipal, state: NotifyStateDep
) -> RedeliveredOut:
    try:
        service.get_endpoint(state, endpoint_id)
    except service.NotifyError as exc:
        raise _invalid(exc) from None
    return RedeliveredOut(
        redelivered=await service.redeliver_dead(state, endpoint=endpoint_id, now=utcnow())
    )


class ReceiverOut(BaseModel):
    name: str
    integrations: list[dict[str, str]] = Field(
        description="kind and host of each destination (URL paths and keys are not shown)."
    )


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


@router.get(
    "/receivers",
    summary="Receivers the routing config defines",
    response_model=list[ReceiverOut],
    responses=_ERRORS,
)
async def list_receivers(who: AdminPrincipal, settings: SettingsDep) -> list[ReceiverOut]:
    """From the file at `SKIPWATCH_NOTIFY__ROUTING_CONFIG` (empty when none is set)."""
    path = settings.notify.routing_config
    if path is None:
        return []
    try:
        routing = load_config(path)
    except ConfigError as exc:
        raise Conflict(f"the routing config is invalid: {exc}") from None
    return [
        ReceiverOut(
            name=r.name,
            integrations=[{"kind": "webhook", "host": _host(c.url)} for c in r.webhook_configs]
            + [{"kind": "wecom", "host": _host(c.url)} for c in r.wecom_configs]
            + [{"kind": "dingtalk", "host": _host(c.url)} for c in r.dingtalk_configs],
        )
        for r in routing.receivers.values()
    ]

"""Operations on notification state, shared by the API and tests: endpoints, redelivery,
silences. Keyword-only, no web framework (the API maps NotifyError subclasses to HTTP codes)."""

from __future__ import annotations

import datetime as dt
import secrets

from pydantic import ValidationError

from services.notify.records import (
    DeliveryRecord,
    EndpointRecord,
    KeyRecord,
    SilenceRecord,
)
from services.notify.sealing import SecretsUnreadable
from services.notify.signing import check_secret, new_secret, rotate
from services.notify.ssrf import DestinationRefused, SsrfGuard
from services.notify.state import DELIVERIES, SILENCES, NotifyState


class NotifyError(Exception):
    """Root of the notification domain's errors."""


class NotFoundError(NotifyError):
    pass


class InvalidRequest(NotifyError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StateConflict(NotifyError):
    pass


class NotConfigured(NotifyError):
    """The service cannot do it as configured (no key to encrypt webhook secrets with)."""


async def _put_endpoint(state: NotifyState, record: EndpointRecord) -> EndpointRecord:
    try:
        return await state.put_endpoint(record)
    except SecretsUnreadable as exc:
        raise NotConfigured(str(exc)) from None


def _invalid(exc: ValidationError) -> InvalidRequest:
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first["loc"]) or None
    messages = "; ".join(
        e["msg"].removeprefix("Value error, ") for e in exc.errors(include_url=False)
    )
    return InvalidRequest(messages, field=field)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


async def check_destination(guard: SsrfGuard, url: str) -> None:
    try:
        await guard.check_url(url)
    except DestinationRefused as exc:
        raise InvalidRequest(f"destination refused: {exc.detail}", field="url") from None


async def create_endpoint(
    state: NotifyState,
    guard: SsrfGuard,
    *,
    url: str,
    now: dt.datetime,
    secret: str | None = None,
    **filters: object,
) -> tuple[EndpointRecord, str]:
    """Save a new endpoint after the SSRF check; returns it and its secret (shown once)."""
    await check_destination(guard, url)
    try:
        secret = check_secret(secret) if secret else new_secret()
    except ValueError as exc:
        raise InvalidRequest(str(exc), field="secret") from None
    try:
        record = EndpointRecord.model_validate(
            {"id": _new_id("ep"), "url": url, "keys": [{"secret": secret}], "created_at": now}
            | filters
        )
    except ValidationError as exc:
        raise _invalid(exc) from None
    return await _put_endpoint(state, record), secret


def get_endpoint(state: NotifyState, endpoint_id: str) -> EndpointRecord:
    record = state.endpoints.items.get(endpoint_id)
    if record is None or record.deleted:
        raise NotFoundError(f"no webhook {endpoint_id!r}")
    return record


async def update_endpoint(
    state: NotifyState,
    guard: SsrfGuard,
    *,
    endpoint_id: str,
    changes: dict[str, object],
) -> EndpointRecord:
    record = get_endpoint(state, endpoint_id)
    if "url" in changes:
        await check_destination(guard, str(changes["url"]))
    if changes.get("enabled") is True:
        changes = {**changes, "disabled_reason": None, "disabled_at": None, "failing_since": None}
    try:
        updated = EndpointRecord.model_validate({**record.model_dump(), **changes})
    except ValidationError as exc:
        raise _invalid(exc) from None
    return await _put_endpoint(state, updated)


async def rotate_secret(
    state: NotifyState,
    *,
    endpoint_id: str,
    now: dt.datetime,
    overlap: dt.timedelta,
    secret: str | None = None,
) -> tuple[EndpointRecord, str]:
    """A new signing secret; the current ones keep signing for `overlap` (both are sent)."""
    record = get_endpoint(state, endpoint_id)
    try:
        secret = check_secret(secret) if secret else new_secret()
    except ValueError as exc:
        raise InvalidRequest(str(exc), field="secret") from None
    try:
        current = [k.key(state.box) for k in record.keys]
    except SecretsUnreadable as exc:
        raise NotConfigured(str(exc)) from None
    keys = rotate(current, secret, now=now, overlap=overlap)
    updated = record.model_copy(
        update={"keys": [KeyRecord(secret=k.secret, expires_at=k.expires_at) for k in keys]}
    )
    return await _put_endpoint(state, updated), secret


async def delete_endpoint(state: NotifyState, *, endpoint_id: str) -> None:
    record = get_endpoint(state, endpoint_id)
    await _put_endpoint(state, record.model_copy(update={"deleted": True, "enabled": False}))


def deliveries_of(state: NotifyState, endpoint: str, limit: int = 100) -> list[DeliveryRecord]:
    found = [d for d in state.deliveries.items.values() if d.endpoint == endpoint]
    found.sort(key=lambda d: d.created_at, reverse=True)
    return found[:limit]


async def redeliver(state: NotifyState, *, delivery_id: str, now: dt.datetime) -> DeliveryRecord:
    """Try a finished delivery again from the start of the schedule (same `webhook-id`)."""
    record = state.deliveries.items.get(delivery_id)
    if record is None:
        raise NotFoundError(f"no delivery {delivery_id!r}")
    if record.state == "pending":
        raise StateConflict(f"delivery {delivery_id} is still pending")
    updated = record.model_copy(
        update={
            "state": "pending",
            "generation": record.generation + 1,
            "next_at": now,
            "attempt_count": 0,
        }
    )
    await state.writer.put(DELIVERIES, delivery_id, updated)
    state.deliveries.items[delivery_id] = updated
    return updated


async def redeliver_dead(state: NotifyState, *, endpoint: str, now: dt.datetime) -> int:
    """Redeliver every dead-lettered delivery of an endpoint; returns how many."""
    dead = [
        d for d in state.deliveries.items.values() if d.endpoint == endpoint and d.state == "dead"
    ]
    for record in dead:
        await redeliver(state, delivery_id=record.id, now=now)
    return len(dead)


async def create_silence(
    state: NotifyState,
    *,
    matchers: list[str],
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    created_by: str,
    comment: str,
    now: dt.datetime,
) -> SilenceRecord:
    if ends_at <= starts_at:
        raise InvalidRequest("ends_at must be after starts_at", field="ends_at")
    if ends_at <= now:
        raise InvalidRequest("ends_at is in the past", field="ends_at")
    try:
        record = SilenceRecord(
            id=_new_id("sil"),
            matchers=matchers,
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=created_by,
            comment=comment,
            created_at=now,
        )
    except ValidationError as exc:
        raise _invalid(exc) from None
    await state.writer.put(SILENCES, record.id, record)
    state.silences.items[record.id] = record
    return record


async def expire_silence(state: NotifyState, *, silence_id: str, now: dt.datetime) -> SilenceRecord:
    record = state.silences.items.get(silence_id)
    if record is None:
        raise NotFoundError(f"no silence {silence_id!r}")
    if record.ends_at <= now:
        return record
    updated = record.model_copy(update={"ends_at": max(now, record.starts_at)})
    await state.writer.put(SILENCES, silence_id, updated)
    state.silences.items[silence_id] = updated
    return updated

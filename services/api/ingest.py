"""Ingest routes (DESIGN §6): GPS batches, Traccar forwards, payments, contacts, loans.

Bodies are read by hand rather than declared as FastAPI body parameters: the size limit must hold
while reading, the HMAC is over the exact bytes, and each item of a batch is validated on its own
so one bad item does not fail the other 499. The OpenAPI schema still documents the bodies.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response

from services.api.auth import SIGNATURE_HEADER, Principal
from services.api.deps import ContextDep, GpsIngestPrincipal, OperatorPrincipal
from services.api.errors import InvalidRequest, PayloadTooLarge, invalid_json
from services.api.pipeline import CONTACTS, GPS, LOANS, PAYMENTS, IngestOutcome, Source
from services.api.schemas import ErrorBody, IngestResult, LoanWriteResult

router = APIRouter(prefix="/v1", tags=["ingest"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No credential, an unknown one, or a bad signature."},
    403: {"model": ErrorBody, "description": "The credential may not call this route."},
    413: {
        "model": ErrorBody,
        "description": "Body larger than `api.max_body_bytes` or batch "
        "longer than `api.max_batch_items`.",
    },
    422: {"model": ErrorBody, "description": "The body is not JSON of the documented shape."},
    503: {
        "model": ErrorBody,
        "description": "Kafka did not acknowledge in time. Retry after `Retry-After` seconds; "
        "items already written are recognised by event_id.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}


def _array_body(model: str, what: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": f"A JSON array of {what}. Each item is validated on its own.",
            "content": {
                "application/json": {
                    "schema": {"type": "array", "items": {"$ref": f"#/components/schemas/{model}"}}
                }
            },
        }
    }


def _object_body(model: str, description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}},
        }
    }


async def _read_body(request: Request, context: ContextDep, principal: Principal) -> Any:
    """The decoded JSON body, after the size limit and (for signing vendors) the HMAC check."""
    limit = context.settings.api.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds {limit} bytes", field="body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes", field="body")
        chunks.append(chunk)
    body = b"".join(chunks)
    context.authenticator.verify_signature(principal, body, request.headers.get(SIGNATURE_HEADER))
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid_json(str(exc)) from None


async def _read_batch(request: Request, context: ContextDep, principal: Principal) -> list[Any]:
    body = await _read_body(request, context, principal)
    if not isinstance(body, list):
        raise InvalidRequest("body must be a JSON array of events", field="body")
    limit = context.settings.api.max_batch_items
    if len(body) > limit:
        raise PayloadTooLarge(
            f"batch of {len(body)} items exceeds {limit} items; split it", field="body"
        )
    return body


def _answer(outcome: IngestOutcome) -> Response:
    return Response(orjson.dumps(outcome.body()), media_type="application/json")


async def _ingest_batch(
    request: Request, context: ContextDep, principal: Principal, source: Source
) -> Response:
    items = await _read_batch(request, context, principal)
    # A vendor key can only write pings of its own vendor: filled in when absent, else must match.
    fill = {"vendor": principal.vendor} if principal.vendor is not None else None
    outcome = await context.pipeline.ingest(source, items, fill=fill, principal=principal.name)
    return _answer(outcome)


@router.post(
    "/ingest/gps",
    summary="Ingest a batch of GPS pings",
    response_model=IngestResult,
    responses=_ERRORS,
    openapi_extra=_array_body("GpsPing", "GpsPing"),
)
async def ingest_gps(request: Request, context: ContextDep, who: GpsIngestPrincipal) -> Response:
    """Write GpsPings to `<prefix>gps.raw`, keyed by `device_id`.

    Answers 200 only after Kafka acknowledged every accepted item (acks=all). Invalid items are
    listed in `rejected` with field-level errors and written to the dead-letter topic; repeats of
    an `event_id` already written are counted in `duplicates` and skipped. With a vendor ingest
    key, `vendor` may be omitted (it is filled from the key) and must otherwise equal the key's
    vendor. Vendors with a signing secret must send `X-Skipwatch-Signature: sha256=<hex>`.
    """
    return await _ingest_batch(request, context, who, GPS)


@router.post(
    "/ingest/traccar",
    summary="Ingest one Traccar position or event forward",
    response_model=IngestResult,
    responses=_ERRORS,
    openapi_extra=_object_body(
        "TraccarForward",
        "What Traccar posts with `forward.json=true` (position forward) or to "
        "`event.forward.url` (event forward).",
    ),
)
async def ingest_traccar(
    request: Request, context: ContextDep, who: GpsIngestPrincipal
) -> Response:
    """Map a Traccar forward to a GpsPing (`device_id` = `traccar:<uniqueId>`, speed knots→km/h,
    Traccar alarms → GpsPing alarms) and ingest it like `/v1/ingest/gps`. Alarm events are
    ingested; other event types and events without a position are counted in `ignored` and
    answered 200 so Traccar does not retry them."""
    payload = await _read_body(request, context, who)
    if not isinstance(payload, dict):
        raise InvalidRequest("body must be a Traccar forward JSON object", field="body")
    outcome = await context.pipeline.ingest_traccar(payload, vendor=who.vendor, principal=who.name)
    return _answer(outcome)


@router.post(
    "/ingest/payments",
    summary="Ingest a batch of payment events",
    response_model=IngestResult,
    responses=_ERRORS,
    openapi_extra=_array_body("PaymentEvent", "PaymentEvent"),
)
async def ingest_payments(
    request: Request, context: ContextDep, who: OperatorPrincipal
) -> Response:
    """Write PaymentEvents to `<prefix>payments`, keyed by `loan_id` (operator or admin token).
    Same guarantees and response as `/v1/ingest/gps`."""
    return await _ingest_batch(request, context, who, PAYMENTS)


@router.post(
    "/ingest/contacts",
    summary="Ingest a batch of contact attempts",
    response_model=IngestResult,
    responses=_ERRORS,
    openapi_extra=_array_body("ContactAttempt", "ContactAttempt"),
)
async def ingest_contacts(
    request: Request, context: ContextDep, who: OperatorPrincipal
) -> Response:
    """Write ContactAttempts to `<prefix>contacts`, keyed by `loan_id` (operator or admin token).
    Same guarantees and response as `/v1/ingest/gps`."""
    return await _ingest_batch(request, context, who, CONTACTS)


@router.put(
    "/loans/{loan_id}",
    summary="Register or update a loan",
    response_model=LoanWriteResult,
    responses=_ERRORS,
    tags=["loans"],
    openapi_extra=_object_body("Loan", "The whole Loan; `loan_id` may be omitted."),
)
async def put_loan(
    request: Request,
    context: ContextDep,
    who: OperatorPrincipal,
    loan_id: Annotated[str, Path(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")],
) -> Response:
    """Write the Loan to the compacted `<prefix>loans` topic, keyed by `loan_id` (operator or
    admin token). A PUT replaces the loan; repeating it is harmless. An invalid loan is answered
    422 naming the fields (and dead-lettered); 200 only after Kafka acknowledged."""
    body = await _read_body(request, context, who)
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a Loan JSON object", field="body")
    outcome = await context.pipeline.ingest(
        LOANS, [body], fill={"loan_id": loan_id}, principal=who.name
    )
    if outcome.rejected:
        errors = outcome.rejected[0]["errors"]
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidRequest(message, field=errors[0]["field"], errors=errors)
    return Response(
        orjson.dumps({"loan_id": loan_id, "accepted": 1}), media_type="application/json"
    )

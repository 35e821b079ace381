"""API errors: one root exception, subclasses carry their HTTP status, one handler renders them all.

Service code raises these without knowing about HTTP responses; `install_error_handlers` is the only
place that turns them (and FastAPI's own request errors) into JSON bodies of one shape:

    {"error": "<code>", "message": "<one line>", "field": "<dotted field or null>", "errors": [...]}
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from rules.events import field_path


class SkipwatchError(Exception):
    """Root of every error the API reports on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.errors = errors or []
        self.headers = headers or {}


class AuthenticationError(SkipwatchError):
    status_code = 401
    code = "unauthenticated"

    def __init__(self, message: str, *, field: str | None = "Authorization") -> None:
        super().__init__(message, field=field, headers={"WWW-Authenticate": "Bearer"})


class SignatureError(SkipwatchError):
    status_code = 401
    code = "bad_signature"


class PermissionDenied(SkipwatchError):
    status_code = 403
    code = "forbidden"


class NotFound(SkipwatchError):
    status_code = 404
    code = "not_found"


class Conflict(SkipwatchError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(SkipwatchError):
    status_code = 413
    code = "payload_too_large"


class InvalidRequest(SkipwatchError):
    """The body or a parameter is malformed; `field` / `errors` say which."""

    status_code = 422
    code = "invalid_request"


def invalid_json(reason: str) -> InvalidRequest:
    """The one answer to a body that is not JSON, on every route (422, `field: body`)."""
    return InvalidRequest(f"body is not valid JSON: {reason}", field="body")


class ServiceUnavailable(SkipwatchError):
    """A dependency (Kafka) cannot take the write now; the client should retry after a pause."""

    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": code, "message": message, "field": field, "errors": errors or []}
    return Response(
        orjson.dumps(body),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


async def _skipwatch_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, SkipwatchError)
    return error_response(
        exc.status_code,
        exc.code,
        exc.message,
        field=exc.field,
        errors=exc.errors,
        headers=exc.headers,
    )


async def _request_validation_error(request: Request, exc: Exception) -> Response:
    # Path, query and header parameters and the declared bodies that FastAPI validates itself.
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    for err in raw:
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            context = err.get("ctx") or {}
            return await _skipwatch_error(
                request, invalid_json(str(context.get("error", "decode error")))
            )
        if err.get("type") == "missing" and loc == ("body",):
            return await _skipwatch_error(request, invalid_json("the body is empty"))
    errors = [
        {
            "field": field_path(err.get("loc", ())),
            "message": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in raw
    ]
    first = errors[0] if errors else {"field": None, "message": "invalid request"}
    message = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return error_response(422, "invalid_request", message, field=first["field"], errors=errors)


async def _http_error(request: Request, exc: Exception) -> Response:
    # Routing errors (404 unknown path, 405 wrong method) in the same shape as ours.
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        # FastAPI could not read a declared JSON body (e.g. not UTF-8): the same answer as a
        # body that is not JSON.
        return await _skipwatch_error(request, invalid_json(str(exc.__cause__)))
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        str(exc.detail),
        headers=dict(exc.headers) if exc.headers else None,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SkipwatchError, _skipwatch_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

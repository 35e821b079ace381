"""Shared pieces of the event models: strict base config, field types, error formatting."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1

# An identifier as senders give it: non-empty, bounded, no surrounding whitespace.
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")]
# RFC 3339 with an explicit offset; a naive timestamp is a validation error.
Timestamp = AwareDatetime


class Event(BaseModel):
    """Base of every event: frozen, unknown fields rejected, timezone-aware times."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        str_strip_whitespace=False,
        use_enum_values=False,
        ser_json_timedelta="iso8601",
    )

    schema_version: Annotated[int, Field(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming every failing field, e.g. ``lat: Input should be less than or equal
    to 90``."""
    parts: list[str] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def error_items(exc: ValidationError) -> list[dict[str, Any]]:
    """Field-level errors in a JSON-friendly shape (for HTTP 4xx bodies and dead letters)."""
    return [
        {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False)
    ]

"""Shared pieces of the event models: strict base config, field types, error formatting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rules.events.bounds import Identifier, Timestamp

__all__ = ["SCHEMA_VERSION", "Event", "Identifier", "Timestamp"]

SCHEMA_VERSION = 1


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


def _union_label(part: str | int) -> bool:
    # pydantic names the member of a union it tried: a tag (ours are written <Tag>) or a schema
    # label such as ``function-after[_closed(), PolygonRegion]``. Field names have neither.
    return isinstance(part, str) and (part.startswith("<") or "[" in part)


def field_path(loc: Sequence[str | int]) -> str:
    """A readable dotted path for a pydantic error location: ``home_region.coordinates.0``,
    without the union-member labels pydantic puts in between."""
    return ".".join(str(p) for p in loc if not _union_label(p))


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming every failing field, e.g. ``lat: Input should be less than or equal
    to 90``."""
    parts: list[str] = []
    for err in exc.errors(include_url=False):
        loc = field_path(err["loc"]) or "(body)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def error_items(exc: ValidationError) -> list[dict[str, Any]]:
    """Field-level errors in a JSON-friendly shape (for HTTP 4xx bodies and dead letters)."""
    return [
        {"field": field_path(err["loc"]), "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False)
    ]

"""Decoding input records: one place that turns raw bytes into events or a dead-letter reason."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from rules.events import EVENT_TYPE_BY_TOPIC, InputEvent, describe_validation_error


@dataclass(frozen=True)
class Rejected:
    reason: str  # bounded: "undecodable" | "invalid" — a metric label
    detail: str


def decode(topic: str, value: bytes | None) -> InputEvent | Rejected:
    """Validate one record of an (unprefixed) input topic."""
    if not value:
        return Rejected("undecodable", "empty record value")
    try:
        return EVENT_TYPE_BY_TOPIC[topic].model_validate_json(value)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors(include_url=False)):
            return Rejected("undecodable", describe_validation_error(exc))
        return Rejected("invalid", describe_validation_error(exc))


def binding_record(loan_id: str, bound: bool) -> bytes:
    return orjson.dumps({"loan_id": loan_id, "bound": bound})


def read_binding(value: bytes) -> tuple[str, bool]:
    data = orjson.loads(value)
    return str(data["loan_id"]), bool(data["bound"])

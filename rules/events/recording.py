"""Recordings (JSON lines of {"topic", "value"}) and ground-truth labels (DESIGN §4)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from rules.events.common import Identifier, Timestamp
from rules.events.contact import ContactAttempt
from rules.events.gps import GpsPing
from rules.events.loan import Loan
from rules.events.payment import PaymentEvent

InputEvent = Loan | GpsPing | PaymentEvent | ContactAttempt
InputTopic = Literal["loans", "gps.raw", "payments", "contacts"]

EVENT_TYPE_BY_TOPIC: dict[str, type[InputEvent]] = {
    "loans": Loan,
    "gps.raw": GpsPing,
    "payments": PaymentEvent,
    "contacts": ContactAttempt,
}
TOPIC_BY_EVENT_TYPE: dict[type[InputEvent], str] = {v: k for k, v in EVENT_TYPE_BY_TOPIC.items()}


class RecordingError(ValueError):
    """A recording line that cannot be read; names the line and the problem."""


def decode_event(topic: str, raw: bytes | str) -> InputEvent:
    """Validate one record's value for its (unprefixed) topic. Raises pydantic.ValidationError."""
    try:
        model = EVENT_TYPE_BY_TOPIC[topic]
    except KeyError:
        raise RecordingError(f"unknown topic {topic!r}") from None
    return model.model_validate_json(raw)


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: InputTopic
    value: dict[str, object]


_LINE = TypeAdapter(_Line)

# The ping line as recordings write it (services/simulator.py, `recording_line` without the
# spaces): its value is validated straight from the JSON text (pydantic's JSON mode, a third
# cheaper than orjson then the model on the dict). Only a line that is exactly this prefix, one
# JSON value and the closing brace takes it; it gives the event the path below gives (the same
# model: JSON and Python mode read JSON's types alike, and below, a line orjson cannot read is
# parsed by pydantic's JSON parser too). Anything else, and a value that fails, goes the path
# below, so a bad line raises the same error.
_PING_PREFIX = b'{"topic":"gps.raw","value":'
_PING_VALIDATOR = GpsPing.__pydantic_validator__
_JSON_WHITESPACE = b" \t\r\n"


def read_recording(lines: Iterable[str | bytes]) -> Iterator[tuple[str, InputEvent]]:
    """Yield (topic, event) for each non-blank line, one at a time (a file handle streams); a bad
    line raises RecordingError naming it."""
    from pydantic import ValidationError

    from rules.events.common import describe_validation_error

    start = len(_PING_PREFIX)
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes) and line.startswith(_PING_PREFIX):  # (so not blank)
            # the value: up to the closing brace, before a newline (a file's lines) or any
            # other JSON whitespace
            if line.endswith(b"}\n"):
                value: bytes | None = line[start:-2]
            else:
                body = line.rstrip(_JSON_WHITESPACE)
                value = body[start:-1] if body.endswith(b"}") else None
            if value is not None:
                try:
                    ping = _PING_VALIDATOR.validate_json(value)
                except ValidationError:
                    pass  # the path below names the problem
                else:
                    yield "gps.raw", ping
                    continue
        if not line.strip():
            continue
        try:
            # The common case, decoded by orjson (about 5 times faster than pydantic's JSON
            # parser into a dict): an object of exactly a known topic and an object value.
            # Anything else (bad JSON, a missing or extra key, an unknown topic) takes the
            # validating path below, whose error names the problem. The value is validated by
            # the same model in the same (Python) mode either way.
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                obj = None
            if (
                obj.__class__ is dict
                and len(obj) == 2
                and obj.get("value").__class__ is dict
                and obj.get("topic").__class__ is str
                and obj["topic"] in EVENT_TYPE_BY_TOPIC
            ):
                topic: str = obj["topic"]
                event = EVENT_TYPE_BY_TOPIC[topic].model_validate(obj["value"])
            else:
                parsed = _LINE.validate_json(line)
                topic = parsed.topic
                event = EVENT_TYPE_BY_TOPIC[topic].model_validate(parsed.value)
        except ValidationError as exc:
            raise RecordingError(f"line {number}: {describe_validation_error(exc)}") from exc
        yield topic, event


def recording_line(event: InputEvent) -> str:
    """One recording line for an event."""
    topic = TOPIC_BY_EVENT_TYPE[type(event)]
    return f'{{"topic": "{topic}", "value": {event.model_dump_json(exclude_defaults=False)}}}'


class Label(BaseModel):
    """Ground truth for one loan: when it became unreachable (a skip), and what kind of case it
    is. ``unreachable_at`` is None for a loan labelled as *not* a skip (the simulator labels
    every loan, so an evaluation can say which kinds of good borrower got alerts)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    loan_id: Identifier
    unreachable_at: Timestamp | None = None
    kind: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @property
    def is_skip(self) -> bool:
        return self.unreachable_at is not None

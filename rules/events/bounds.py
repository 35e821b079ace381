"""The bounds every front door applies, defined once (docs/reliability.md has them as a table).

HTTP ingest, the Traccar forward, the JT/T 808 gateway and the worker's decode of raw Kafka
records all validate through the event models, and the models take their field types from here:
finite numbers within physical and business ranges, bounded strings, timestamps within absolute
limits and — when the caller names the arrival time in the validation context — within a window
around it. JSON nesting depth is checked on decoded values before validation (`depth_problem`),
and `clip_depth` makes any decoded value serialisable again for a dead letter.

Pure: no clock. The caller passes the arrival time (`TimeWindow.context(received_at)`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, ValidationInfo
from pydantic_core import PydanticCustomError

DAY_S = 86_400.0

# Amounts in the loan's currency units. An auto-loan instalment is far below a billion; anything
# above is a unit mistake (cents as yuan) or an attack (1e308 twice makes the paid sum infinite).
MAX_AMOUNT = 1_000_000_000.0
MAX_INSTALLMENT_NO = 1000

# Physical ranges of a position report.
MAX_SPEED_KMH = 1000.0  # faster than any car by far; trackers send 0xFFFF for "unknown"
MAX_ACCURACY_M = 100_000.0  # an LBS fix is a few km; 100 km means "no idea"
MIN_ALTITUDE_M = -1_000.0
MAX_ALTITUDE_M = 100_000.0

# Absolute limits on any event time, whatever the arrival time: before 2000 a clock was reset
# (JT/T 808 encodes the year in two BCD digits from 2000), from 2100 on it is garbage — and
# year 9999 with a negative offset is not a datetime Python can hold in UTC.
MIN_EVENT_TIME = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
MAX_EVENT_TIME = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
_MIN_TS = MIN_EVENT_TIME.timestamp()
_MAX_TS = MAX_EVENT_TIME.timestamp()

# Default window around the arrival time (services/settings.py `bounds` group overrides them).
# Future skew: tracker and server clocks agree to seconds (GPS time, NTP); ten minutes covers a
# badly set device without letting a wrong time zone (+8 h) through. It must stay below the
# engine's own `max_future_skew_s` (one day), so nothing accepted is dropped there.
DEFAULT_MAX_FUTURE_SKEW_S = 600.0
# Maximum age: longer than any auto-loan term; older events cannot concern a live loan.
DEFAULT_MAX_AGE_S = 5 * 365 * DAY_S

# JSON nesting: the deepest event (a Loan's MultiPolygon home region) is 6 levels; orjson reads
# 1,024 levels but writes only 254, so a deeper value could not even be dead-lettered.
MAX_JSON_DEPTH = 32

# Strings: identifiers, names, free text.
MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 200
MAX_TEXT_LENGTH = 1000

WINDOW_CONTEXT_KEY = "skipwatch_time_window"


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """How far an event time may lie ahead of or behind its arrival time."""

    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S
    max_age_s: float = DEFAULT_MAX_AGE_S

    def context(self, received_at: float) -> dict[str, Any]:
        """Validation context checking timestamps against `received_at` (epoch seconds)."""
        return {WINDOW_CONTEXT_KEY: (self, received_at)}


DEFAULT_WINDOW = TimeWindow()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def _not_a_number(value: Any) -> Any:
    # pydantic would read a number as Unix time, seconds or milliseconds by its size; the
    # contract is RFC 3339 with an offset, so a number is a wrong type, not a guess.
    if isinstance(value, int | float):
        raise PydanticCustomError(
            "timestamp_type",
            "must be an RFC 3339 time with an offset (e.g. 2026-03-01T08:00:00+08:00), "
            "not a number",
        )
    return value


# Local years whose every instant lies within the absolute limits whatever the offset (an offset
# is less than a day): a time in them needs no conversion to check (it costs as much as the rest
# of a ping's validation).
_SAFE_YEARS = range(MIN_EVENT_TIME.year + 1, MAX_EVENT_TIME.year - 1)


def _check_time(value: dt.datetime, info: ValidationInfo) -> dt.datetime:
    context = info.context
    if not context and value.year in _SAFE_YEARS:
        return value  # within the absolute limits, and no window to check
    ts = value.timestamp()
    if not _MIN_TS <= ts < _MAX_TS:
        raise PydanticCustomError(
            "timestamp_out_of_range",
            "must lie between {low} and {high}",
            {"low": MIN_EVENT_TIME.isoformat(), "high": MAX_EVENT_TIME.isoformat()},
        )
    if context:
        bound = context.get(WINDOW_CONTEXT_KEY)
        if bound is not None:
            window, received_at = bound
            if ts > received_at + window.max_future_skew_s:
                raise PydanticCustomError(
                    "timestamp_in_future",
                    "is {ahead} s ahead of the arrival time {arrival}; at most {skew} s "
                    "ahead is accepted (check the sender's clock and time zone)",
                    {
                        "ahead": round(ts - received_at),
                        "arrival": _iso(received_at),
                        "skew": round(window.max_future_skew_s),
                    },
                )
            if ts < received_at - window.max_age_s:
                raise PydanticCustomError(
                    "timestamp_too_old",
                    "is {age} days before the arrival time {arrival}; at most {limit} "
                    "days old is accepted",
                    {
                        "age": round((received_at - ts) / DAY_S),
                        "arrival": _iso(received_at),
                        "limit": round(window.max_age_s / DAY_S),
                    },
                )
    return value


# RFC 3339 with an explicit offset (a naive timestamp is a validation error), within the absolute
# limits and, when the context names the arrival time, within the window around it.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_not_a_number), AfterValidator(_check_time)]

# Numbers are strict: a JSON number (an integer is a number), never a numeric string or a bool.
Amount = Annotated[float, Field(strict=True, gt=0.0, le=MAX_AMOUNT, allow_inf_nan=False)]
InstallmentNo = Annotated[int, Field(strict=True, ge=1, le=MAX_INSTALLMENT_NO)]
Latitude = Annotated[float, Field(strict=True, ge=-90.0, le=90.0, allow_inf_nan=False)]
Longitude = Annotated[float, Field(strict=True, ge=-180.0, le=180.0, allow_inf_nan=False)]
SpeedKmh = Annotated[float, Field(strict=True, ge=0.0, le=MAX_SPEED_KMH, allow_inf_nan=False)]
Heading = Annotated[float, Field(strict=True, ge=0.0, le=360.0, allow_inf_nan=False)]
BatteryPct = Annotated[float, Field(strict=True, ge=0.0, le=100.0, allow_inf_nan=False)]
AccuracyM = Annotated[float, Field(strict=True, ge=0.0, le=MAX_ACCURACY_M, allow_inf_nan=False)]
AltitudeM = Annotated[
    float, Field(strict=True, ge=MIN_ALTITUDE_M, le=MAX_ALTITUDE_M, allow_inf_nan=False)
]
# Free text and names: bounded, no control characters (a NUL or an escape sequence in a name
# ends up in logs, CSV exports and terminals).
_NO_CONTROL = r"^[^\x00-\x08\x0b-\x1f\x7f]*$"
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=_NO_CONTROL)]
Text = Annotated[str, Field(max_length=MAX_TEXT_LENGTH, pattern=_NO_CONTROL)]
# An identifier as senders give it: non-empty, bounded, no surrounding whitespace, no control
# characters.
Identifier = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=r"^[^\s\x00-\x1f\x7f]([^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$",
    ),
]


def depth_problem(value: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """The dotted path where a decoded JSON value nests deeper than `max_depth` containers,
    or None. A scalar has depth 0, ``[1]`` depth 1. Iterative: never recurses."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict):
            children: Any = node.items()
        elif isinstance(node, list):
            children = enumerate(node)
        else:
            continue
        depth += 1
        if depth > max_depth:
            return path or "(root)"
        for key, child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth, f"{path}.{key}" if path else str(key)))
    return None


TRUNCATED = "<truncated: nested too deep>"


def clip_depth(value: Any, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A copy of a decoded JSON value with containers below `max_depth` replaced by a marker,
    so that any value, however deep, can be serialised (for a dead letter)."""
    if not isinstance(value, dict | list):
        return value
    if max_depth <= 0:
        return TRUNCATED
    if isinstance(value, dict):
        return {str(k): clip_depth(v, max_depth - 1) for k, v in value.items()}
    return [clip_depth(v, max_depth - 1) for v in value]

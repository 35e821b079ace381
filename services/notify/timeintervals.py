"""Time intervals (Alertmanager's `time_intervals`): times of day, weekdays, days of the month,
months and years, in a named time zone. Pure: the instant is a parameter."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def _minutes(text: str) -> int:
    found = _CLOCK.match(text)
    if found is None:
        raise ValueError(f"time {text!r} must be HH:MM (00:00 to 24:00)")
    value = int(found.group(1)) * 60 + int(found.group(2))
    if value > 24 * 60:
        raise ValueError(f"time {text!r} is after 24:00")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimeRange(_Strict):
    """[start_time, end_time) in minutes of the day, e.g. 08:00 to 21:00."""

    start_time: str
    end_time: str

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if _minutes(self.start_time) >= _minutes(self.end_time):
            raise ValueError(
                f"start_time {self.start_time} must be before end_time {self.end_time}"
            )
        return self

    def contains(self, minute: int) -> bool:
        return _minutes(self.start_time) <= minute < _minutes(self.end_time)


def _range(text: str, names: tuple[str, ...] | None, low: int, high: int) -> tuple[int, int]:
    """`a` or `a:b` (inclusive) of numbers or names, checked to lie in [low, high]."""

    def one(part: str) -> int:
        part = part.strip().lower()
        if names is not None and part in names:
            return names.index(part) + 1
        try:
            value = int(part)
        except ValueError:
            allowed = f" or one of {', '.join(names)}" if names else ""
            raise ValueError(f"{part!r} is not a number{allowed}") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

    first, _, last = text.partition(":")
    start = one(first)
    end = one(last) if last else start
    return start, end


class TimeInterval(_Strict):
    """One interval: every field given must contain the instant (an absent field: any)."""

    times: list[TimeRange] = Field(default_factory=list)
    weekdays: list[str] = Field(default_factory=list)
    days_of_month: list[str] = Field(default_factory=list)
    months: list[str] = Field(default_factory=list)
    years: list[str] = Field(default_factory=list)
    location: Annotated[str, Field(description="IANA time zone")] = "UTC"

    @field_validator("location")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[str]) -> list[str]:
        for item in value:
            start, end = _range(item, WEEKDAYS, 1, 7)
            if start > end:
                raise ValueError(f"weekday range {item!r} runs backwards")
        return value

    @field_validator("days_of_month")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        for item in value:
            start, end = _range(item, None, -31, 31)
            if 0 in (start, end):
                raise ValueError("days_of_month are 1..31 or -31..-1 (counted from the end)")
            if (start > 0) == (end > 0) and start > end:
                raise ValueError(f"day range {item!r} runs backwards")
        return value

    @field_validator("months")
    @classmethod
    def _months(cls, value: list[str]) -> list[str]:
        for item in value:
            start, end = _range(item, MONTHS, 1, 12)
            if start > end:
                raise ValueError(f"month range {item!r} runs backwards")
        return value

    @field_validator("years")
    @classmethod
    def _years(cls, value: list[str]) -> list[str]:
        for item in value:
            start, end = _range(item, None, 1, 9999)
            if start > end:
                raise ValueError(f"year range {item!r} runs backwards")
        return value

    def contains(self, instant: dt.datetime) -> bool:
        local = instant.astimezone(ZoneInfo(self.location))
        if self.times and not any(r.contains(local.hour * 60 + local.minute) for r in self.times):
            return False
        if self.weekdays and not _in_any(self.weekdays, WEEKDAYS, 1, 7, local.isoweekday()):
            return False
        if self.days_of_month and not self._day_matches(local):
            return False
        if self.months and not _in_any(self.months, MONTHS, 1, 12, local.month):
            return False
        return not self.years or _in_any(self.years, None, 1, 9999, local.year)

    def _day_matches(self, local: dt.datetime) -> bool:
        next_month = (local.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        length = (next_month - dt.timedelta(days=1)).day
        for item in self.days_of_month:
            start, end = _range(item, None, -31, 31)
            # Negative days count from the end of the month: -1 is the last day.
            start = start if start > 0 else length + start + 1
            end = end if end > 0 else length + end + 1
            if start <= local.day <= end:
                return True
        return False


def _in_any(
    items: list[str], names: tuple[str, ...] | None, low: int, high: int, value: int
) -> bool:
    for item in items:
        start, end = _range(item, names, low, high)
        if start <= value <= end:
            return True
    return False


class NamedTimeInterval(_Strict):
    name: Annotated[str, Field(min_length=1)]
    time_intervals: list[TimeInterval]

    def contains(self, instant: dt.datetime) -> bool:
        return any(interval.contains(instant) for interval in self.time_intervals)

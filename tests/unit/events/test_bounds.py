"""The shared bounds (rules/events/bounds.py) as every model and the worker's raw decode apply them."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from rules.events import ContactAttempt, GpsPing, Loan, PaymentEvent
from rules.events.bounds import (
    MAX_AMOUNT,
    MAX_JSON_DEPTH,
    TRUNCATED,
    TimeWindow,
    clip_depth,
    depth_problem,
)
from streams.records import Rejected, decode

pytestmark = pytest.mark.unit

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def iso(t: dt.datetime) -> str:
    return t.isoformat()


def payment(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "pay-1",
        "loan_id": "L1",
        "ts": iso(NOW),
        "type": "payment_received",
        "installment_no": 1,
        "amount": 3500.0,
        **overrides,
    }


def contact(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "c-1",
        "loan_id": "L1",
        "ts": iso(NOW),
        "party": "borrower",
        "channel": "call",
        "outcome": "no_answer",
        **overrides,
    }


def ping(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "p-1",
        "device_id": "dev-1",
        "vendor": "acme",
        "ts": iso(NOW),
        "lat": 30.66,
        "lon": 104.06,
        "device_kind": "wired",
        **overrides,
    }


def fields(exc: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in exc.value.errors()]


@pytest.mark.parametrize("amount", [1e308, MAX_AMOUNT * 1.0001, 0.0, -1.0])
def test_amount_is_positive_and_below_the_maximum(amount: float) -> None:
    with pytest.raises(ValidationError) as exc:
        PaymentEvent.model_validate(payment(amount=amount))
    assert fields(exc) == ["amount"]


def test_schedule_amounts_are_bounded_too() -> None:
    loan = {
        "loan_id": "L1",
        "borrower": {"name": "A", "phone": "+8613800000001"},
        "vehicle": {"vin": "LSVAB12C3DE456701", "plate": "A1"},
        "schedule": [{"installment_no": 1, "due_date": "2026-01-05", "amount": 1e308}],
    }
    with pytest.raises(ValidationError) as exc:
        Loan.model_validate(loan)
    assert fields(exc) == ["schedule.0.amount"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("lat", 90.5), ("lon", -181.0), ("speed_kmh", 1e308), ("battery_pct", 101.0), ("heading", -1)],
)
def test_ping_numbers_stay_in_physical_ranges(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as exc:
        GpsPing.model_validate(ping(**{field: value}))
    assert fields(exc) == [field]


@pytest.mark.parametrize(
    "ts", ["9999-12-31T23:59:59-14:00", "1970-01-01T00:00:00Z", "2100-01-01T00:00:00Z"]
)
def test_timestamps_outside_the_absolute_limits_are_rejected_without_a_window(ts: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ContactAttempt.model_validate(contact(ts=ts))
    assert fields(exc) == ["ts"]
    assert exc.value.errors()[0]["type"] == "timestamp_out_of_range"


@pytest.mark.parametrize(
    ("ts", "accepted"),
    [
        ("2000-01-01T07:59:59+08:00", False),  # 1999-12-31T23:59:59Z
        ("2000-01-01T08:00:00+08:00", True),
        ("2000-12-31T23:59:59+23:59", True),
        ("2001-01-01T00:00:00+23:59", True),  # the first year checked without converting
        ("2098-12-31T23:59:59-23:59", True),  # the last one
        ("2099-12-31T15:59:59-08:00", True),
        ("2099-12-31T16:00:00-08:00", False),  # 2100-01-01T00:00:00Z
        ("2099-12-31T23:59:59-23:59", False),
    ],
)
def test_the_absolute_limits_hold_at_their_edges_whatever_the_offset(
    ts: str, accepted: bool
) -> None:
    """The limits are instants: a local time near them is judged in UTC (the years between are
    accepted without converting, which no offset can take across a limit)."""
    if accepted:
        ContactAttempt.model_validate(contact(ts=ts))
        return
    with pytest.raises(ValidationError) as exc:
        ContactAttempt.model_validate(contact(ts=ts))
    assert exc.value.errors()[0]["type"] == "timestamp_out_of_range"


def test_window_rejects_future_skew_and_old_events_relative_to_arrival() -> None:
    window = TimeWindow(max_future_skew_s=600, max_age_s=30 * 86400)
    arrival = NOW.timestamp()
    context = window.context(arrival)
    ahead = iso(NOW + dt.timedelta(seconds=601))
    with pytest.raises(ValidationError) as exc:
        ContactAttempt.model_validate(contact(ts=ahead), context=context)
    assert exc.value.errors()[0]["type"] == "timestamp_in_future"
    assert "601 s ahead" in str(exc.value)
    old = iso(NOW - dt.timedelta(days=31))
    with pytest.raises(ValidationError) as exc:
        PaymentEvent.model_validate(payment(ts=old), context=context)
    assert exc.value.errors()[0]["type"] == "timestamp_too_old"
    # Inside the window on both sides: accepted.
    ContactAttempt.model_validate(contact(ts=iso(NOW + dt.timedelta(seconds=599))), context=context)
    PaymentEvent.model_validate(payment(ts=iso(NOW - dt.timedelta(days=29))), context=context)


@pytest.mark.parametrize("bad", ["dev\x00-1", "dev-1\n", "de\x1bv", "a" * 129])
def test_identifiers_refuse_control_characters_and_overlong_values(bad: str) -> None:
    with pytest.raises(ValidationError) as exc:
        GpsPing.model_validate(ping(device_id=bad))
    assert fields(exc) == ["device_id"]


def test_depth_problem_names_the_path_and_never_recurses() -> None:
    assert depth_problem({"a": [1, {"b": 2}]}) is None
    deep: Any = 1
    for _ in range(MAX_JSON_DEPTH):
        deep = [deep]
    assert depth_problem({"lat": deep}) == "lat." + ".".join(["0"] * (MAX_JSON_DEPTH - 1))
    very_deep = orjson.loads(b"[" * 1024 + b"]" * 1024)
    assert depth_problem(very_deep) is not None


def test_clip_depth_makes_any_decoded_value_serialisable() -> None:
    value = {"lat": orjson.loads(b"[" * 1000 + b"]" * 1000), "event_id": "x"}
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(value)
    clipped = orjson.loads(orjson.dumps(clip_depth(value)))
    assert clipped["event_id"] == "x"
    assert TRUNCATED in orjson.dumps(clipped).decode()


def test_worker_decode_applies_the_window_against_the_record_timestamp() -> None:
    window = TimeWindow(max_future_skew_s=600, max_age_s=30 * 86400)
    arrival = time.time()
    future = orjson.dumps(contact(ts=iso(NOW + dt.timedelta(hours=25))))
    decoded = decode("contacts", future, window=window, received_at=arrival)
    assert isinstance(decoded, Rejected)
    assert decoded.reason == "invalid"
    assert decoded.detail.startswith("ts: ")
    assert "ahead of the arrival time" in decoded.detail
    fine = orjson.dumps(contact())
    assert isinstance(decode("contacts", fine, window=window, received_at=arrival), ContactAttempt)
    # Without an arrival time (event-clock replays) only the absolute limits hold.
    year_9999 = orjson.dumps(contact(ts="9999-12-31T23:59:59-14:00"))
    rejected = decode("contacts", year_9999)
    assert isinstance(rejected, Rejected) and rejected.detail.startswith("ts: ")
    huge = orjson.dumps(payment(amount=1e308))
    rejected = decode("payments", huge, window=window, received_at=arrival)
    assert isinstance(rejected, Rejected) and rejected.detail.startswith("amount: ")


@pytest.mark.parametrize("ts", [1.7e9, 1_700_000_000_000, True])
def test_a_number_is_not_a_timestamp(ts: object) -> None:
    with pytest.raises(ValidationError) as exc:
        ContactAttempt.model_validate(contact(ts=ts))
    assert exc.value.errors()[0]["type"] == "timestamp_type"
    with pytest.raises(ValidationError):
        ContactAttempt.model_validate_json(orjson.dumps(contact(ts=ts)))


@pytest.mark.parametrize("amount", ["100", True])
def test_numbers_are_strict(amount: object) -> None:
    with pytest.raises(ValidationError) as exc:
        PaymentEvent.model_validate(payment(amount=amount))
    assert fields(exc) == ["amount"]
    assert PaymentEvent.model_validate(payment(amount=3500)).amount == 3500.0

"""The dead-letter tally behind `GET /v1/overview/failures` (the route itself runs against Kafka
in tests/integration/test_overview_failures.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from services.api.failures import DeadLetterTally, reason_of
from services.kafka import deadletter_headers
from tests.unit.api.support import VENDOR_KEY, Api, bearer, make_settings

pytestmark = pytest.mark.unit


def test_reason_is_bounded() -> None:
    assert reason_of(deadletter_headers("invalid", "p.payments")) == "invalid"
    assert reason_of(deadletter_headers("too_deep", "p.payments")) == "too_deep"
    assert reason_of(deadletter_headers("x" * 500, "p.payments")) == "other"
    assert reason_of([("another", b"1")]) == "unknown"
    assert reason_of(None) == "unknown"


def test_tally_counts_total_and_the_sliding_day() -> None:
    now = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
    tally = DeadLetterTally(make_settings())
    ms = lambda hours: int((now - dt.timedelta(hours=hours)).timestamp() * 1000)  # noqa: E731
    for hours, reason in [(1, "invalid"), (23.9, "invalid"), (25, "invalid"), (2, "undecodable")]:
        tally.add(ms(hours), reason, now)
    assert tally.total == {"invalid": 3, "undecodable": 1}
    assert tally.recent(now) == {"invalid": 2, "undecodable": 1}
    # An hour later the 23.9 h one has left the day; totals stay.
    later = now + dt.timedelta(hours=1)
    assert tally.recent(later) == {"invalid": 1, "undecodable": 1}
    assert sum(tally.total.values()) == 4


async def test_failures_need_a_reader(api: Api) -> None:
    assert (await api.client.get("/v1/overview/failures")).status_code == 401
    vendor = await api.client.get("/v1/overview/failures", headers=bearer(VENDOR_KEY))
    assert vendor.status_code == 403

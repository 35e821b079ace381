"""The worker applies the front-door bounds to raw Kafka records (streams/records.py): a record
that bypassed the API is dead-lettered naming the field, and the lane goes on."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from tests.integration.conftest import Stack
from tests.scenarios import contact as contact_event
from tests.scenarios import loan, payment

pytestmark = pytest.mark.integration


def contact(event_id: str, ts: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "loan_id": "L-bounds",
            "ts": ts,
            "party": "borrower",
            "channel": "call",
            "outcome": "no_answer",
        }
    )


async def test_raw_records_out_of_bounds_are_dead_lettered_naming_the_field(stack: Stack) -> None:
    now = dt.datetime.now(dt.UTC)
    stack.start_worker(SKIPWATCH_WORKER__CLOCK="wall")
    bad = [
        ("contacts", contact("c-future", (now + dt.timedelta(hours=25)).isoformat()), "ts: is"),
        ("contacts", contact("c-9999", "9999-12-31T23:59:59-14:00"), "ts: must lie between"),
        (
            "payments",
            orjson.dumps(
                {
                    "event_id": "p-huge",
                    "loan_id": "L-bounds",
                    "ts": now.isoformat(),
                    "type": "payment_received",
                    "installment_no": 1,
                    "amount": 1e308,
                }
            ),
            "amount: ",
        ),
    ]
    for topic, value, _ in bad:
        await stack.produce_raw(topic, b"L-bounds", value)

    dead = await stack.read_topic("deadletter", lambda records: len(records) >= len(bad))
    found = {
        orjson.loads(r.value)["event_id"]: (
            dict(r.headers)["skipwatch-reason"],
            dict(r.headers)["skipwatch-detail"].decode(),
        )
        for r in dead
    }
    print(f"dead-lettered by the worker: {len(found)} of {len(bad)}: {found}")
    for (_, _, detail), event_id in zip(bad, ("c-future", "c-9999", "p-huge"), strict=True):
        reason, text = found[event_id]
        assert reason == b"invalid" and text.startswith(detail), (event_id, text)
    assert "ahead of the arrival time" in found["c-future"][1]


async def test_an_event_the_engine_refuses_as_too_far_ahead_is_dead_lettered(stack: Stack) -> None:
    """Issue 14 item 4, the engine's own limit: an event more than its `max_future_skew_s` (one
    day) ahead of the engine's clock used to be counted `applied` by the worker and dropped by
    the engine in silence. With an event clock and an allowed lateness of two days, the
    engine's clock runs two days behind the newest event, so every dated event is such an
    event: each one is dead-lettered `ahead_of_clock` with the engine's reason, the loan is
    not quarantined and the worker does not restart."""
    stack.start_worker(SKIPWATCH_WORKER__ALLOWED_LATENESS_S=str(2 * 86400))
    when = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
    await stack.produce(
        [
            loan("L-ahead"),
            payment("L-ahead", when),
            contact_event("L-ahead", when + dt.timedelta(minutes=5), "no_answer", 1),
        ]
    )
    dead = await stack.read_topic("deadletter", lambda records: len(records) >= 2, timeout_s=90)
    found = {
        orjson.loads(r.value)["event_id"]: (
            dict(r.headers)["skipwatch-reason"].decode(),
            dict(r.headers)["skipwatch-detail"].decode(),
        )
        for r in dead
    }
    print(f"refused by the engine and dead-lettered: {found}")
    assert set(found) == {"L-ahead-pay1", "L-ahead-c1"}
    for reason, detail in found.values():
        assert reason == "ahead_of_clock"
        assert "s ahead of the engine's clock" in detail and "at most 86400 s" in detail
    assert not [w for w in stack.workers if w.restarts]

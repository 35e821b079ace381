"""The worker applies the front-door bounds to raw Kafka records (streams/records.py): a record
that bypassed the API is dead-lettered naming the field, and the lane goes on."""

from __future__ import annotations

import asyncio
import datetime as dt

import orjson
import pytest

from tests.integration.conftest import Stack, WorkerProcess

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


async def test_a_worker_whose_event_clock_would_refuse_every_event_does_not_start(
    stack: Stack,
) -> None:
    """Issue 14 item 4, the engine's own limit: an event more than its `max_future_skew_s` (one
    day) ahead of the engine's clock is refused (FutureEventError, dead-lettered
    `ahead_of_clock`; tests/unit/rules). A worker reaches that limit only when misconfigured:
    with the event clock `now` trails the newest event by the allowed lateness, so a lateness of
    two days made every dated event "too far ahead" and dead-lettered the whole input. Such a
    worker now refuses to start, naming the variable, instead of dead-lettering everything."""
    worker = WorkerProcess(
        stack.worker_env("w-late", SKIPWATCH_WORKER__ALLOWED_LATENESS_S=str(2 * 86400)),
        stack.tmp / "w-late.log",
    )
    worker.start()
    assert worker.proc is not None
    code = await asyncio.to_thread(worker.proc.wait, 60)
    tail = worker.log_tail()
    print(f"worker exit code {code}; log tail:\n{tail}")
    assert code == 2, tail
    assert "SKIPWATCH_WORKER" in tail and "allowed_lateness_s=172800 with clock=event" in tail

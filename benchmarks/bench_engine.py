"""Benchmark: the rules engine alone (no Kafka), one core, a mixed stream over many loans.

    .venv/bin/python benchmarks/bench_engine.py [--loans 100000] [--events 1000000]

Measures events/s for ``Engine.apply`` alone and for the worker's full loop around it
(``apply`` + ``next_deadline`` + a deadline heap swept as the watermark moves), and the
serialised state size per loan. Events are built beforehand (decoding is not the engine's cost)
with ``model_construct`` so building a million of them stays quick.

The stream: every loan registered (Chengdu, 30 km home circle, 12-month schedule, a wired and a
wireless tracker), then arrival-ordered traffic: wired heartbeats from parked cars
(most pings), pings from moving cars, daily wireless pings, contact attempts, payments, the odd
alarm, drift fix and redelivered event; 2 h of event time by default, across the midnight at
which instalment 1 falls due, so ~100k absence deadlines fire during the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import heapq
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rules.engine import Engine, InputEvent
from rules.events import (
    Alarm,
    Borrower,
    Channel,
    CircleRegion,
    ContactAttempt,
    DeviceBinding,
    DeviceKind,
    Fix,
    GpsPing,
    Installment,
    Loan,
    Outcome,
    Party,
    PaymentEvent,
    PaymentType,
    Vehicle,
)
from rules.state import LoanState

CST = dt.timezone(dt.timedelta(hours=8))
# The stream starts an hour before instalment 1 (due 03-05) becomes past due at midnight, so
# every loan that has not paid hits an absence deadline during the run.
T0 = dt.datetime(2024, 3, 5, 23, 0, tzinfo=CST)
CENTRE = (30.66, 104.07)
LOTS = [(30.7142, 104.0335), (30.7268, 104.0521), (30.6921, 104.1306)]


def make_loans(rng: random.Random, count: int) -> list[Loan]:
    borrower = Borrower(name="示例", phone="+8613800000000")
    vehicle = Vehicle(vin="LSVAB12C3DE456789", plate="川A12345")
    schedule = tuple(
        Installment(installment_no=n, due_date=dt.date(2024, 2 + n, 5), amount=3500.0)
        for n in range(1, 11)
    )
    region = CircleRegion(center=CENTRE, radius_km=30)
    return [
        Loan(
            loan_id=f"L{n:06d}",
            borrower=borrower,
            vehicle=vehicle,
            devices=(
                DeviceBinding(device_id=f"W{n:06d}", kind=DeviceKind.WIRED),
                DeviceBinding(device_id=f"X{n:06d}", kind=DeviceKind.WIRELESS),
            ),
            home_region=region,
            schedule=schedule,
        )
        for n in range(count)
    ]


class Stream:
    """Arrival-ordered events; each loan has a parked or moving car. With the defaults each loan
    sends an event every ~12 minutes (per mode), like a parked wired tracker's heartbeat."""

    def __init__(self, rng: random.Random, loans: int, events: int, span_s: float) -> None:
        self.rng = rng
        self.loans = loans
        self.total = events
        self.step = dt.timedelta(seconds=span_s / events)
        self.now = T0
        self.position = [
            (CENTRE[0] + rng.uniform(-0.15, 0.15), CENTRE[1] + rng.uniform(-0.15, 0.15))
            for _ in range(loans)
        ]
        self.moving = [rng.random() < 0.15 for _ in range(loans)]
        self.sent: list[InputEvent] = []
        self.n = 0

    def next(self) -> tuple[str, InputEvent]:
        rng = self.rng
        self.n += 1
        self.now += self.step
        ts = self.now
        i = rng.randrange(self.loans)
        loan_id = f"L{i:06d}"
        roll = rng.random()
        if roll < 0.003 and self.sent:  # a redelivered event
            event = rng.choice(self.sent)
            return event.loan_id if not isinstance(event, GpsPing) else loan_id, event
        if roll < 0.04:
            event: InputEvent = ContactAttempt.model_construct(
                event_id=f"c{self.n}",
                loan_id=loan_id,
                ts=ts,
                party=rng.choice(list(Party)),
                channel=Channel.CALL,
                outcome=rng.choice(list(Outcome)),
            )
        elif roll < 0.06:
            event = PaymentEvent.model_construct(
                event_id=f"pay{self.n}",
                loan_id=loan_id,
                ts=ts,
                type=rng.choice([PaymentType.PAYMENT_RECEIVED, PaymentType.PAYMENT_FAILED]),
                installment_no=1,
                amount=3500.0,
                currency="CNY",
                due_date=None,
            )
        else:
            lat, lon = self.position[i]
            if self.moving[i]:
                lat += rng.uniform(-0.003, 0.003)
                lon += rng.uniform(-0.003, 0.003)
                if rng.random() < 0.001:
                    lat, lon = rng.choice(LOTS)
                self.position[i] = (lat, lon)
            else:  # parked: GPS jitter of a few metres
                lat += rng.uniform(-0.00003, 0.00003)
                lon += rng.uniform(-0.00003, 0.00003)
            wireless = roll > 0.97
            drift = rng.random() < 0.0005
            event = GpsPing.model_construct(
                event_id=f"g{self.n}",
                device_id=f"{'X' if wireless else 'W'}{i:06d}",
                vendor="bench",
                ts=ts,
                lat=lat + (1.5 if drift else 0.0),
                lon=lon,
                speed_kmh=None,
                heading=None,
                fix=Fix.GPS if rng.random() > 0.05 else Fix.LBS,
                acc_on=None,
                battery_pct=None,
                device_kind=DeviceKind.WIRELESS if wireless else DeviceKind.WIRED,
                alarms=(Alarm.POWER_CUT,) if rng.random() < 0.0005 else (),
                backfill=False,
            )
        if len(self.sent) < 1000:
            self.sent.append(event)
        return loan_id, event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loans", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--span-hours", type=float, default=2.0, help="event time covered")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    engine = Engine.default()
    print(f"catalog: {len(engine.rules)} rules, {len(engine.places or ())} places", flush=True)
    t = time.perf_counter()
    loans = make_loans(rng, args.loans)
    states: dict[str, LoanState] = {}
    heap: list[tuple[float, str]] = []
    for registered in loans:
        state = states[registered.loan_id] = engine.new_state(registered.loan_id)
        engine.apply(state, registered, T0)
    print(f"registered {len(loans):,} loans in {time.perf_counter() - t:.1f} s", flush=True)
    del loans

    # Both measured modes draw from one stream, so it covers twice the events.
    stream = Stream(rng, args.loans, 2 * args.events, args.span_hours * 3600)
    apply_time = loop_time = 0.0
    processed = alerts = swept = 0
    while processed < args.events:
        size = min(args.chunk, args.events - processed)
        batch = [stream.next() for _ in range(size)]  # built outside the timed region
        nows = [event.ts for _, event in batch]  # type: ignore[union-attr]
        gc.disable()
        # 1) engine.apply alone
        start = time.perf_counter()
        for (loan_id, event), now in zip(batch, nows, strict=True):
            alerts += len(engine.apply(states[loan_id], event, now))
        apply_time += time.perf_counter() - start
        # 2) the worker's loop around it, on the same kind of traffic (next batch)
        batch = [stream.next() for _ in range(size)]
        nows = [event.ts for _, event in batch]  # type: ignore[union-attr]
        start = time.perf_counter()
        for (loan_id, event), now in zip(batch, nows, strict=True):
            state = states[loan_id]
            alerts += len(engine.apply(state, event, now))
            deadline = engine.next_deadline(state)
            if deadline is not None:
                heapq.heappush(heap, (deadline.timestamp(), loan_id))
            mark = now.timestamp()
            while heap and heap[0][0] <= mark:
                _, due = heapq.heappop(heap)
                alerts += len(engine.advance(states[due], now))
                swept += 1
        loop_time += time.perf_counter() - start
        gc.enable()
        processed += size
        print(
            f"  {processed:>9,} events | apply {processed / apply_time:>9,.0f} ev/s | "
            f"apply+deadlines {processed / loop_time:>9,.0f} ev/s | alerts {alerts:,} | "
            f"swept {swept:,} | heap {len(heap):,}",
            flush=True,
        )

    # The worker restores and saves each touched loan's state once per batch.
    start = time.perf_counter()
    blobs = [s.to_bytes() for s in states.values()]
    save_time = time.perf_counter() - start
    start = time.perf_counter()
    for blob in blobs:
        LoanState.from_bytes(blob)
    load_time = time.perf_counter() - start
    sizes = sorted(len(b) for b in blobs)
    print("\nresults")
    print(f"  loans                      {len(states):,}")
    print(f"  events (each mode)         {processed:,}")
    print(f"  engine.apply               {processed / apply_time:,.0f} events/s (one core)")
    print(f"  apply + deadline loop      {processed / loop_time:,.0f} events/s (one core)")
    print(f"  alert events emitted       {alerts:,}")
    print(
        "  state bytes per loan       "
        f"mean {statistics.fmean(sizes):,.0f}, p50 {sizes[len(sizes) // 2]:,}, "
        f"p95 {sizes[int(len(sizes) * 0.95)]:,}, max {sizes[-1]:,}"
    )
    print(
        f"  state to_bytes/from_bytes  {save_time / len(blobs) * 1e6:.1f} / "
        f"{load_time / len(blobs) * 1e6:.1f} µs per loan"
    )
    print(f"  engine counters            {engine.stats}")


if __name__ == "__main__":
    main()

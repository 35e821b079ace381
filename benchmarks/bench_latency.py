"""Event in Kafka → alert on the alerts topic, under a steady load (DESIGN §9: p99 ≤ 250 ms at
5,000 events/s sustained; this measures the worker's part, not the API's or a webhook's).

    python benchmarks/bench_latency.py [--bootstrap HOST:PORT] [--rate 2000] [--seconds 30]
                                       [--processes 1] [--loans 2000] [--warmup-seconds 5]

  1. warm-up: the loans are produced and a worker takes them and binds their devices;
  2. the worker processes (`--processes`, one group) run; the simulator's mixed stream is
     produced at `--rate` events/s, paced every 10 ms, for `--seconds`;
  3. after `--warmup-seconds` of load, every `--probe-ms` one loan's wired tracker reports a
     removal alarm (a copy of its latest ping in the stream, a second after the stream's event
     time), which fires the catalog's `tracker-removed` rule at once; the latency of a probe
     runs from the moment Kafka acknowledged it until its alert is read from the alerts topic.
Prints the produced rate, the latency percentiles over the probes, and how far the worker
group is behind when the load stops (a worker that does not keep up shows growing latency).
Without --bootstrap it starts its own Kafka (deploy/kafka/kafka.sh) in a temp folder.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer
from bench_worker import (
    Watch,
    Worker,
    clock_event,
    kafka,
    produce,
    progress,
    take_loans,
)  # also puts the project on sys.path

from services.kafka import TOPICS, WORKER_TOPICS, ensure_topics, producer_at
from services.simulator import mixed_stream

PROBE_RULE = "tracker-removed"


class Probes:
    """Removal alarms for one loan at a time, each sent once, and their alerts."""

    def __init__(self) -> None:
        self.latest: dict[bytes, dict[str, object]] = {}  # device -> its latest ping in the stream
        self.now: object = None  # the stream's event time (ts of the latest event sent)
        self.acked_at: dict[str, float] = {}  # loan id -> when Kafka took its probe
        self.latency_s: dict[str, float] = {}
        self.used: set[bytes] = set()

    def next(self) -> tuple[bytes, bytes, str] | None:
        """(device, ping value, loan id) of a device not probed yet, or None."""
        for device, ping in self.latest.items():
            if device in self.used:
                continue
            self.used.add(device)
            number = device.decode().split("-")[1]  # dev-<n>-w belongs to loan-<n, 6 digits>
            loan_id = f"loan-{int(number):06d}"
            # A second after the stream's event time: an older ping is a late one, whose
            # decision waits for the backfill to settle.
            now = datetime.fromisoformat(str(self.now or ping["ts"])) + timedelta(seconds=1)
            alarm = dict(
                ping,
                event_id=f"probe-{uuid.uuid4().hex}",
                ts=now.isoformat(),
                alarms=["removal"],
            )
            return device, orjson.dumps(alarm), loan_id
        return None


async def load(
    bootstrap: str,
    events: list[tuple[str, bytes, bytes]],
    rate: float,
    seconds: float,
    probe_every_s: float,
    probes: Probes,
    prefix: str,
    warmup_s: float,
) -> float:
    """Produce `events` at `rate`/s for `seconds`, with a probe every `probe_every_s` after the
    first `warmup_s`; the rate reached."""
    # the factory's partitioner, aiokafka's other defaults (as the figures were measured)
    plain = {"acks": 1, "enable_idempotence": False, "max_batch_size": 16384,
             "max_request_size": 1048576, "request_timeout_ms": 40000}  # fmt: skip
    producer = producer_at(bootstrap, linger_ms=5, **plain)
    prober = producer_at(bootstrap, linger_ms=0, **plain)
    await producer.start()
    await prober.start()
    probe_tasks: list[asyncio.Task[None]] = []

    async def probe(device: bytes, value: bytes, loan_id: str) -> None:
        await prober.send_and_wait(prefix + "gps.raw", value, key=device)
        probes.acked_at[loan_id] = time.perf_counter()

    sent, tick = 0, 0.01
    started = time.perf_counter()
    next_probe = started + warmup_s
    last_report = started
    try:
        while (now := time.perf_counter()) - started < seconds and sent < len(events):
            due = min(int((now - started) * rate), len(events))
            pending = []
            while sent < due:
                topic, key, value = events[sent]
                if topic.endswith("gps.raw"):
                    ping = probes.latest[key] = orjson.loads(value)
                    probes.now = ping["ts"]
                pending.append(await producer.send(topic, value, key=key))
                sent += 1
            if now >= next_probe:
                next_probe += probe_every_s
                chosen = probes.next()
                if chosen is not None:
                    probe_tasks.append(asyncio.create_task(probe(*chosen)))
            if now - last_report > 5:
                progress(f"produced {sent:,} events in {now - started:.0f} s")
                last_report = now
            if pending:
                await asyncio.gather(*pending)
            await asyncio.sleep(max(0.0, tick - (time.perf_counter() - now)))
        elapsed = time.perf_counter() - started
        await asyncio.gather(*probe_tasks)
    finally:
        await producer.stop()
        await prober.stop()
    return sent / elapsed


async def collect(bootstrap: str, prefix: str, probes: Probes, stop: asyncio.Event) -> None:
    """Read the alerts topic; the first firing probe alert of each probed loan."""
    consumer = AIOKafkaConsumer(
        prefix + "alerts", bootstrap_servers=bootstrap, auto_offset_reset="latest"
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    alert = orjson.loads(record.value)
                    loan_id = alert["loan_id"]
                    if (
                        alert["rule_id"] == PROBE_RULE
                        and alert["status"] == "firing"
                        and loan_id in probes.acked_at
                        and loan_id not in probes.latency_s
                    ):
                        probes.latency_s[loan_id] = now - probes.acked_at[loan_id]
    finally:
        await consumer.stop()


async def first_alert(
    bootstrap: str, prefix: str, events: list[tuple[str, bytes, bytes]], probes: Probes
) -> None:
    """One probe before the load, waited for: the worker has joined, recovered and processes
    (not counted in the figures)."""
    progress("waiting for the worker: a first probe must come back as an alert")
    topic, device, value = next(r for r in events if r[0] == prefix + "gps.raw")
    probes.latest[device] = orjson.loads(value)
    chosen = probes.next()
    assert chosen is not None
    _, probe, loan_id = chosen
    await produce(bootstrap, [(topic, device, probe)])
    probes.acked_at[loan_id] = time.perf_counter()
    async with asyncio.timeout(180):
        while loan_id not in probes.latency_s:
            await asyncio.sleep(0.2)
    progress(f"worker answering ({probes.latency_s[loan_id]:.1f} s after it was sent)")
    del probes.acked_at[loan_id], probes.latency_s[loan_id]
    probes.latest.clear()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--loans", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=2_000, help="events/s")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--probe-ms", type=float, default=100)
    parser.add_argument(
        "--warmup-seconds", type=float, default=5,
        help="load without probes first: the first records of never-committed partitions make "
        "the worker ask the broker where each starts (a one-off stall of about a second)",
    )  # fmt: skip
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    probe_count = int((args.seconds - args.warmup_seconds) * 1000 / args.probe_ms)
    if probe_count > args.loans:
        parser.error(f"{probe_count:,} probes need as many loans; raise --loans or --probe-ms")

    data = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    with kafka(args.bootstrap, data) as bootstrap:
        prefix = f"latency{uuid.uuid4().hex[:6]}."
        await ensure_topics(bootstrap, prefix, args.partitions, specs=TOPICS + WORKER_TOPICS)
        events_wanted = int(args.rate * args.seconds)
        records = list(mixed_stream(args.loans, events_wanted, topic_prefix=prefix))
        loans = [r for r in records if r[0] == prefix + "loans"]
        events = [r for r in records if r[0] != prefix + "loans"]
        probes = Probes()
        async with Watch(bootstrap) as watch:
            clock = clock_event(prefix, events)
            await take_loans(bootstrap, watch, prefix, args.partitions, data, loans, clock, {})
            stop = asyncio.Event()
            collector = asyncio.create_task(collect(bootstrap, prefix, probes, stop))
            await asyncio.sleep(2)  # the collector reads from the end: let it find the end first
            worker = Worker(bootstrap, prefix, args.partitions, data, args.processes)
            try:
                await first_alert(bootstrap, prefix, events, probes)
                progress(f"load: {args.rate:,.0f} events/s for {args.seconds:.0f} s, probes")
                rate = await load(
                    bootstrap, events, args.rate, args.seconds, args.probe_ms / 1000,
                    probes, prefix, args.warmup_seconds,
                )  # fmt: skip
                ends = await watch.end_offsets([prefix + t for t in ("gps.raw", "payments",
                                                                     "contacts")])  # fmt: skip
                done = await watch.committed(worker.group)
                behind = sum(end - done.get(tp, 0) for tp, end in ends.items())
                deadline = time.perf_counter() + 30  # the last probes' alerts may still come
                while (
                    len(probes.latency_s) < len(probes.acked_at) and time.perf_counter() < deadline
                ):
                    await asyncio.sleep(0.2)
            finally:
                stop.set()
                await collector
                worker.stop()
    latencies = sorted(probes.latency_s.values())
    print(f"events produced                 {rate:,.0f} events/s for {args.seconds:.0f} s "
          f"(target {args.rate:,.0f}); {args.processes} worker process(es)")  # fmt: skip
    print(f"worker group behind at the end  {behind:,} records (committed offsets)")
    print(f"probes answered                 {len(latencies)} of {len(probes.acked_at)}")
    if len(latencies) >= 2:
        print(
            f"event in Kafka → alert read     p50 {percentile(latencies, 50) * 1000:,.0f} ms  "
            f"p95 {percentile(latencies, 95) * 1000:,.0f} ms  "
            f"p99 {percentile(latencies, 99) * 1000:,.0f} ms  "
            f"max {latencies[-1] * 1000:,.0f} ms   (DESIGN target p99 ≤ 250 ms at 5,000 events/s)"
        )


if __name__ == "__main__":
    asyncio.run(main())

"""Event in Kafka → alert on the alerts topic, and with `--dispatchers N` on to a webhook received,
under a steady load (DESIGN §9: p99 ≤ 250 ms at 5,000 events/s sustained).

    python benchmarks/bench_latency.py [--bootstrap HOST:PORT] [--rate 2000] [--seconds 30]
                                       [--processes 1] [--loans 2000] [--warmup-seconds 5]
                                       [--dispatchers 0]

  1. warm-up: the loans are produced and a worker takes them and binds their devices;
  2. the worker processes (`--processes`, one group) run; the simulator's mixed stream is
     produced at `--rate` events/s, paced every 10 ms, for `--seconds`;
  3. after `--warmup-seconds` of load, every `--probe-ms` one loan's wired tracker reports a
     removal alarm (a copy of its latest ping in the stream, a second after the stream's event
     time), which fires the catalog's `tracker-removed` rule at once; the latency of a probe
     runs from the moment Kafka acknowledged it until its alert is read from the alerts topic.
  4. with `--dispatchers N`: N `skipwatch dispatcher` processes (one group, bench_notify.py's)
     send every alert change to a webhook sink on 127.0.0.1 (allow-listed; routing: one
     receiver, group_wait 0s); a probe's second latency runs from Kafka's acknowledgement of
     its event to the arrival of its alert's webhook. Each alert's own hop, alert read from
     the alerts topic → webhook received, is measured too (the dispatcher's share), with the
     webhooks per second and the dispatchers' CPU per webhook over the load.
Prints the produced rate, the latency percentiles over the probes, how far the worker group is
behind when the load stops (a worker that does not keep up shows growing latency) and the
machine's load average (a shared machine: compare figures taken in the same run).
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
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from bench_notify import Dispatchers, WebhookSink, load_average
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
        self.webhook_s: dict[str, float] = {}  # loan id -> event acked → its webhook received
        self.used: set[bytes] = set()
        # Every alert change: (alert id, status, updated_at) -> when it was read from the alerts
        # topic, and how long from then to its webhook.
        self.alert_read_at: dict[tuple[str, str, datetime], float] = {}
        self.hop_s: list[float] = []
        self.webhooks_at: list[float] = []

    def on_webhook(self, body: bytes, at: float) -> None:
        """A webhook arrived at the sink (one alert change each, Standard Webhooks payload)."""
        data = orjson.loads(body)["data"]
        self.webhooks_at.append(at)
        change = (data["id"], data["status"], datetime.fromisoformat(data["updated_at"]))
        read = self.alert_read_at.get(change)
        if read is not None:
            self.hop_s.append(at - read)
        self.first_firing(self.webhook_s, data, at)

    def first_firing(self, into: dict[str, float], alert: dict[str, Any], at: float) -> None:
        """A probe's latency into `into` when `alert` (as JSON) is its loan's first firing probe
        alert: read from the alerts topic, or the `data` of a webhook."""
        loan_id = alert["loan_id"]
        if (
            alert["rule_id"] == PROBE_RULE
            and alert["status"] == "firing"
            and loan_id in self.acked_at
            and loan_id not in into
        ):
            into[loan_id] = at - self.acked_at[loan_id]

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
                    updated_at = datetime.fromisoformat(alert["updated_at"])
                    change = (alert["alert_id"], alert["status"], updated_at)
                    probes.alert_read_at.setdefault(change, now)
                    probes.first_firing(probes.latency_s, alert, now)
    finally:
        await consumer.stop()


async def first_alert(
    bootstrap: str,
    prefix: str,
    events: list[tuple[str, bytes, bytes]],
    probes: Probes,
    webhooks: bool,
) -> None:
    """One probe before the load, waited for: the worker (and the dispatchers when `webhooks`)
    joined, recovered and work (not counted in the figures)."""
    progress("waiting for the worker: a first probe must come back as an alert")
    topic, device, value = next(r for r in events if r[0] == prefix + "gps.raw")
    probes.latest[device] = orjson.loads(value)
    chosen = probes.next()
    assert chosen is not None
    _, probe, loan_id = chosen
    await produce(bootstrap, [(topic, device, probe)])
    probes.acked_at[loan_id] = time.perf_counter()
    async with asyncio.timeout(180):
        while loan_id not in probes.latency_s or (webhooks and loan_id not in probes.webhook_s):
            await asyncio.sleep(0.2)
    progress(f"worker answering ({probes.latency_s[loan_id]:.1f} s after it was sent)")
    if webhooks:
        progress(f"dispatchers answering ({probes.webhook_s.pop(loan_id):.1f} s after it was sent)")
    del probes.acked_at[loan_id], probes.latency_s[loan_id]
    probes.latest.clear()
    probes.hop_s.clear()
    probes.webhooks_at.clear()


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
    parser.add_argument(
        "--dispatchers", type=int, default=0,
        help="dispatcher processes sending every alert to a local webhook sink (0: none, the "
        "latency ends at the alerts topic)",
    )  # fmt: skip
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
            sink = WebhookSink(probes.on_webhook)
            dispatchers = None
            if args.dispatchers:
                await sink.__aenter__()
                dispatchers = Dispatchers(bootstrap, prefix, args.partitions, sink.url, data,
                                          args.dispatchers)  # fmt: skip
            try:
                await first_alert(bootstrap, prefix, events, probes, webhooks=bool(dispatchers))
                progress(f"load: {args.rate:,.0f} events/s for {args.seconds:.0f} s, probes")
                machine_before = load_average()
                cpu_before = dispatchers.cpu_seconds() if dispatchers else 0.0
                load_started = time.perf_counter()
                rate = await load(
                    bootstrap, events, args.rate, args.seconds, args.probe_ms / 1000,
                    probes, prefix, args.warmup_seconds,
                )  # fmt: skip
                load_s = time.perf_counter() - load_started
                dispatcher_cpu = dispatchers.cpu_seconds() - cpu_before if dispatchers else 0.0
                webhooks_in_load = len(probes.webhooks_at)
                ends = await watch.end_offsets([prefix + t for t in ("gps.raw", "payments",
                                                                     "contacts")])  # fmt: skip
                done = await watch.committed(worker.group)
                behind = sum(end - done.get(tp, 0) for tp, end in ends.items())
                deadline = time.perf_counter() + 30  # the last probes' alerts may still come

                def waiting() -> bool:
                    if len(probes.latency_s) < len(probes.acked_at):
                        return True
                    return bool(dispatchers) and len(probes.webhook_s) < len(probes.acked_at)

                while waiting() and time.perf_counter() < deadline:
                    await asyncio.sleep(0.2)
                machine_after = load_average()
            finally:
                stop.set()
                await collector
                worker.stop()
                if dispatchers is not None:
                    dispatchers.stop()
                    await sink.__aexit__()
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
    if args.dispatchers:
        webhooks = sorted(probes.webhook_s.values())
        hops = sorted(probes.hop_s)
        print(f"probe webhooks received         {len(webhooks)} of {len(probes.acked_at)}; "
              f"{args.dispatchers} dispatcher process(es)")  # fmt: skip
        if len(webhooks) >= 2:
            print(
                f"event in Kafka → webhook recv.  p50 {percentile(webhooks, 50) * 1000:,.0f} ms  "
                f"p95 {percentile(webhooks, 95) * 1000:,.0f} ms  "
                f"p99 {percentile(webhooks, 99) * 1000:,.0f} ms  "
                f"max {webhooks[-1] * 1000:,.0f} ms"
            )
        if len(hops) >= 2:
            print(
                f"alert read → webhook recv.      p50 {percentile(hops, 50) * 1000:,.0f} ms  "
                f"p99 {percentile(hops, 99) * 1000:,.0f} ms  over {len(hops):,} alert changes"
            )
        per_s = webhooks_in_load / load_s
        cpu_ms = dispatcher_cpu * 1000 / webhooks_in_load if webhooks_in_load else float("nan")
        print(f"webhooks during the load        {webhooks_in_load:,} = {per_s:,.0f}/s "
              f"({per_s / args.dispatchers:,.0f}/s per dispatcher process); the dispatchers used "
              f"{dispatcher_cpu:.1f} CPU s = {cpu_ms:.2f} CPU ms per webhook")  # fmt: skip
    print(f"machine                         {machine_before} before the load, "
          f"{machine_after} after")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())

"""Worker throughput against a bare aiokafka consumer, same broker, same records, same run.

    python benchmarks/bench_worker.py [--bootstrap HOST:PORT] [--loans 5000] [--events 200000]
                                      [--cold] [--processes 1] [--no-rules]

A mixed stream from the simulator (≈90% pings, 5% payments, 5% contacts) to fresh topics:
  0. warm-up (the steady state: loans are on the books and their trackers bound before pings
     come): the loans are produced, a worker takes them and binds their devices, and stops;
  1. the events are produced; baseline: one aiokafka consumer reads the event topics and only
     decodes each record (orjson, and separately the pydantic event model), records/s;
  2. worker: one `skipwatch worker` process (default catalog, memory store) resumes and
     consumes the same records; records/s from its first committed offset until every input
     record (and every re-keyed ping) is committed, and records per worker CPU-second.
With --cold there is no warm-up: loans and events are one backlog, so most pings arrive before
their device is bound and wait in the pending-pings table (a first start on a backlog).
Prints both and the ratio (DESIGN §9 target: worker ≥ 0.5 × bare consumer). --processes N runs
N worker processes in the measured run (one consumer group, as on a machine with N cores): the
ratio is then N processes against one bare consumer, and says so.
--no-rules also runs the worker with an empty rule catalog over a copy of the stream on new
topics: decoding, binding, re-keying, signals, state and changelog without any rule evaluated.
Without --bootstrap it starts its own Kafka (deploy/kafka/kafka.sh) in a temp folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rules.events import EVENT_TYPE_BY_TOPIC  # noqa: E402
from services import infra  # noqa: E402
from services.kafka import TOPICS, WORKER_TOPICS, ensure_topics, producer_at  # noqa: E402
from services.simulator import mixed_stream  # noqa: E402

INPUTS = ("loans", "gps.raw", "payments", "contacts")
EVENTS = INPUTS[1:]


@contextlib.contextmanager
def kafka(bootstrap: str | None, data: Path) -> Iterator[str]:
    """The broker given, or a fresh one of our own in `data`, stopped afterwards."""
    if bootstrap:
        yield bootstrap
        return
    port = infra.free_port()
    infra.kafka_up(data, port, infra.free_port())
    try:
        yield f"127.0.0.1:{port}"
    finally:
        infra.kafka_down(data)


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


async def produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> int:
    producer = producer_at(
        bootstrap, linger_ms=20, max_batch_size=1 << 20, acks=1, enable_idempotence=False,
        max_request_size=1048576, request_timeout_ms=40000,
    )  # fmt: skip
    await producer.start()
    sent = 0
    try:
        pending = []
        for topic, key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            sent += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                progress(f"produced {sent:,}")
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def bare_consumer(
    bootstrap: str, prefix: str, topics: tuple[str, ...], total: int, validate: bool
) -> float:
    consumer = AIOKafkaConsumer(
        *(prefix + t for t in topics), bootstrap_servers=bootstrap,
        group_id=f"bare-{uuid.uuid4().hex}", auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20,
    )  # fmt: skip
    await consumer.start()
    models = {prefix + t: EVENT_TYPE_BY_TOPIC[t] for t in topics}
    count, started = 0, 0.0
    try:
        while count < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batches and not started:
                started = time.perf_counter()
            for tp, records in batches.items():
                if validate:
                    model = models[tp.topic]
                    for record in records:
                        model.model_validate_json(record.value)
                else:
                    for record in records:
                        orjson.loads(record.value)
                count += len(records)
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()


class Watch:
    """End offsets and a group's committed offsets, over one consumer and one admin client
    (a new client per poll costs more CPU than the worker can spare on a 2-core machine)."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)

    async def __aenter__(self) -> Watch:
        await self.consumer.start()
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def end_offsets(self, topics: list[str]) -> dict[TopicPartition, int]:
        await self.consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(t, p)
            for t in topics
            for p in (self.consumer.partitions_for_topic(t) or [])
        ]
        return dict(await self.consumer.end_offsets(partitions))

    async def committed(self, group: str) -> dict[TopicPartition, int]:
        for _ in range(60):
            try:
                offsets = await self.admin.list_consumer_group_offsets(group)
                return {tp: meta.offset for tp, meta in offsets.items()}
            except KafkaError as exc:  # a fresh broker makes its offsets topic on first use
                if not exc.retriable:
                    raise
                await asyncio.sleep(0.5)
        raise TimeoutError(f"no group coordinator for {group}")

    async def written(self, prefix: str) -> dict[str, int]:
        """Records per topic of the run (what the worker wrote besides its input)."""
        names = sorted(t for t in await self.consumer.topics() if t.startswith(prefix))
        ends = await self.end_offsets(names)
        totals = dict.fromkeys(names, 0)
        for tp, end in ends.items():
            totals[tp.topic] += end
        return {name.removeprefix(prefix): n for name, n in totals.items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Worker:
    """`skipwatch worker` processes (one by default) on the benchmark's topics, one group."""

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        partitions: int,
        data: Path,
        processes: int = 1,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKIPWATCH_")}
        env.update(
            SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
            SKIPWATCH_KAFKA__TOPIC_PREFIX=prefix,
            SKIPWATCH_KAFKA__PARTITIONS=str(partitions),
            SKIPWATCH_WORKER__CLOCK="event",
            SKIPWATCH_WORKER__METRICS_PORT="0",
            SKIPWATCH_LOG_LEVEL="WARNING",
        )
        env.update(extra_env or {})
        self.log_path = data / "worker.log"
        self.procs = []
        for n in range(processes):
            env["SKIPWATCH_WORKER__DATA_DIR"] = str(data / f"worker-{n}")
            command = [sys.executable, "-m", "services.cli", "worker"]
            log = self.log_path.open("ab")
            proc = subprocess.Popen(command, cwd=ROOT, env=dict(env), stdout=log, stderr=log)
            self.procs.append(proc)
        self.group = f"{prefix}worker"
        self.prefix = prefix

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(proc.pid) for proc in self.procs)

    async def drain(self, watch: Watch, topics: tuple[str, ...]) -> tuple[float, float]:
        """Wait until the worker committed every record of `topics` (and every re-keyed ping);
        records/s from its first committed offset on, and its CPU seconds in that span."""
        targets = await watch.end_offsets([self.prefix + t for t in topics])
        base = await watch.committed(self.group)
        total = sum(end - base.get(tp, 0) for tp, end in targets.items())
        started, cpu_started = 0.0, 0.0
        last_report = time.perf_counter()
        while True:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited {proc.returncode}; see {self.log_path}")
            done = await watch.committed(self.group)
            count = sum(min(done.get(tp, 0), end) - base.get(tp, 0) for tp, end in targets.items())
            if count and not started:
                started, cpu_started = time.perf_counter(), self.cpu_seconds()
            if time.perf_counter() - last_report > 2:
                progress(f"worker committed {count:,} / {total:,} input records")
                last_report = time.perf_counter()
            if count >= total:
                bound = await watch.end_offsets([self.prefix + "gps.bound"])
                if all(done.get(tp, 0) >= end for tp, end in bound.items()):
                    elapsed = time.perf_counter() - started
                    return total / elapsed, self.cpu_seconds() - cpu_started
            await asyncio.sleep(0.5)

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def take_loans(
    bootstrap: str,
    watch: Watch,
    prefix: str,
    partitions: int,
    data: Path,
    loans: list[tuple[str, bytes, bytes]],
    clock: tuple[str, bytes, bytes],
    env: dict[str, str],
) -> None:
    """The steady state: a worker takes the loans and binds their devices, and stops.

    The loans are registered at the stream's start in event time (`clock`, one contact for a
    loan of its own, applied first): registered at the epoch instead (the watermark before any
    event), every loan would run its silence and due-date deadlines since 1970 on its first
    event, a start-up burst the measured run would pay for."""
    progress(f"warm-up: the worker takes {len(loans):,} loans and binds their devices")
    worker = Worker(bootstrap, prefix, partitions, data, extra_env=env)
    try:
        await produce(bootstrap, [clock])
        await worker.drain(watch, ("contacts",))
        await produce(bootstrap, loans)
        await worker.drain(watch, ("loans", "device-bindings"))
    finally:
        worker.stop()


def clock_event(prefix: str, events: list[tuple[str, bytes, bytes]]) -> tuple[str, bytes, bytes]:
    """A contact at the first event's time, for a loan of its own (see `take_loans`)."""
    topic, _, value = next(r for r in events if r[0] == prefix + "contacts")
    contact = orjson.loads(value) | {"loan_id": "bench-clock", "event_id": "bench-clock-1"}
    contact["ts"] = orjson.loads(events[0][2])["ts"]
    return topic, b"bench-clock", orjson.dumps(contact)


async def staged(
    bootstrap: str, watch: Watch, args: argparse.Namespace, data: Path, env: dict[str, str]
) -> tuple[str, tuple[str, ...], int]:
    """Fresh topics holding the stream, the loans already taken unless --cold: (prefix, the
    topics to measure, their record count)."""
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    await ensure_topics(bootstrap, prefix, args.partitions, specs=TOPICS + WORKER_TOPICS)
    records = list(mixed_stream(args.loans, args.events, topic_prefix=prefix))
    loans = [r for r in records if r[0] == prefix + "loans"]
    events = [r for r in records if r[0] != prefix + "loans"]
    if not args.cold:
        clock = clock_event(prefix, events)
        await take_loans(bootstrap, watch, prefix, args.partitions, data, loans, clock, env)
    progress(f"producing {len(events):,} events to {prefix}*")
    await produce(bootstrap, events if not args.cold else loans + events)
    return prefix, INPUTS if args.cold else EVENTS, len(events) + (len(loans) if args.cold else 0)


async def measure(
    bootstrap: str,
    watch: Watch,
    args: argparse.Namespace,
    data: Path,
    staging: tuple[str, tuple[str, ...], int],
    env: dict[str, str],
) -> tuple[float, float]:
    """Worker records/s and CPU seconds over staged topics."""
    prefix, measured, _ = staging
    worker = Worker(bootstrap, prefix, args.partitions, data, args.processes, extra_env=env)
    try:
        return await worker.drain(watch, measured)
    finally:
        worker.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--loans", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--cold", action="store_true",
        help="one backlog with the loans: pings arrive before their devices are bound",
    )  # fmt: skip
    parser.add_argument(
        "--processes", type=int, default=1,
        help="worker processes in the measured run (one group; the ratio is for one process)",
    )  # fmt: skip
    parser.add_argument(
        "--no-rules", action="store_true",
        help="also measure the worker with an empty rule catalog on a copy of the stream "
        "(what the pipeline costs without evaluating rules)",
    )  # fmt: skip
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    no_rules_env = {"SKIPWATCH_WORKER__RULES_DIR": str(data / "no-rules")}
    (data / "no-rules").mkdir()
    (data / "no-rules" / "none.yaml").write_text("rules: []\n")
    with kafka(args.bootstrap, data) as bootstrap:
        async with Watch(bootstrap) as watch:
            staging = await staged(bootstrap, watch, args, data, {})
            prefix, measured, total = staging
            progress("bare consumer, orjson decode")
            bare_json = await bare_consumer(bootstrap, prefix, measured, total, validate=False)
            progress("bare consumer, pydantic event models")
            bare_model = await bare_consumer(bootstrap, prefix, measured, total, validate=True)
            progress(f"skipwatch worker ({args.processes} process(es))")
            rate, cpu = await measure(bootstrap, watch, args, data, staging, {})
            written = await watch.written(prefix)
            if args.no_rules:
                progress("the same stream on new topics, worker with an empty rule catalog")
                no_rules_staging = await staged(bootstrap, watch, args, data, no_rules_env)
                no_rules_rate, no_rules_cpu = await measure(
                    bootstrap, watch, args, data, no_rules_staging, no_rules_env
                )
    print(f"records                         {total:,}  (topics {prefix}*)")
    print(f"bare aiokafka + orjson          {bare_json:,.0f} records/s")
    print(f"bare aiokafka + event models    {bare_model:,.0f} records/s")
    print(
        f"skipwatch worker (full catalog, {args.processes} process(es)) {rate:,.0f} records/s  "
        f"({cpu:.1f} CPU-s: {total / cpu:,.0f} records per worker CPU-second)"
    )
    print("records on each topic after the run: " + ", ".join(
        f"{name} {n:,}" for name, n in written.items() if n))  # fmt: skip
    print(f"ratio worker / bare (orjson)    {rate / bare_json:.2f}")
    print(f"ratio worker / bare (models)    {rate / bare_model:.2f}   (DESIGN target ≥ 0.5)")
    if args.processes > 1:
        print(f"  ({args.processes} worker processes against one bare consumer process)")
    if args.no_rules:
        print(
            f"skipwatch worker, no rules      {no_rules_rate:,.0f} records/s  "
            f"({no_rules_cpu:.1f} CPU-s: "
            f"{total / no_rules_cpu:,.0f} records per worker CPU-second); "
            f"ratio (models) {no_rules_rate / bare_model:.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())

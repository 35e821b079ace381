"""Worker throughput against a bare aiokafka consumer, same broker, same records, same run.

    python benchmarks/bench_worker.py [--bootstrap HOST:PORT] [--loans 5000] [--events 200000]

Produces a mixed stream (≈90% pings, 5% payments, 5% contacts; loans first) from the
simulator to fresh topics, then:
  1. baseline: one aiokafka consumer reads the four input topics and only decodes each record
     (orjson, and separately the pydantic event model), records/s;
  2. worker: one `skipwatch worker` process (default catalog, memory store) consumes the same
     topics from the start; records/s from its first committed offset until every input record
     (and every re-keyed ping) is committed.
Prints both and the ratio (DESIGN §9 target: worker ≥ 0.5 × bare consumer).
Without --bootstrap it starts its own Kafka (deploy/kafka/kafka.sh) in a temp folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rules.events import EVENT_TYPE_BY_TOPIC  # noqa: E402
from services import infra  # noqa: E402
from services.kafka import TOPICS, WORKER_TOPICS, ensure_topics  # noqa: E402
from services.simulator import mixed_stream  # noqa: E402

INPUTS = ("loans", "gps.raw", "payments", "contacts")


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


async def produce(bootstrap: str, prefix: str, loans: int, events: int) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, acks=1
    )
    await producer.start()
    sent = 0
    try:
        pending = []
        for topic, key, value in mixed_stream(loans, events, topic_prefix=prefix):
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


async def bare_consumer(bootstrap: str, prefix: str, total: int, validate: bool) -> float:
    consumer = AIOKafkaConsumer(
        *(prefix + t for t in INPUTS), bootstrap_servers=bootstrap,
        group_id=f"bare-{uuid.uuid4().hex}", auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20,
    )  # fmt: skip
    await consumer.start()
    models = {prefix + t: EVENT_TYPE_BY_TOPIC[t] for t in INPUTS}
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


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or [])
        ]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(t, p)
                for t in topics
                for p in (consumer.partitions_for_topic(t) or [])
            ]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


async def run_worker(bootstrap: str, prefix: str, partitions: int, total: int, data: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIPWATCH_")}
    env.update(
        SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        SKIPWATCH_KAFKA__TOPIC_PREFIX=prefix,
        SKIPWATCH_KAFKA__PARTITIONS=str(partitions),
        SKIPWATCH_WORKER__CLOCK="event",
        SKIPWATCH_WORKER__METRICS_PORT="0",
        SKIPWATCH_WORKER__DATA_DIR=str(data),
        SKIPWATCH_LOG_LEVEL="WARNING",
    )
    log = (data / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker"], env=env, cwd=ROOT, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    group = f"{prefix}worker"
    inputs = [prefix + t for t in INPUTS]
    try:
        targets = await end_offsets(bootstrap, inputs)
        started = 0.0
        last_report = time.perf_counter()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited {proc.returncode}; see {data / 'worker.log'}")
            done = await committed(bootstrap, group)
            inputs_done = sum(min(done.get(tp, 0), end) for tp, end in targets.items())
            if inputs_done and not started:
                started = time.perf_counter()
            if time.perf_counter() - last_report > 2:
                progress(f"worker committed {inputs_done:,} / {total:,} input records")
                last_report = time.perf_counter()
            if inputs_done >= total:
                bound = await end_offsets(bootstrap, [prefix + "gps.bound"])
                if all(done.get(tp, 0) >= end for tp, end in bound.items()):
                    return total / (time.perf_counter() - started)
            await asyncio.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--loans", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    bootstrap = args.bootstrap
    if not bootstrap:
        port = infra.free_port()
        infra.kafka_up(data, port, infra.free_port())
        bootstrap = f"127.0.0.1:{port}"
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        await ensure_topics(bootstrap, prefix, args.partitions, specs=TOPICS + WORKER_TOPICS)
        progress(f"producing {args.loans:,} loans + {args.events:,} events to {prefix}*")
        total = await produce(bootstrap, prefix, args.loans, args.events)
        progress("bare consumer, orjson decode")
        bare_json = await bare_consumer(bootstrap, prefix, total, validate=False)
        progress("bare consumer, pydantic event models")
        bare_model = await bare_consumer(bootstrap, prefix, total, validate=True)
        progress("skipwatch worker")
        worker = await run_worker(bootstrap, prefix, args.partitions, total, data)
    finally:
        if not args.bootstrap:
            infra.kafka_down(data)
    print(f"records                         {total:,}")
    print(f"bare aiokafka + orjson          {bare_json:,.0f} records/s")
    print(f"bare aiokafka + event models    {bare_model:,.0f} records/s")
    print(f"skipwatch worker (full catalog) {worker:,.0f} records/s")
    print(f"ratio worker / bare (orjson)    {worker / bare_json:.2f}")
    print(f"ratio worker / bare (models)    {worker / bare_model:.2f}   (DESIGN target ≥ 0.5)")


if __name__ == "__main__":
    asyncio.run(main())

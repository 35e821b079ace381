"""Helpers for pipeline tests: worker processes, a producer, an alert reader (all real Kafka)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2

from rules.events import AlertEvent, InputEvent, Loan
from rules.events.recording import TOPIC_BY_EVENT_TYPE
from services.kafka import ensure_topics
from services.settings import EXIT_RESTART

REPO_ROOT = Path(__file__).resolve().parents[2]


def stop_process(proc: subprocess.Popen[Any] | None, timeout_s: float = 30.0) -> None:
    """SIGTERM a child still running and wait; SIGKILL it if it has not exited in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    killed: bool = False
    restarts: int = 0

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker"],
            env=self.env, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.killed = True
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)

    def stop(self) -> None:
        stop_process(self.proc)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Stack:
    bootstrap: str
    prefix: str
    partitions: int
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def worker_env(self, name: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKIPWATCH_")}
        env.update(
            SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS=self.bootstrap,
            SKIPWATCH_KAFKA__TOPIC_PREFIX=self.prefix,
            SKIPWATCH_KAFKA__PARTITIONS=str(self.partitions),
            SKIPWATCH_WORKER__CLOCK="event",
            SKIPWATCH_WORKER__ALLOWED_LATENESS_S="0",
            SKIPWATCH_WORKER__METRICS_PORT="0",
            SKIPWATCH_WORKER__DATA_DIR=str(self.tmp / name),
            SKIPWATCH_LOG_LEVEL="INFO",
            SKIPWATCH_WORKER__RECOVERY_STALL_S="30",
        )
        env.update(extra)
        return env

    def start_worker(
        self, name: str = "w1", instance: str | None = None, **extra: str
    ) -> WorkerProcess:
        """A worker process; `instance` is its static group member id (default: the name)."""
        extra.setdefault("SKIPWATCH_WORKER__INSTANCE_ID", instance or name)
        worker = WorkerProcess(self.worker_env(name, **extra), self.tmp / f"{name}.log")
        worker.start()
        self.workers.append(worker)
        return worker

    def check_workers(self) -> None:
        """Act as the supervisor: restart a worker whose watchdog asked for it (as Kubernetes
        or compose would); fail fast, with its log, when a worker died otherwise."""
        for worker in self.workers:
            if worker.proc is None or worker.proc.poll() is None or worker.killed:
                continue
            if worker.proc.returncode == EXIT_RESTART:
                worker.restarts += 1
                worker.start()
                continue
            raise AssertionError(f"worker exited ({worker.proc.returncode}):\n{worker.log_tail()}")

    async def produce(self, events: list[InputEvent]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2)
        await producer.start()
        try:
            futures = [await producer.send(*self.record(e)) for e in events]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    async def produce_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(self.prefix + topic, value, key=key)
        finally:
            await producer.stop()

    def partition_of(self, key: bytes) -> int:
        """The partition the default partitioner of every Kafka client gives a key."""
        return (murmur2(key) & 0x7FFFFFFF) % self.partitions

    def record(self, event: InputEvent) -> tuple[str, bytes, bytes]:
        topic = TOPIC_BY_EVENT_TYPE[type(event)]
        key = event.device_id if topic == "gps.raw" else event.loan_id  # type: ignore[union-attr]
        return self.prefix + topic, event.model_dump_json().encode(), key.encode()

    async def read_topic(self, topic: str, until: Any, timeout_s: float = 90.0) -> list[Any]:
        """Read a topic from the start until `until(records)` is true (or time out)."""
        consumer = AIOKafkaConsumer(
            self.prefix + topic, bootstrap_servers=self.bootstrap,
            group_id=f"reader-{uuid.uuid4().hex}", auto_offset_reset="earliest",
            enable_auto_commit=False,
        )  # fmt: skip
        await consumer.start()
        records: list[Any] = []
        try:
            async with asyncio.timeout(timeout_s):
                while not until(records):
                    self.check_workers()
                    batches = await consumer.getmany(timeout_ms=500)
                    for batch in batches.values():
                        records.extend(batch)
        except TimeoutError:
            pass
        finally:
            await consumer.stop()
        return records

    async def alerts(self, until: Any = None, timeout_s: float = 90.0) -> list[AlertEvent]:
        def done(records: list[Any]) -> bool:
            return bool(until and until([AlertEvent.model_validate_json(r.value) for r in records]))

        records = await self.read_topic("alerts", done, timeout_s)
        return [AlertEvent.model_validate_json(r.value) for r in records]


@pytest.fixture
async def stack(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> AsyncIterator[Stack]:
    partitions = 4
    await ensure_topics(kafka_bootstrap, topic_prefix, partitions)
    stack = Stack(kafka_bootstrap, topic_prefix, partitions, tmp_path)
    try:
        yield stack
    finally:
        for worker in stack.workers:
            worker.stop()


def loans_from(events: list[InputEvent]) -> Iterator[Loan]:
    return (e for e in events if isinstance(e, Loan))


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)

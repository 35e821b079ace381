"""Alert on the alerts topic → signed webhook received, through `skipwatch dispatcher` processes
(the dispatcher's part of DESIGN §9's end-to-end latency; bench_latency.py --dispatchers N runs
the whole path, event → worker → dispatcher → webhook, with the sink and processes from here).

    python benchmarks/bench_notify.py --bootstrap HOST:PORT [--backlog 5000] [--rate 1000]
                                      [--seconds 20] [--processes 1]

  1. throughput: `--backlog` firing alerts (one per loan) are in Kafka before the dispatcher
     starts; deliveries/s is the backlog over the time from its first to its last webhook
     received (each alert makes one delivery record in Kafka, one signed POST, one result record);
  2. latency: alerts are produced at `--rate` per second for `--seconds`; each one's latency runs
     from Kafka's acknowledgement of the alert to the webhook's arrival at the receiver.
The receiver (uvicorn on 127.0.0.1, allow-listed) answers 204 and verifies nothing, so the
figure is the dispatcher's; routing: one webhook receiver, group_wait 0s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import uvicorn
from aiokafka import AIOKafkaProducer
from bench_worker import ROOT, cpu_seconds, progress  # also puts the project on sys.path
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rules.events import AlertEvent, AlertStatus, Severity
from services.kafka import ensure_topics
from services.notify.signing import new_secret


class WebhookSink:
    """A webhook receiver on 127.0.0.1 (uvicorn, in this process) answering 204 without
    verifying anything; `on_body(body, arrival)` sees each body with its time.perf_counter()."""

    def __init__(self, on_body: Callable[[bytes, float], None]) -> None:
        self._on_body = on_body
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"
        self.count = 0
        app = Starlette(routes=[Route("/hook", self._receive, methods=["POST"])])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        self.count += 1
        self._on_body(body, time.perf_counter())
        return Response(status_code=204)

    async def __aenter__(self) -> WebhookSink:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


class Dispatchers:
    """`skipwatch dispatcher` processes (one consumer group) sending every alert change to one
    webhook (routing: one receiver, group_wait 0s) at `url`."""

    def __init__(
        self, bootstrap: str, prefix: str, partitions: int, url: str, folder: Path, processes: int
    ) -> None:
        config = folder / "routing.yaml"
        config.write_text(
            f"route: {{receiver: hook, group_wait: 0s}}\nreceivers:\n- name: hook\n"
            f"  webhook_configs:\n  - {{url: '{url}', secret: '{new_secret()}'}}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKIPWATCH_")}
        env.update(
            SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
            SKIPWATCH_KAFKA__TOPIC_PREFIX=prefix,
            SKIPWATCH_KAFKA__PARTITIONS=str(partitions),
            SKIPWATCH_NOTIFY__ROUTING_CONFIG=str(config),
            SKIPWATCH_NOTIFY__ALLOW_LIST='["127.0.0.1"]',
            SKIPWATCH_NOTIFY__METRICS_PORT="0",
            SKIPWATCH_NOTIFY__ENDPOINT_CONCURRENCY=os.environ.get("BENCH_CONCURRENCY", "8"),
            SKIPWATCH_LOG_LEVEL="WARNING",
        )
        self.log_path = folder / "dispatcher.log"
        self.procs: list[subprocess.Popen[bytes]] = []
        for _ in range(processes):
            with self.log_path.open("ab") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "services.cli", "dispatcher"], env=env, cwd=ROOT,
                    stdout=log, stderr=subprocess.STDOUT,
                ))  # fmt: skip

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(proc.pid) for proc in self.procs)

    def check(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"dispatcher exited {proc.returncode}; see {self.log_path}")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)


def loan_of(body: bytes) -> str:
    """The loan id of a webhook body, without decoding it all."""
    start = body.find(b'"loan_id":"') + 11
    return body[start : body.find(b'"', start)].decode()


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} cores"


def alert(loan: str) -> AlertEvent:
    now = dt.datetime.now(dt.UTC)
    return AlertEvent(
        alert_id=f"a-{loan}", fingerprint=f"f-{loan}", rule_id="bench", loan_id=loan,
        severity=Severity.CRITICAL, status=AlertStatus.FIRING, title="bench", summary="bench",
        risk_score=50, started_at=now, updated_at=now, event_time=now,
    )  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=1, help="dispatcher processes")
    args = parser.parse_args()

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    await ensure_topics(args.bootstrap, prefix, 4)
    received: dict[str, float] = {}  # loan id -> arrival
    progress(f"start: {load_average()}")
    async with WebhookSink(lambda body, at: received.setdefault(loan_of(body), at)) as sink:
        producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        topic = prefix + "alerts"
        for n in range(args.backlog):
            item = alert(f"B{n}")
            await producer.send(topic, item.model_dump_json().encode(), key=item.loan_id.encode())
        await producer.flush()
        folder = Path(tempfile.mkdtemp(prefix="bench-notify-"))
        dispatchers = Dispatchers(args.bootstrap, prefix, 4, sink.url, folder, args.processes)
        try:
            while not received:
                dispatchers.check()
                await asyncio.sleep(0.01)
            cpu_start = dispatchers.cpu_seconds()
            deadline = time.perf_counter() + 300
            while len(received) < args.backlog and time.perf_counter() < deadline:
                await asyncio.sleep(0.1)
            cpu_used = dispatchers.cpu_seconds() - cpu_start
            arrivals = sorted(received.values())
            span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
            print(f"throughput: {len(received)}/{args.backlog} backlog webhooks in {span:.1f} s "
                  f"= {len(received) / span:.0f} deliveries/s with {args.processes} dispatcher "
                  f"process(es); they used {cpu_used:.1f} CPU s = "
                  f"{cpu_used * 1000 / len(received):.2f} CPU ms per delivery (at most "
                  f"{len(received) / cpu_used:.0f}/s per process on a free core)")  # fmt: skip

            sent: dict[str, float] = {}
            start = time.perf_counter()
            interval = 0.01
            per_tick = max(1, round(args.rate * interval))
            n = 0
            while time.perf_counter() - start < args.seconds:
                tick = time.perf_counter()
                futures = []
                for _ in range(per_tick):
                    item = alert(f"R{n}")
                    n += 1
                    futures.append((item.loan_id, await producer.send(
                        topic, item.model_dump_json().encode(), key=item.loan_id.encode())))  # fmt: skip
                for loan, future in futures:
                    await future
                    sent[loan] = time.perf_counter()
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - tick)))
            produced_s = time.perf_counter() - start
            deadline = time.perf_counter() + 120
            while any(loan not in received for loan in sent) and time.perf_counter() < deadline:
                await asyncio.sleep(0.1)
            latencies = [(received[k] - v) * 1000 for k, v in sent.items() if k in received]
            print(f"latency at {len(sent) / produced_s:.0f} alerts/s for {produced_s:.0f} s: "
                  f"{len(latencies)}/{len(sent)} received, p50 {statistics.median(latencies):.0f} "
                  f"ms, p99 {percentile(latencies, 0.99):.0f} ms, max {max(latencies):.0f} ms")  # fmt: skip
            print(f"machine: {load_average()} at the end; {sink.count} webhooks received")
        finally:
            dispatchers.stop()
            await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())

"""Alert on the alerts topic → signed webhook received, through one `skipwatch dispatcher` process
(the dispatcher's part of DESIGN §9's end-to-end latency; the worker's is bench_latency.py).

    python benchmarks/bench_notify.py --bootstrap HOST:PORT [--backlog 5000] [--rate 1000]
                                      [--seconds 20]

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
from pathlib import Path

import uvicorn
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rules.events import AlertEvent, AlertStatus, Severity  # noqa: E402
from services.kafka import ensure_topics  # noqa: E402
from services.notify.signing import new_secret  # noqa: E402

received: dict[str, float] = {}  # loan id -> arrival (monotonic)


async def receive(request: Request) -> Response:
    body = await request.body()
    start = body.find(b'"loan_id":"') + 11
    received[body[start : body.find(b'"', start)].decode()] = time.monotonic()
    return Response(status_code=204)


def alert(loan: str) -> AlertEvent:
    now = dt.datetime.now(dt.UTC)
    return AlertEvent(
        alert_id=f"a-{loan}", fingerprint=f"f-{loan}", rule_id="bench", loan_id=loan,
        severity=Severity.CRITICAL, status=AlertStatus.FIRING, title="bench", summary="bench",
        risk_score=50, started_at=now, updated_at=now, event_time=now,
    )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    await ensure_topics(args.bootstrap, prefix, 4)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/hook", receive, methods=["POST"])]),
                       log_level="warning", lifespan="off", access_log=False)
    )  # fmt: skip
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    folder = Path(tempfile.mkdtemp())
    config = folder / "routing.yaml"
    config.write_text(
        f"route: {{receiver: hook, group_wait: 0s}}\nreceivers:\n- name: hook\n  webhook_configs:\n"
        f"  - {{url: 'http://127.0.0.1:{port}/hook', secret: '{new_secret()}'}}\n"
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    topic = prefix + "alerts"
    for n in range(args.backlog):
        item = alert(f"B{n}")
        await producer.send(topic, item.model_dump_json().encode(), key=item.loan_id.encode())
    await producer.flush()
    env = {
        **os.environ,
        "SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS": args.bootstrap,
        "SKIPWATCH_KAFKA__TOPIC_PREFIX": prefix,
        "SKIPWATCH_KAFKA__PARTITIONS": "4",
        "SKIPWATCH_NOTIFY__ROUTING_CONFIG": str(config),
        "SKIPWATCH_NOTIFY__ALLOW_LIST": '["127.0.0.1"]',
        "SKIPWATCH_NOTIFY__METRICS_PORT": "0",
        "SKIPWATCH_NOTIFY__ENDPOINT_CONCURRENCY": os.environ.get("BENCH_CONCURRENCY", "8"),
        "SKIPWATCH_LOG_LEVEL": "WARNING",
    }
    with (folder / "dispatcher.log").open("wb") as log:
        dispatcher = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "dispatcher"], env=env, cwd=ROOT,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        while not received:
            await asyncio.sleep(0.01)
        cpu_start = cpu_seconds(dispatcher.pid)
        deadline = time.monotonic() + 300
        while len(received) < args.backlog and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        cpu_used = cpu_seconds(dispatcher.pid) - cpu_start
        arrivals = sorted(received.values())
        span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
        print(f"throughput: {len(received)}/{args.backlog} backlog webhooks in {span:.1f} s "
              f"= {len(received) / span:.0f} deliveries/s per dispatcher process; the dispatcher "
              f"used {cpu_used:.1f} CPU s = {cpu_used * 1000 / len(received):.2f} CPU ms per "
              f"delivery (at most {len(received) / cpu_used:.0f}/s on a free core)")  # fmt: skip

        sent: dict[str, float] = {}
        start = time.monotonic()
        interval = 0.01
        per_tick = max(1, round(args.rate * interval))
        n = 0
        while time.monotonic() - start < args.seconds:
            tick = time.monotonic()
            futures = []
            for _ in range(per_tick):
                item = alert(f"R{n}")
                n += 1
                futures.append((item.loan_id, await producer.send(
                    topic, item.model_dump_json().encode(), key=item.loan_id.encode())))  # fmt: skip
            for loan, future in futures:
                await future
                sent[loan] = time.monotonic()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - tick)))
        produced_s = time.monotonic() - start
        deadline = time.monotonic() + 120
        while any(loan not in received for loan in sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        latencies = [(received[k] - v) * 1000 for k, v in sent.items() if k in received]
        print(f"latency at {len(sent) / produced_s:.0f} alerts/s for {produced_s:.0f} s: "
              f"{len(latencies)}/{len(sent)} received, p50 {statistics.median(latencies):.0f} ms, "
              f"p99 {percentile(latencies, 0.99):.0f} ms, max {max(latencies):.0f} ms")  # fmt: skip
    finally:
        dispatcher.terminate()
        dispatcher.wait(timeout=30)
        await producer.stop()
        server.should_exit = True
        await serving


if __name__ == "__main__":
    asyncio.run(main())

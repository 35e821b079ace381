"""HTTP ingest throughput: pings/s through `POST /v1/ingest/gps` in batches of 500 (DESIGN §9).

Starts the API in one uvicorn process against a running broker, drives it from this process with
several concurrent HTTP connections (every ping a fresh event_id, so nothing is deduplicated),
and reports pings/s and request latency. In the same run it measures a bare aiokafka producer
sending the same records (send() per record, acks=all, awaited per 500) as the baseline.

    .venv/bin/python benchmarks/bench_ingest.py --bootstrap 127.0.0.1:19092 --seconds 30

Needs a broker (`--bootstrap`); starts none. Topics get a fresh prefix and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from rules.events import GpsPing  # noqa: E402
from services.kafka import ensure_topics  # noqa: E402

INGEST_KEY = "bench-vendor-key-000000"


def make_batch(run: str, request_no: int, size: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{run}-{request_no}-{i}",
            "device_id": f"bench-dev-{(request_no * size + i) % 20000}",
            "vendor": "bench",
            "ts": "2024-05-01T08:00:00+08:00",
            "lat": 30.0 + i / 10000,
            "lon": 120.0 + i / 10000,
            "speed_kmh": 40.0,
            "heading": 90.0,
            "fix": "gps",
            "acc_on": True,
            "battery_pct": 80.0,
            "device_kind": "wired",
            "alarms": [],
        }
        for i in range(size)
    ]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to report pings per CPU-second: on a
    shared host the wall-clock rate depends on the neighbours, CPU cost per ping does not."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the API process -------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from services.api import create_app
    from services.api.dedup import MemoryDedup, RedisDedup
    from services.settings import Settings

    settings = Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": args.bootstrap, "topic_prefix": args.prefix},
            "auth": {"ingest_keys": {INGEST_KEY: "bench"}},
            **({"redis": {"url": args.redis_url}} if args.redis_url else {}),
        }
    )
    dedup = RedisDedup(args.redis_url, f"{args.prefix}:") if args.redis_url else MemoryDedup()
    app = create_app(settings, dedup=dedup)
    if not args.no_gc_tuning:
        from services.runtime import tune_gc

        tune_gc()  # as `skipwatch api` does
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


# --- baseline: a bare aiokafka producer ------------------------------------------------------


async def baseline(args: argparse.Namespace, run: str) -> tuple[float, float]:
    """pings/s of AIOKafkaProducer.send() with the same records, same concurrency, acks=all."""
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=1024 * 1024,
    )
    await producer.start()
    topic = args.prefix + "gps.raw"
    records = [
        (item["device_id"].encode(), GpsPing.model_validate(item).model_dump_json().encode())
        for item in make_batch(run + "-base", 0, args.batch)
    ]
    sent = 0
    deadline = time.perf_counter() + args.baseline_seconds

    async def worker() -> None:
        nonlocal sent
        while time.perf_counter() < deadline:
            futures = [await producer.send(topic, value, key=key) for key, value in records]
            await asyncio.gather(*futures)
            sent += len(records)

    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    finally:
        await producer.stop()
    cpu = time.process_time() - cpu_started
    return sent / (time.perf_counter() - started), sent / cpu


# --- the load ----------------------------------------------------------------------------------


async def load(
    args: argparse.Namespace, base_url: str, run: str, server_pid: int
) -> dict[str, Any]:
    headers = {"X-Api-Key": INGEST_KEY, "Content-Type": "application/json"}
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    latencies: list[float] = []
    accepted = 0
    errors: dict[int, int] = {}
    request_no = 0
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        # Warm up connections and the server's caches; not measured.
        for _ in range(args.concurrency):
            body = orjson.dumps(make_batch(run + "-warm", request_no, args.batch))
            request_no += 1
            (await client.post("/v1/ingest/gps", content=body, headers=headers)).raise_for_status()

        started = time.perf_counter()
        cpu_started = cpu_seconds(server_pid)
        deadline = started + args.seconds
        last_report = started

        async def worker() -> None:
            nonlocal accepted, request_no, last_report
            while time.perf_counter() < deadline and request_no < args.max_requests:
                request_no += 1
                body = orjson.dumps(make_batch(run, request_no, args.batch))
                sent_at = time.perf_counter()
                response = await client.post("/v1/ingest/gps", content=body, headers=headers)
                latencies.append(time.perf_counter() - sent_at)
                if response.status_code == 200:
                    accepted += int(response.json()["accepted"])
                else:
                    errors[response.status_code] = errors.get(response.status_code, 0) + 1
                now = time.perf_counter()
                if now - last_report >= 2:
                    last_report = now
                    rate = accepted / (now - started)
                    print(
                        f"  … {now - started:5.1f} s  {accepted:>9,} pings  {rate:>9,.0f}/s",
                        file=sys.stderr,
                    )

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
        server_cpu = cpu_seconds(server_pid) - cpu_started
    return {
        "server_cpu_s": server_cpu,
        "pings_per_cpu_s": accepted / server_cpu if server_cpu else 0.0,
        "pings": accepted,
        "requests": len(latencies),
        "seconds": elapsed,
        "pings_per_s": accepted / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "errors": errors,
    }


async def wait_ready(
    base_url: str, proc: asyncio.subprocess.Process, timeout_s: float = 30
) -> None:
    deadline = time.perf_counter() + timeout_s
    async with httpx.AsyncClient(base_url=base_url) as client:
        while time.perf_counter() < deadline:
            if proc.returncode is not None:
                raise RuntimeError("the API process exited during start-up")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("the API did not become ready")


async def delete_topics(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def bench(args: argparse.Namespace) -> None:
    run = uuid.uuid4().hex[:8]
    args.prefix = args.prefix or f"bench{run}."
    await ensure_topics(args.bootstrap, args.prefix, args.partitions)
    port = free_port()
    command = [
        __file__, "--bootstrap", args.bootstrap, "--prefix", args.prefix,
        "--serve-port", str(port), *(["--redis-url", args.redis_url] if args.redis_url else []),
        *(["--no-gc-tuning"] if args.no_gc_tuning else []),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(sys.executable, *command, cwd=REPO_ROOT)
    try:
        base_url = f"http://127.0.0.1:{port}"
        await wait_ready(base_url, proc)
        print(
            f"API pid {proc.pid} on {base_url}; {args.concurrency} connections, "
            f"batches of {args.batch}, {args.seconds:g} s",
            file=sys.stderr,
        )
        result = await load(args, base_url, run, proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    print("baseline: bare aiokafka producer …", file=sys.stderr)
    base, base_per_cpu = await baseline(args, run)
    if not args.keep_topics:
        await delete_topics(args.bootstrap, args.prefix)

    print()
    print(f"cpus                      {os.cpu_count()}")
    print(f"dedup                     {'redis' if args.redis_url else 'memory'}")
    print(
        f"HTTP ingest               {result['pings_per_s']:>10,.0f} pings/s "
        f"({result['pings']:,} pings, {result['requests']:,} requests, "
        f"{result['seconds']:.1f} s)"
    )
    print(
        f"API process CPU           {result['server_cpu_s']:.1f} s = "
        f"{result['pings_per_cpu_s']:,.0f} pings per CPU-second"
    )
    print(f"host load average         {os.getloadavg()[0]:.1f}")
    print(
        f"request latency           p50 {result['p50_ms']:.1f} ms   p99 {result['p99_ms']:.1f} ms"
    )
    print(f"non-200 answers           {result['errors'] or 'none'}")
    print(f"bare aiokafka producer    {base:>10,.0f} pings/s (send() per record, same records)")
    print(f"  its CPU                 {base_per_cpu:,.0f} pings per CPU-second")
    print(
        f"ratio ingest / bare       {result['pings_per_s'] / base:.2f} (wall clock), "
        f"{result['pings_per_cpu_s'] / base_per_cpu:.2f} (per CPU-second)"
    )
    target = 30_000
    verdict = "meets" if result["pings_per_s"] >= target else "MISSES"
    print(f"target ≥ {target:,} pings/s   {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers (running)")
    parser.add_argument("--prefix", default="", help="topic prefix (default: a fresh one)")
    parser.add_argument("--redis-url", default="", help="dedup in Redis (default: in-process)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured load duration")
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500, help="pings per request")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent connections")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument(
        "--no-gc-tuning", action="store_true",
        help="keep CPython's default GC settings in the API process (`skipwatch api` tunes them)",
    )  # fmt: skip
    parser.add_argument("--serve-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_port:
        args.port = args.serve_port
        serve(args)  # the API process this script starts for itself
        return
    import uvloop

    uvloop.run(bench(args))


if __name__ == "__main__":
    main()

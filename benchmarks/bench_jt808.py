"""JT/T 808 gateway benchmark: concurrent connections held, location frames/s per process.

The gateway runs in its own process (one event loop, uvloop: the "per process" figure);
this process is the tracker fleet. Loopback only, bounded count and duration.

    .venv/bin/python benchmarks/bench_jt808.py --connections 10000 --duration 15
    .venv/bin/python benchmarks/bench_jt808.py --kafka 127.0.0.1:19092   # + the Kafka sink

Phase 1 opens N connections; each authenticates (0x0102 -> 0x8001) and then answers a
heartbeat, so a connection counts as held only when the gateway served it both ways.
Phase 2 keeps all N open while `--active` of them pipeline 0x0200 frames (a window of
`--window` unacknowledged frames each); frames/s counts 0x8001 replies received, i.e.
locations the sink accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import sys
import time
import uuid
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from services.jt808 import codec


def raise_fd_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ------------------------------------------------------------------ gateway process


def gateway_process(
    conn: Connection, max_connections: int, kafka: str | None, prefix: str, gc_tuning: bool
) -> None:
    raise_fd_limit()

    async def main() -> None:
        from prometheus_client import CollectorRegistry

        from services.jt808.gateway import GatewayMetrics, GatewayOptions, Jt808Gateway
        from services.jt808.sink import CountingSink, KafkaPingSink
        from services.runtime import tune_gc

        if gc_tuning:
            tune_gc()  # as `skipwatch jt808 serve` does

        counting = CountingSink()
        kafka_sink: KafkaPingSink | None = None
        if kafka:
            kafka_sink = KafkaPingSink(bootstrap_servers=kafka, topic_prefix=prefix)
            await kafka_sink.start()

            async def sink(pings: list) -> None:  # type: ignore[type-arg]
                assert kafka_sink is not None
                await kafka_sink(pings)
                counting.count += len(pings)
        else:
            sink = counting
        gateway = Jt808Gateway(
            sink=sink,
            options=GatewayOptions(max_connections=max_connections, auth_secret=None),
            metrics=GatewayMetrics(CollectorRegistry()),
        )
        port = await gateway.start("127.0.0.1", 0)
        conn.send(port)
        loop = asyncio.get_running_loop()
        while True:
            if await loop.run_in_executor(None, conn.poll, 0.2):
                cmd = conn.recv()
                if cmd == "stop":
                    break
                conn.send(
                    {
                        "connections": gateway.connection_count,
                        "pings": counting.count,
                        "cpu_s": time.process_time(),
                    }
                )
        await gateway.close()
        if kafka_sink is not None:
            await kafka_sink.stop()

    uvloop.run(main())


# ------------------------------------------------------------------ tracker fleet


class Tracker(asyncio.Protocol):
    """Counts 0x8001 replies (two flags each) and refills the send window."""

    def __init__(self, frames: list[bytes], window: int) -> None:
        self.frames = frames
        self.window = window
        self.next = 0
        self.replies = 0
        self.inflight = 0
        self.streaming = False
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.expect = 0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop: not an asyncio subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))

    def data_received(self, data: bytes) -> None:
        n = data.count(b"\x7e") // 2  # replies never contain an escaped flag byte
        self.replies += n
        if self.waiter and not self.waiter.done() and self.replies >= self.expect:
            self.waiter.set_result(None)
        if self.streaming:
            self.inflight -= n
            self.send_window()

    def send_window(self) -> None:
        assert self.transport is not None
        k = self.window - self.inflight
        if k <= 0:
            return
        chunk = []
        for _ in range(k):
            chunk.append(self.frames[self.next])
            self.next = (self.next + 1) % len(self.frames)
        self.inflight += k
        self.transport.write(b"".join(chunk))

    async def request(self, data: bytes, replies: int) -> None:
        assert self.transport is not None
        self.expect = self.replies + replies
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        await asyncio.wait_for(self.waiter, 30)


def phone(i: int) -> str:
    return f"1{i:010d}"


def location_frames(i: int, count: int) -> list[bytes]:
    base = datetime(2024, 5, 1, 8, 0, 0)
    raw = codec.phone_bcd(phone(i))
    items = (codec.Item(0x01, (1234).to_bytes(4, "big")), codec.Item(0x30, b"\x1a"))
    return [
        codec.encode_frame(
            msg_id=codec.MSG_LOCATION,
            phone_raw=raw,
            serial=s,
            body=codec.encode_location_body(
                lat=31.2 + s / 1e5,
                lon=121.4,
                time=base + timedelta(seconds=s),
                speed_kmh=40.0,
                heading=90,
                items=items,
            ),
        )
        for s in range(count)
    ]


async def open_fleet(port: int, n: int, window: int, active: int) -> list[Tracker]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(400)
    trackers: list[Tracker] = []
    failed = 0

    async def one(i: int) -> None:
        nonlocal failed
        frames = location_frames(i, 64) if i < active else []
        async with gate:
            try:
                _, proto = await loop.create_connection(
                    lambda: Tracker(frames, window), "127.0.0.1", port
                )
                raw = codec.phone_bcd(phone(i))
                auth = codec.encode_frame(
                    msg_id=codec.MSG_AUTH, phone_raw=raw, serial=0, body=b"code"
                )
                await proto.request(auth, 1)
                trackers.append(proto)
            except (OSError, TimeoutError, ConnectionError):
                failed += 1

    started = time.perf_counter()
    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    for done, t in enumerate(asyncio.as_completed(tasks), start=1):
        await t
        if done % 2000 == 0 or done == n:
            took = time.perf_counter() - started
            print(f"  opened+authenticated {done - failed}/{n} ({took:.1f}s)", flush=True)
    if failed:
        print(f"  {failed} connections failed", flush=True)
    return trackers


async def fleet(args: argparse.Namespace, port: int, server: Connection) -> dict[str, float]:
    result: dict[str, float] = {}
    print(f"phase 1: {args.connections} connections", flush=True)
    trackers = await open_fleet(port, args.connections, args.window, args.active)

    # Every connection must still answer: one heartbeat each.
    async def beat(t: Tracker, i: int) -> bool:
        raw = codec.phone_bcd(phone(i))
        try:
            await t.request(
                codec.encode_frame(msg_id=codec.MSG_HEARTBEAT, phone_raw=raw, serial=1, body=b""), 1
            )
            return True
        except (TimeoutError, ConnectionError):
            return False

    ok = await asyncio.gather(*(beat(t, i) for i, t in enumerate(trackers)))
    server.send("stats")
    stats = server.recv()
    held = sum(ok)
    print(
        f"  held: {held} answered a heartbeat; gateway reports {stats['connections']} open",
        flush=True,
    )
    result["held"] = held
    result["gateway_connections"] = stats["connections"]

    active = [t for t in trackers if t.frames][: args.active]
    print(
        f"phase 2: {len(active)} active trackers x window {args.window}, {args.duration}s, "
        f"{len(trackers) - len(active)} idle connections held",
        flush=True,
    )
    for t in active:
        t.replies = 0
        t.streaming = True
        t.send_window()
    await asyncio.sleep(args.warmup)
    server.send("stats")
    s0 = server.recv()
    r0, t0 = sum(t.replies for t in active), time.perf_counter()
    for second in range(1, args.duration + 1):
        await asyncio.sleep(1)
        if second % 5 == 0 or second == args.duration:
            r = sum(t.replies for t in active)
            print(
                f"  {second}s: {(r - r0) / (time.perf_counter() - t0):,.0f} acked frames/s",
                flush=True,
            )
    r1, t1 = sum(t.replies for t in active), time.perf_counter()
    server.send("stats")
    s1 = server.recv()
    for t in active:
        t.streaming = False
    elapsed = t1 - t0
    result["frames_per_s"] = (r1 - r0) / elapsed
    result["sink_pings_per_s"] = (s1["pings"] - s0["pings"]) / elapsed
    result["gateway_cpu"] = (s1["cpu_s"] - s0["cpu_s"]) / elapsed
    still_open = sum(not t.lost for t in trackers)
    result["held_after"] = still_open
    for t in trackers:
        if t.transport:
            t.transport.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--active", type=int, default=200)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--kafka", help="bootstrap servers: use the Kafka sink instead of counting")
    parser.add_argument(
        "--no-gc-tuning",
        action="store_true",
        help="keep CPython's default GC settings in the gateway (the CLI tunes them)",
    )
    args = parser.parse_args()
    if not 1 <= args.connections <= 30_000 or not 1 <= args.duration <= 300:
        parser.error("connections must be 1..30000 and duration 1..300 s")
    limit = raise_fd_limit()
    if limit < args.connections + 100:
        parser.error(f"file descriptor limit {limit} is below --connections")

    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=gateway_process,
        args=(child, args.connections + 10, args.kafka, prefix, not args.no_gc_tuning),
    )
    proc.start()
    try:
        port = parent.recv()
        sink = (
            f"Kafka {args.kafka} topic {prefix}gps.raw" if args.kafka else "in-memory counting sink"
        )
        print(f"gateway pid {proc.pid} on 127.0.0.1:{port}, {sink}", flush=True)
        result = uvloop.run(fleet(args, port, parent))
    finally:
        parent.send("stop")
        proc.join(15)
        if proc.is_alive():
            proc.terminate()
    print("\nresult")
    print(
        f"  connections held:        {result['held']:,.0f} "
        f"(gateway saw {result['gateway_connections']:,.0f}; "
        f"{result['held_after']:,.0f} still open after phase 2)"
    )
    print(f"  location frames/s acked: {result['frames_per_s']:,.0f}")
    print(f"  pings/s into the sink:   {result['sink_pings_per_s']:,.0f}")
    print(f"  gateway CPU:             {result['gateway_cpu'] * 100:.0f}% of one core")


if __name__ == "__main__":
    main()

"""Worker restart with a large portfolio: how long until it processes again (DESIGN §9: 100 k
loans, state recovered and processing again in ≤ 30 s).

    python benchmarks/bench_restart.py [--bootstrap HOST:PORT] [--loans 100000]
                                       [--store memory://|rocksdb://]

  1. the loans are produced; a worker takes them all (state, bindings) and is stopped (SIGTERM);
  2. a new worker process starts on the same data directory; one payment is produced for a loan
     as it starts; the time from the process start until the worker has committed that payment
     is the restart time (it covers the changelog recovery, the group join and the first
     batch). With memory:// the state comes back from the changelogs; with rocksdb:// from the
     local store plus the changelog tail.
Without --bootstrap it starts its own Kafka (deploy/kafka/kafka.sh) in a temp folder.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench_worker import (
    Watch,
    Worker,
    kafka,
    produce,
    progress,
)  # also puts the project on sys.path

from rules.events.payment import PaymentEvent, PaymentType
from services.kafka import TOPICS, WORKER_TOPICS, ensure_topics
from services.simulator import mixed_stream


def probe_payment(loan_id: str) -> bytes:
    """A payment the restarted worker must apply (an event it has not seen)."""
    return PaymentEvent(
        event_id=f"restart-probe-{uuid.uuid4().hex}", loan_id=loan_id, ts=datetime.now(UTC),
        type=PaymentType.PAYMENT_RECEIVED, installment_no=1, amount=1.0,
    ).model_dump_json().encode()  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--loans", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--store", default="memory://")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    env = {"SKIPWATCH_WORKER__STORE": args.store}
    with kafka(args.bootstrap, data) as bootstrap:
        prefix = f"restart{uuid.uuid4().hex[:6]}."
        await ensure_topics(bootstrap, prefix, args.partitions, specs=TOPICS + WORKER_TOPICS)
        loans = list(mixed_stream(args.loans, 0, topic_prefix=prefix))
        async with Watch(bootstrap) as watch:
            progress(f"producing {len(loans):,} loans")
            await produce(bootstrap, loans)
            progress("a worker takes the loans and binds their devices")
            worker = Worker(bootstrap, prefix, args.partitions, data, extra_env=env)
            try:
                taken = time.perf_counter()
                await worker.drain(watch, ("loans", "device-bindings"))
                taken = time.perf_counter() - taken
                taken_cpu = worker.cpu_seconds()
            finally:
                worker.stop()
            changelogs = {
                name: n for name, n in (await watch.written(prefix)).items() if "changelog" in name
            }
            progress("restarting the worker; one payment produced as it starts")
            started = time.perf_counter()
            worker = Worker(bootstrap, prefix, args.partitions, data, extra_env=env)
            try:
                loan_id = loans[len(loans) // 2][1].decode()
                await produce(bootstrap, [(prefix + "payments", loan_id.encode(),
                                           probe_payment(loan_id))])  # fmt: skip
                await worker.drain(watch, ("payments",))
                restart_s = time.perf_counter() - started
            finally:
                worker.stop()
    print(f"loans                            {args.loans:,}  (store {args.store})")
    print(f"first start, loans taken in      {taken:.1f} s  (worker CPU {taken_cpu:.1f} s)")
    print("changelog records                " + ", ".join(
        f"{name} {n:,}" for name, n in changelogs.items()))  # fmt: skip
    print(f"restart → new event committed    {restart_s:.1f} s   (DESIGN target ≤ 30 s)")


if __name__ == "__main__":
    asyncio.run(main())

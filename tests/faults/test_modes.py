"""Fault suite — the worker's alert episodes equal `skipwatch backtest`'s on one recording with
skips and noise (the simulator's 30 loans × 10 days, seed 11), whatever the timing: paced live,
as a backlog, SIGKILLed twice while the feed keeps running, and two workers with one killed
(tests/integration/modes.py; `benchmarks/bench_modes.py` prints the same figures): 0 missing,
0 extra, 0 ended differently in each.

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


# Takeover: the survivor's clock waits for the marks of the gps.raw partitions the killed worker
# bound (docs/streaming.md, "Watermarks through the shuffle"), and after the rebalance its `now`
# starts again from the records read again ("`now` after a rebalance": without it, extra tracker
# silences of the loans taken over).


# `pair` (two workers, none killed) is left to benchmarks/bench_modes.py (script only).
@pytest.mark.parametrize("mode", [m for m in MODES if m != "pair"])
async def test_worker_gives_the_backtests_episodes(
    stack: Stack, noisy_recording: Recording, mode: str
) -> None:
    outcome = await run_mode(stack, mode, noisy_recording, log=print)
    print(outcome.summary())
    assert outcome.diff == ([], [], []), outcome.details()

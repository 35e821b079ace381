"""Fault suite — the worker's alert episodes equal `skipwatch backtest`'s on one recording with
skips and noise (the simulator's 30 loans × 10 days, seed 11), whatever the timing: paced live,
as a backlog, SIGKILLed twice while the feed keeps running, and two workers with one killed (tests/integration/modes.py; `benchmarks/bench_modes.py` prints
the same figures). The last does not hold yet (xfail, strict: it fails the suite once it passes).

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


# The time model orders pings by the gps.raw partitions this worker binds; pings bound by another
# worker are ordered only once they reach gps.bound. While a killed worker's partitions wait for
# the session timeout (30 s) before the survivor takes them, the survivor's clock moves on with
# its own partitions and the pings of the dead worker's trackers come late: silences that were
# not, and alarms taken as history (docs/streaming.md, "Modes against the backtest").
TAKEOVER_GAP = pytest.mark.xfail(
    strict=True,
    reason="pings bound by another worker are not in this worker's watermark (docs/streaming.md)",
)


# `pair` (two workers, none killed) is left to benchmarks/bench_modes.py: the same gap shows
# there only when one worker's binding lags the other's clock (one run in two under load), so
# as a test it would neither pass reliably nor fail reliably.
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

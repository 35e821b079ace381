"""The worker against `skipwatch backtest` on one recording, in each way the worker can meet
it (docs/streaming.md, "Time model", "Modes against the backtest"):

- `live`: the worker runs while the recording is produced, paced;
- `backlog`: the whole recording is in Kafka before the worker starts;
- `sigkill`: the worker is SIGKILLed twice while the paced feed keeps running, and restarted;
- `takeover`: two workers share the partitions; one is SIGKILLed mid-feed, the other takes over;
- `pair`: two workers share the partitions, none killed (tells the takeover's own effect from
  that of sharing the partitions).

Each compares the alert episodes (rule, loan, fingerprint, start within `START_TOLERANCE_S`, and
the statuses each went through) with `rules.backtest.run_backtest` (what `skipwatch backtest`
runs) on the same records. Used by tests/faults/test_modes.py, tests/integration/test_time_model.py
and `benchmarks/bench_modes.py` (which prints the figures).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from rules.backtest import run_backtest
from rules.engine import Engine
from rules.events import AlertEvent, AlertStatus, InputEvent
from rules.events.recording import EVENT_TYPE_BY_TOPIC
from services.simulator import Record, Simulation, SimulationConfig, produce_records
from tests.integration.conftest import Stack
from tests.integration.test_pipeline import diagnosis, group_lag, group_offsets
from tests.scenarios import CST

# An episode is one alert id: (rule, loan, fingerprint) and the instant it began firing.
START_TOLERANCE_S = 0.0
Episode = tuple[str, str, str, float]
Episodes = dict[Episode, set[AlertStatus]]
MODES = ("live", "backlog", "sigkill", "takeover", "pair")


def episodes(alerts: list[AlertEvent]) -> Episodes:
    """Each episode with the statuses it went through (a repeated change counts once)."""
    out: Episodes = defaultdict(set)
    for alert in alerts:
        key = (alert.rule_id, alert.loan_id, alert.fingerprint, alert.started_at.timestamp())
        out[key].add(alert.status)
    return out


def compare(got: Episodes, want: Episodes) -> tuple[list[Episode], list[Episode], list[Episode]]:
    """(missing, extra, ended differently): episodes matched on rule, loan and fingerprint,
    start within START_TOLERANCE_S; a matched episode must have fired and resolved alike."""
    unmatched = set(got)
    missing: list[Episode] = []
    differ: list[Episode] = []
    for key in sorted(want):
        rule, loan_id, fp, start = key
        match = next(
            (
                g
                for g in sorted(unmatched)
                if g[:3] == (rule, loan_id, fp) and abs(g[3] - start) <= START_TOLERANCE_S
            ),
            None,
        )
        if match is None:
            missing.append(key)
            continue
        unmatched.discard(match)
        if got[match] != want[key]:
            differ.append(key)
    return missing, sorted(unmatched), differ


def describe(
    missing: list[Episode], extra: list[Episode], differ: list[Episode], got: Episodes,
    want: Episodes,
) -> str:  # fmt: skip
    def line(episode: Episode, statuses: set[AlertStatus]) -> str:
        rule, loan_id, _, start = episode
        began = dt.datetime.fromtimestamp(start, CST).isoformat()
        return f"  {rule} {loan_id} {began} {sorted(statuses)}"

    lines = ["missing:", *(line(e, want[e]) for e in missing), "extra:"]
    lines += [*(line(e, got[e]) for e in extra), "ended differently (backtest's):"]
    return "\n".join([*lines, *(line(e, want[e]) for e in differ)])


async def wait_all_read(stack: Stack, produced: dict[str, int], timeout_s: float) -> None:
    """Until the worker group committed every produced input record and has no lag anywhere
    (gps.bound and the place topics included), twice in a row."""
    quiet = 0
    async with asyncio.timeout(timeout_s):
        while quiet < 2:
            stack.check_workers()
            offsets = await group_offsets(stack)
            committed: dict[str, int] = defaultdict(int)
            for tp, offset in offsets.items():
                committed[tp.topic.removeprefix(stack.prefix)] += offset
            done = all(committed[topic] >= n for topic, n in produced.items())
            quiet = quiet + 1 if done and not await group_lag(stack) else 0
            await asyncio.sleep(1.0)


@dataclass
class Recording:
    config: SimulationConfig
    records: list[Record]
    want: Episodes  # the backtest's
    lateness_s: float = 0.0

    @property
    def produced(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for record in self.records:
            out[record.topic] += 1
        return dict(out)


def recording(config: SimulationConfig, lateness_s: float = 0.0) -> Recording:
    """The simulator's records in recording order, and the backtest's episodes on them."""
    records = list(Simulation(config).records())
    events: list[InputEvent] = [
        EVENT_TYPE_BY_TOPIC[r.topic].model_validate(r.value) for r in records
    ]
    result = run_backtest(events, Engine.default(), lateness_s=lateness_s)
    return Recording(config, records, episodes(result.alerts), lateness_s)


@dataclass
class Outcome:
    mode: str
    records: int
    want: Episodes
    got: Episodes
    took_s: float
    kills: list[int] = field(default_factory=list)  # records sent when each kill came

    @property
    def diff(self) -> tuple[list[Episode], list[Episode], list[Episode]]:
        return compare(self.got, self.want)

    def summary(self) -> str:
        missing, extra, differ = self.diff
        kills = f", killed after {self.kills} records sent" if self.kills else ""
        return (
            f"{self.mode}: {self.records:,} records, read in {self.took_s:.0f} s{kills}; "
            f"backtest {len(self.want)} episodes, worker {len(self.got)}; missing {len(missing)}, "
            f"extra {len(extra)}, ended differently {len(differ)}"
        )

    def details(self) -> str:
        return describe(*self.diff, self.got, self.want)


async def group_stable(stack: Stack, members_wanted: int, timeout_s: float = 90) -> None:
    """Until the worker group is Stable with `members_wanted` members."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                stack.check_workers()
                try:
                    [response] = await admin.describe_consumer_groups([f"{stack.prefix}worker"])
                except GroupCoordinatorNotAvailableError:  # the group has not formed yet
                    await asyncio.sleep(0.5)
                    continue
                _error, _group, state, _ptype, _protocol, members, *_ = response.groups[0]
                if len(members) == members_wanted and state == "Stable":
                    return
                await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def run_mode(
    stack: Stack, mode: str, rec: Recording, *, feed_s: float = 40.0, timeout_s: float = 300.0,
    log: Callable[[str], None] = lambda _: None,
) -> Outcome:  # fmt: skip
    """Run the worker(s) over the recording in `mode`; the episodes they emitted."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    env = {"SKIPWATCH_WORKER__ALLOWED_LATENESS_S": str(rec.lateness_s)}
    sent = 0

    def progress(count: int, _: Record) -> None:
        nonlocal sent
        sent = count

    async def feed(rate: float | None) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            n = await produce_records(
                rec.records, producer, topic_prefix=stack.prefix, rate=rate, progress=progress
            )
        finally:
            await producer.stop()
        assert n == len(rec.records)

    rate = len(rec.records) / feed_s
    kills: list[int] = []
    started = time.monotonic()
    if mode == "backlog":
        await feed(None)
        log(f"backlog of {len(rec.records):,} records produced")
        started = time.monotonic()
        stack.start_worker(**env)
        feeding = None
    elif mode in ("live", "sigkill"):
        worker = stack.start_worker(**env)
        await group_stable(stack, 1)
        log("the worker is in the group")
        started = time.monotonic()
        feeding = asyncio.create_task(feed(rate))
    else:  # takeover, pair
        doomed = stack.start_worker("w1", **env)
        stack.start_worker("w2", **env)
        await group_stable(stack, 2)
        log("two workers in the group")
        started = time.monotonic()
        feeding = asyncio.create_task(feed(rate))
    try:
        if mode == "sigkill":
            for n, share in enumerate((1 / 3, 2 / 3), start=1):
                while sent < share * len(rec.records) and not feeding.done():
                    stack.check_workers()
                    await asyncio.sleep(0.2)
                worker.kill(signal.SIGKILL)
                kills.append(sent)
                log(f"SIGKILL {n} after {sent:,} records sent")
                await asyncio.sleep(2.0)
                worker = stack.start_worker(f"w1-restart{n}", instance="w1", **env)
        elif mode == "takeover":
            while sent < len(rec.records) / 2 and not feeding.done():
                stack.check_workers()
                await asyncio.sleep(0.2)
            doomed.kill(signal.SIGKILL)
            kills.append(sent)
            log(f"SIGKILL w1 after {sent:,} records sent; w2 takes over")
        if feeding is not None:
            await feeding
            log("feed done")
        await wait_all_read(stack, rec.produced, timeout_s)
    except TimeoutError as exc:
        raise AssertionError(f"{mode}: the worker did not read the recording:\n"
                             f"{await diagnosis(stack)}") from exc  # fmt: skip
    finally:
        if feeding is not None and not feeding.done():
            feeding.cancel()
    took = time.monotonic() - started

    def same(alerts: list[AlertEvent]) -> bool:
        return episodes(alerts) == rec.want

    got = episodes(await stack.alerts(until=same, timeout_s=20))
    return Outcome(mode, len(rec.records), rec.want, got, took, kills)

"""The simulator's sinks: Kafka keys and pacing, live time mapping, mixed stream, places, CLI."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from rules.events import Label, decode_event, read_recording
from rules.places import PlaceKind, load_places
from services.cli_simulate import app
from services.simulator import (
    DEFAULT_START,
    Record,
    Simulation,
    SimulationConfig,
    TimeWarp,
    catalog_places,
    live_records,
    mixed_stream,
    produce_records,
    send_delay,
)

pytestmark = pytest.mark.unit


class FakeProducer:
    """Records what is sent; `send` returns an already-acknowledged future, as aiokafka's does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _small() -> Simulation:
    return Simulation(SimulationConfig(loans=6, days=2, seed=11, skip_fraction=0.5))


async def test_kafka_sink_keys_loans_payments_contacts_by_loan_and_gps_by_device() -> None:
    records = list(_small().records())
    producer = FakeProducer()
    sent = await produce_records(records, producer, topic_prefix="pre.")
    assert sent == len(records) == len(producer.sent)
    topics = {t for t, _, _ in producer.sent}
    assert topics == {"pre.loans", "pre.gps.raw", "pre.payments", "pre.contacts"}
    for topic, key, value in producer.sent:
        assert key is not None and value is not None
        event = orjson.loads(value)
        field = "device_id" if topic == "pre.gps.raw" else "loan_id"
        assert key.decode() == event[field]
        decode_event(topic.removeprefix("pre."), value)


@pytest.mark.parametrize(
    ("sent", "elapsed", "rate", "due_at", "expected"),
    [
        (0, 0.0, None, None, 0.0),  # unpaced: never waits
        (10, 0.0, 100.0, None, 0.1),  # 10 sent at 100/s: the 11th is due at 0.1 s
        (10, 0.5, 100.0, None, 0.0),  # behind schedule: send at once, no catch-up burst logic
        (0, 1.0, None, 3.5, 2.5),  # live: due 3.5 s after the start
        (500, 1.0, 100.0, 2.0, 4.0),  # both: the rate is the later constraint
        (5, 1.0, 100.0, 2.0, 1.0),  # both: the live time is the later constraint
    ],
)
def test_send_delay(
    sent: int, elapsed: float, rate: float | None, due_at: float | None, expected: float
) -> None:
    assert send_delay(sent=sent, elapsed=elapsed, rate=rate, due_at=due_at) == pytest.approx(
        expected
    )


async def test_rate_paces_sends_to_the_requested_records_per_second() -> None:
    records = list(_small().records())[:201]
    clock = FakeClock()
    await produce_records(
        records, FakeProducer(), topic_prefix="", rate=50.0, clock=clock, sleep=clock.sleep
    )
    # 201 records at 50/s: the last one goes out 200/50 = 4 s after the first.
    assert clock.now - 100.0 == pytest.approx(4.0)


async def test_live_sends_each_record_when_the_wall_clock_reaches_its_arrival() -> None:
    sim = _small()
    warp = TimeWarp(sim.start, wall_start=1_000_000.0, speed=3600.0)  # an hour a second
    records = list(live_records(sim.records(), warp))
    clock = FakeClock()
    sent: list[float] = []

    def progress(count: int, record: Record) -> None:
        sent.append(clock.now - 100.0)

    await produce_records(
        records,
        FakeProducer(),
        topic_prefix="",
        live_from=warp.wall_start,
        clock=clock,
        sleep=clock.sleep,
        progress=progress,
    )
    for at, record in zip(sent, records, strict=True):
        assert at == pytest.approx(max(0.0, record.arrival - warp.wall_start))
    # Two simulated days at 3600x take 48 seconds of wall time.
    assert 47.0 < sent[-1] <= 48.1


async def test_history_then_live_sends_the_past_at_once_and_the_rest_on_the_wall_clock() -> None:
    """`simulate --live --history D`: event time is wall time; `now` falls inside the run."""
    sim = _small()  # two days
    warp = TimeWarp(sim.start, sim.start, 1.0)
    now = sim.start + 86400  # one day of history
    records = list(live_records(sim.records(), warp))
    assert [r.event_time for r in records] == [r.event_time for r in sim.records()]
    clock = FakeClock()
    sent: list[float] = []
    await produce_records(
        records,
        FakeProducer(),
        topic_prefix="",
        live_from=now,
        clock=clock,
        sleep=clock.sleep,
        progress=lambda count, record: sent.append(clock.now - 100.0),
    )
    past = [at for at, r in zip(sent, records, strict=True) if r.arrival <= now]
    assert past and all(at == 0.0 for at in past)  # the history: at once
    for at, record in zip(sent, records, strict=True):
        if record.arrival > now:
            assert at == pytest.approx(record.arrival - now)  # the rest: when it happens
    assert sent[-1] == pytest.approx(max(r.arrival for r in records) - now)


def test_time_warp_maps_times_and_due_dates() -> None:
    start = DEFAULT_START.timestamp()
    warp = TimeWarp(start, wall_start=start + 86400 * 10, speed=60.0)
    assert warp.wall(start) == start + 86400 * 10
    assert warp.wall(start + 3600) == start + 86400 * 10 + 60
    # A due date a month out lands half a day later on the compressed calendar (30 d / 60).
    assert warp.wall_date("2026-03-02") == "2026-03-12"
    assert warp.wall_date("2026-04-01") == date(2026, 3, 12).isoformat()
    with pytest.raises(ValueError):
        TimeWarp(start, start, speed=0)


def test_live_records_restamp_times_and_make_event_ids_unique_per_run() -> None:
    sim = _small()
    now = 1_800_000_000.0
    warp = TimeWarp(sim.start, wall_start=now, speed=60.0)
    original = list(sim.records())
    live = list(live_records(original, warp))
    assert len(live) == len(original)
    lines = [r.line().decode() for r in live]
    assert len(list(read_recording(lines))) == len(live)  # still valid events
    for before, after in zip(original, live, strict=True):
        assert after.arrival == pytest.approx(warp.wall(before.arrival))
        if before.topic != "loans":
            assert after.value["event_id"] == before.value["event_id"] + f"@{int(now):x}"
            assert orjson.loads(after.line())["value"]["ts"].endswith("+08:00")
    pings = [r for r in live if r.topic == "gps.raw"]
    assert pings[-1].event_time <= now + 2 * 86400 / 60 + 1


def test_mixed_stream_is_fast_deterministic_valid_and_keyed() -> None:
    first = list(mixed_stream(300, 20_000, seed=3, topic_prefix="x."))
    assert first == list(mixed_stream(300, 20_000, seed=3, topic_prefix="x."))
    assert first != list(mixed_stream(300, 20_000, seed=4, topic_prefix="x."))
    assert len(first) == 20_300
    assert [t for t, _, _ in first[:300]] == ["x.loans"] * 300
    counts: dict[str, int] = {}
    for topic, key, value in first:
        name = topic.removeprefix("x.")
        counts[name] = counts.get(name, 0) + 1
        event = decode_event(name, value)
        field = "device_id" if name == "gps.raw" else "loan_id"
        assert key.decode() == getattr(event, field)
    assert counts["gps.raw"] > 0.85 * 20_000
    assert counts["contacts"] > 0 and counts["payments"] > 0
    # Every event refers to a loan or a device of a loan in the stream.
    loan_ids = {k for t, k, _ in first[:300]}
    devices = {
        d["device_id"].encode() for _, _, v in first[:300] for d in orjson.loads(v)["devices"]
    }
    assert all(k in (devices if t == "x.gps.raw" else loan_ids) for t, k, _ in first[300:])


def test_mixed_stream_100k_loans_have_unique_ids() -> None:
    loans = [k for t, k, _ in mixed_stream(100_000, 0)]
    assert len(loans) == len(set(loans)) == 100_000


def test_catalog_places_are_read_with_the_rule_engines_loader(tmp_path: Path) -> None:
    assert catalog_places(tmp_path / "missing") == ()
    (tmp_path / "lots.csv").write_text(
        "id,kind,name,lat,lon,radius_m\nlot-1,second_pledge_lot,测试二押点,30.7,104.1,200\n",
        encoding="utf-8",
    )
    (place,) = catalog_places(tmp_path)
    assert (place.id, place.kind, place.lat, place.lon, place.radius_m) == (
        "lot-1",
        PlaceKind.SECOND_PLEDGE_LOT,
        30.7,
        104.1,
        200.0,
    )


def test_cli_writes_a_recording_and_labels(tmp_path: Path) -> None:
    out, labels = tmp_path / "sim.jsonl", tmp_path / "labels.jsonl"
    places = tmp_path / "places.csv"
    result = CliRunner().invoke(
        app,
        [
            "--loans",
            "10",
            "--days",
            "3",
            "--seed",
            "2",
            "--skip-fraction",
            "0.3",
            "--out",
            str(out),
            "--labels",
            str(labels),
            "--places",
            str(tmp_path / "none.json"),
        ],
    )
    assert result.exit_code == 2  # a places file that does not exist is a usage error
    assert "does not exist" in result.output
    result = CliRunner().invoke(
        app,
        [
            "--loans",
            "10",
            "--days",
            "3",
            "--seed",
            "2",
            "--skip-fraction",
            "0.3",
            "--out",
            str(out),
            "--labels",
            str(labels),
            "--places-out",
            str(places),
            "--start",
            "2026-05-01T00:00:00+08:00",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = out.read_text(encoding="utf-8").splitlines()
    events = list(read_recording(lines))
    assert sum(1 for topic, _ in events if topic == "loans") == 10
    # Every loan is labelled with its kind; the three skips with the time they went dark.
    written = [Label.model_validate_json(line) for line in labels.read_text().splitlines()]
    assert len(written) == 10 and all(label.kind for label in written)
    skips = [label for label in written if label.unreachable_at is not None]
    assert len(skips) == 3
    assert all(label.unreachable_at and label.unreachable_at.month == 5 for label in skips)
    assert all(label.kind and label.kind.startswith("skip_") for label in skips)
    # The places of every simulated city, in a file the engine's loader reads.
    loaded = load_places(places)
    cities = {p.id.split("-")[0] for p in loaded.places}
    assert {"cd", "sim"} <= cities
    assert {p.id for p in loaded.places if p.id.startswith("sim-")} >= {
        "sim-shenzhen-second_pledge_lot-1",
        "sim-zhengzhou-pawn_shop-2",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--live"], "--kafka"),
        (["--kafka", "--history", "30"], "--live"),
        (["--kafka", "--live", "--history", "30", "--speed", "60"], "--speed"),
        (
            ["--kafka", "--live", "--history", "30", "--start", "2026-05-01T00:00:00+08:00"],
            "--start",
        ),
        (["--start", "2026-05-01T00:00:00"], "offset"),
        (["--start", "yesterday"], "RFC 3339"),
    ],
)
def test_cli_refuses_bad_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["--loans", "1", "--days", "1", *args])
    assert result.exit_code == 2
    assert message in result.output


class FailingOnce(FakeProducer):
    """The sends of its first window fail (a producer that died), then all succeed."""

    def __init__(self, fail_first: int) -> None:
        super().__init__()
        self.fail_first = fail_first
        self.calls = 0

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[Any]:
        self.calls += 1
        if self.calls > self.fail_first:
            return await super().send(topic, value, key)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(ConnectionError("producer gone"))
        return future


async def test_a_failed_window_is_sent_again_once_recovered_and_given_up_otherwise() -> None:
    records = list(_small().records())[:25]
    producer = FailingOnce(fail_first=3)
    recovered: list[BaseException] = []

    async def recover(error: BaseException) -> bool:
        recovered.append(error)
        return True

    sent = await produce_records(records, producer, topic_prefix="", window=10, recover=recover)
    assert sent == 25 and len(recovered) == 1
    values = [value for _, _, value in producer.sent]
    assert set(values) == {r.value_bytes() for r in records}  # every record acknowledged
    assert len(values) == 25 + 7  # the first window's 7 good sends went again with it

    async def give_up(error: BaseException) -> bool:
        return False

    with pytest.raises(ConnectionError):
        await produce_records(records, FailingOnce(3), topic_prefix="", window=10, recover=give_up)

"""`skipwatch simulate`: a simulated loan portfolio to a recording file and/or the Kafka topics.

Mount it with ``app.command("simulate")(simulate_command)``; `app` here runs it standalone.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from rules.events import Label
from rules.places import load_places
from services.simulator import (
    CN_TZ,
    DEFAULT_START,
    Record,
    Simulation,
    SimulationConfig,
    TimeWarp,
    catalog_places,
    format_ts,
    live_records,
    produce_records,
    write_places_csv,
)

app = typer.Typer(help="Simulate a used-car loan portfolio (loans, GPS, payments, contacts).")


class Progress:
    """A progress line on stderr at most about once a second."""

    def __init__(self, stream: IO[str], every_s: float = 1.0) -> None:
        self.stream, self.every_s = stream, every_s
        self.started = self.last = time.monotonic()
        self.count = 0

    def __call__(self, count: int, record: Record) -> None:
        self.count = count
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            rate = count / max(now - self.started, 1e-9)
            self.stream.write(
                f"simulate: {count:,} records ({rate:,.0f}/s), "
                f"event time {format_ts(record.event_time)}\n"
            )
            self.stream.flush()

    def done(self) -> None:
        elapsed = time.monotonic() - self.started
        self.stream.write(f"simulate: {self.count:,} records in {elapsed:.1f} s\n")


def _ensure_topics_waiting(wait_s: float) -> None:
    """Create the topics; while the broker cannot be reached, wait for it for up to ``wait_s``
    (services.kafka.wait_for_broker), then exit 1 naming the broker and the last error."""
    from aiokafka.errors import KafkaError

    from services.kafka import ensure_topics_for, wait_for_broker
    from services.settings import get_settings

    settings = get_settings()
    bootstrap = settings.kafka.bootstrap_servers

    async def ensure() -> None:
        try:
            await ensure_topics_for(settings)
            return
        except (KafkaError, OSError) as exc:
            typer.echo(
                f"simulate: waiting for Kafka at {bootstrap} ({type(exc).__name__}: {exc}); "
                f"retrying for up to {wait_s:g} s",
                err=True,
            )
        await wait_for_broker(bootstrap, timeout_s=wait_s)
        await ensure_topics_for(settings)

    try:
        asyncio.run(ensure())
    except TimeoutError as exc:
        cause = exc.__cause__ or exc
        typer.echo(
            f"simulate: Kafka at {bootstrap} not reachable for {wait_s:g} s "
            f"({type(cause).__name__}: {cause}); start it (`make up` starts everything) or set "
            "SKIPWATCH_KAFKA__BOOTSTRAP_SERVERS",
            err=True,
        )
        raise typer.Exit(1) from None


def _parse_start(value: str | None, live: bool) -> datetime:
    if value is None:
        # Live runs begin now; files default to a fixed date so the same seed gives the same file.
        return datetime.fromtimestamp(int(time.time()), CN_TZ) if live else DEFAULT_START
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an RFC 3339 time: {value!r}", param_hint="--start") from None
    if parsed.tzinfo is None:
        raise typer.BadParameter(
            "needs an explicit offset, e.g. 2026-03-02T00:00:00+08:00", param_hint="--start"
        )
    return parsed


def _write_lines(
    records: Iterable[Record], out: IO[bytes] | None, progress: Progress
) -> Iterator[Record]:
    for count, record in enumerate(records, start=1):
        if out is not None:
            out.write(record.line() + b"\n")
        progress(count, record)
        yield record


def _write_labels(path: Path, labels: Iterable[Label]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for label in labels:
            fh.write(label.model_dump_json() + "\n")


async def _to_kafka(records: Iterable[Record], rate: float | None, live_from: float | None) -> int:
    from functools import partial

    from services.kafka import RecoveringProducer, make_producer
    from services.settings import get_settings

    settings = get_settings()
    holder = RecoveringProducer(partial(make_producer, settings), name="simulator")

    class Current:
        """Sends through whichever producer the holder has now (it is replaced after a fatal
        error)."""

        async def send(
            self, topic: str, value: bytes | None = None, key: bytes | None = None
        ) -> Any:
            return await holder.producer.send(topic, value=value, key=key)

    async def recover(error: BaseException) -> bool:
        holder.check(error)  # a fatal error: replace the producer
        return await holder.wait_ready(timeout_s=300.0)

    await holder.start()
    try:
        if not await holder.wait_ready(timeout_s=60.0):
            raise RuntimeError(f"Kafka at {settings.kafka.bootstrap_servers} not reachable")
        return await produce_records(
            records,
            Current(),
            topic_prefix=settings.kafka.topic_prefix,
            rate=rate,
            live_from=live_from,
            recover=recover,
        )
    finally:
        await holder.stop()


@app.command()
def simulate_command(
    loans: Annotated[int, typer.Option(min=0, help="Loans in the portfolio.")] = 200,
    days: Annotated[float, typer.Option(min=0.01, help="Days of event time.")] = 30.0,
    seed: Annotated[int, typer.Option(help="Same seed, same output.")] = 1,
    skip_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of loans that skip (labelled).")
    ] = 0.05,
    start: Annotated[
        str | None,
        typer.Option(help="RFC 3339 start of event time [default: 2026-03-02T00:00+08:00; now]."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the recording (JSON lines) here; '-' for stdout.")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Write ground truth here: a JSON line per loan {loan_id, unreachable_at, kind}"
            " (unreachable_at null: not a skip)."
        ),
    ] = None,
    places_out: Annotated[
        Path | None,
        typer.Option(
            help="Write every risk place of the run (given + generated) as a place CSV, for"
            " `backtest --places` and the worker's SKIPWATCH_WORKER__PLACES_DIR."
        ),
    ] = None,
    kafka: Annotated[
        bool, typer.Option("--kafka", help="Produce to the Kafka topics (SKIPWATCH_KAFKA__*).")
    ] = False,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="Cap Kafka sends at this many records/s.")
    ] = None,
    live: Annotated[
        bool,
        typer.Option("--live", help="Map event time onto the wall clock from now (with --kafka)."),
    ] = False,
    speed: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="With --live: event time runs this many times faster [default: 60]."
        ),
    ] = None,
    history: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="With --live: start this many days before now, send them as fast as --rate "
            "allows, then go on at the wall clock (speed 1): the demo looks live.",
        ),
    ] = None,
    places: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            help="Risk places (.csv/.geojson file or directory) [default: rules/catalog/places;"
            " generated near cities it does not cover].",
        ),
    ] = None,
    kafka_wait: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="With --kafka: wait this many seconds for the broker to create the topics "
            "(it may still be starting) before giving up.",
        ),
    ] = 60.0,
) -> None:
    """Simulate a portfolio: a recording file, labels, and/or records to Kafka (paced or live)."""
    if live and not kafka:
        raise typer.BadParameter("--live sends to Kafka: add --kafka", param_hint="--live")
    if history is not None and not live:
        raise typer.BadParameter("--history needs --live", param_hint="--history")
    if history is not None and speed is not None:
        raise typer.BadParameter(
            "--history runs at the wall clock: drop --speed", param_hint="--speed"
        )
    if history is not None and start is not None:
        raise typer.BadParameter(
            "--history starts `history` days before now: drop --start", param_hint="--start"
        )
    if history is not None:
        start = datetime.fromtimestamp(int(time.time() - history * 86400), CN_TZ).isoformat()
    risk_places = load_places(places).places if places is not None else catalog_places()
    config = SimulationConfig(
        loans=loans,
        days=days,
        seed=seed,
        start=_parse_start(start, live),
        skip_fraction=skip_fraction,
        places=risk_places,
    )
    typer.echo(
        f"simulate: {loans} loans, {days:g} days from {config.start.isoformat()}, seed {seed}; "
        f"{len(risk_places)} risk places from {places or 'the catalog'} (generated where none)",
        err=True,
    )
    simulation = Simulation(config)
    if kafka:
        # Before the live clock starts, so the first live records are not already late.
        _ensure_topics_waiting(kafka_wait)
    warp: TimeWarp | None = None
    if history is not None:
        # Event time is wall time: the history is in the past (sent at once, capped by --rate),
        # the rest is sent when the wall clock reaches it.
        warp = TimeWarp(simulation.start, simulation.start, 1.0)
    elif live:
        warp = TimeWarp(simulation.start, time.time(), 60.0 if speed is None else speed)
    records: Iterable[Record] = simulation.records()
    sim_labels = simulation.truth
    if warp is not None:
        records = live_records(records, warp)
        sim_labels = [
            label
            if label.unreachable_at is None
            else label.model_copy(
                update={
                    "unreachable_at": datetime.fromtimestamp(
                        int(warp.wall(label.unreachable_at.timestamp())), CN_TZ
                    )
                }
            )
            for label in sim_labels
        ]
    if labels is not None:
        _write_labels(labels, sim_labels)
    if places_out is not None:
        write_places_csv(simulation.places, places_out)

    progress = Progress(sys.stderr)
    with ExitStack() as stack:
        sink: IO[bytes] | None = None
        if out is not None and str(out) == "-":
            sink = sys.stdout.buffer
        elif out is not None:
            sink = stack.enter_context(out.open("wb"))
        elif not kafka:
            sink = sys.stdout.buffer  # nothing else asked for: the recording goes to stdout
        written = _write_lines(records, sink, progress)
        if kafka:
            live_from = None if warp is None else warp.wall_start
            if history is not None:
                live_from = time.time()  # due times count from now: the past is due at once
            asyncio.run(_to_kafka(written, rate, live_from))
        else:
            for _ in written:
                pass
    progress.done()

"""`skipwatch evaluate`: simulate a portfolio (or read a recording and its labels), run the
engine over it, streaming, and report how the alerts compare with the ground truth."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from rules.engine import Engine, InputEvent
from rules.events.recording import Label, RecordingError
from rules.places import PlaceFileError, PlaceIndex, load_places
from rules.spec import CATALOG_DIR, RuleLoadError, load_rules
from services.evaluate import (
    Progress,
    Run,
    dump_json,
    format_evaluation,
    read_labels,
    recording_events,
    simulation_events,
)
from services.evaluation_html import write_report
from services.simulator import DEFAULT_START, Simulation, SimulationConfig, catalog_places


def evaluate_command(
    loans: Annotated[int, typer.Option(min=1, help="Simulated loans.")] = 200,
    days: Annotated[float, typer.Option(min=0.01, help="Simulated days.")] = 30.0,
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 1,
    skip_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of simulated loans that skip.")
    ] = 0.1,
    recording: Annotated[
        Path | None,
        typer.Option(help="Evaluate this recording instead of simulating (needs --labels)."),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Ground truth of --recording (JSON lines).")
    ] = None,
    rules: Annotated[Path | None, typer.Option(help="Rule directory [default: catalog].")] = None,
    places: Annotated[
        Path | None,
        typer.Option(
            help="Risk places (.csv/.geojson or dir) [default: the catalog's; a simulation adds"
            " the places it generates for cities the list does not cover]."
        ),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write an HTML report (index.html) here.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full summary as JSON here.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines.")] = False,
) -> None:
    """Precision, recall at T and T+1h, lead time, alert volume and flapping, for criticals and
    warnings, per rule and per kind of loan (T: a skip's unreachable_at)."""
    if (recording is None) != (labels is None):
        raise typer.BadParameter("--recording and --labels go together", param_hint="--labels")
    events: Iterator[InputEvent]
    truth: list[Label]
    try:
        rule_set = load_rules(rules)
        if recording is not None and labels is not None:
            place_index = load_places(places or CATALOG_DIR / "places")
            truth = read_labels(labels)
            if not recording.is_file():
                raise OSError(f"{recording}: no such file")
            events = recording_events(recording)
            source = f"recording {recording}"
        else:
            given = load_places(places).places if places is not None else catalog_places()
            simulation = Simulation(
                SimulationConfig(
                    loans=loans,
                    days=days,
                    seed=seed,
                    start=DEFAULT_START,
                    skip_fraction=skip_fraction,
                    places=given,
                )
            )
            place_index = PlaceIndex(simulation.places)
            truth = simulation.truth
            events = simulation_events(simulation)
            source = f"simulation of {loans} loans, {days:g} days, seed {seed}"
    except (RuleLoadError, PlaceFileError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"evaluate: {source}; {len(rule_set)} rules, {len(place_index)} risk places", err=True
    )
    run = Run(
        Engine(rule_set, place_index),
        labels=truth,
        progress=None if quiet else Progress(sys.stderr),
    )
    try:
        summary = run.execute(events)
    except RecordingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(format_evaluation(summary["evaluation"]))
    typer.echo(
        f"\n{summary['events']:,} events in {summary['seconds']['wall']} s wall, "
        f"{summary['seconds']['cpu']} s CPU ({summary['events_per_s']['cpu']} events/CPU s)"
    )
    args = ["--loans", str(loans), "--days", f"{days:g}", "--seed", str(seed)]
    args += ["--skip-fraction", f"{skip_fraction:g}"]
    if recording is not None:
        args = ["--recording", str(recording), "--labels", str(labels)]
    for flag, value in (("--rules", rules), ("--places", places), ("--html", html)):
        if value is not None:
            args += [flag, str(value)]
    command = "skipwatch evaluate " + shlex.join(args)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_bytes(dump_json({"command": command, **summary}))
    if html is not None:
        page = write_report(html, summary, command)
        typer.echo(f"report: {page}")

"""CLI: `skipwatch rules check [DIR]` and `skipwatch backtest RECORDING ...`.

Mounted by services/cli.py. All work is done by rules/; this module only reads and writes files.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import orjson
import typer

from rules.engine import Engine
from rules.events.recording import RecordingError
from rules.places import PlaceFileError, load_places
from rules.policy import FAMILIES, ways
from rules.spec import CATALOG_DIR, RuleLoadError, load_rules, missing_chinese
from services.evaluate import Progress, Run, format_evaluation, read_labels, recording_events

app = typer.Typer(help="Rule catalog tools.", no_args_is_help=True)


@app.callback()
def rules_group() -> None:
    """Rule catalog tools."""


@app.command("check")
def check(
    directory: Annotated[
        Path | None, typer.Argument(help="Directory of *.yaml rule files (default: built-in).")
    ] = None,
) -> None:
    """Validate rule files: schema, CEL syntax, variables and types, and the severity policy (a
    critical needs two evidence families, one of them payment or contact, or a hard tamper
    pattern; see docs/rules.md), and that every rule carries its Chinese title and description
    (`title_zh`, `description_zh`: the dashboard's default language). Exit 1 on the first load
    error, or after listing every rule without Chinese."""
    try:
        rules = load_rules(directory)
    except RuleLoadError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    untranslated = [(rule, missing_chinese(rule)) for rule in rules.rules if missing_chinese(rule)]
    for rule, fields in untranslated:
        error = RuleLoadError(rule.file, rule.id, ", ".join(fields), "missing (zh-CN text)")
        typer.echo(f"error: {error}", err=True)
    if untranslated:
        raise typer.Exit(1)
    for rule in rules.rules:
        evidence = _evidence(rule.condition.source)
        escalated = "".join(
            f"  -> {severity.value} {_evidence(rule.condition.source, expression.source)}"
            for expression, severity in rule.escalations
        )
        typer.echo(f"ok  {rule.severity.value:<8} {rule.id:<40} {evidence}{escalated}")
    typer.echo(f"{len(rules)} rules OK in {directory or CATALOG_DIR}")


def _evidence(*expressions: str) -> str:
    """The evidence families of each way the expressions can hold: payment+vehicle|contact+..."""
    shown: list[str] = []
    for way in ways(*expressions):
        text = "+".join(f for f in FAMILIES if f in way.families) or "-"
        if way.tamper:
            text += "(tamper)"
        if text not in shown:
            shown.append(text)
    return " | ".join(shown)


def backtest_command(
    recording: Annotated[Path, typer.Argument(help="Recording (JSON lines, arrival order).")],
    rules: Annotated[Path | None, typer.Option("--rules", help="Rule directory.")] = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="Ground truth: {loan_id, unreachable_at, kind} lines."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write AlertEvents as JSON lines.")
    ] = None,
    places: Annotated[
        Path | None,
        typer.Option("--places", help="Place file or dir (e.g. what simulate --places-out wrote)."),
    ] = None,
    lateness: Annotated[float, typer.Option("--lateness", help="Allowed lateness, seconds.")] = 0.0,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines on stderr.")] = False,
) -> None:
    """Run the rules engine over a recording, streaming; print a JSON summary (with labels: the
    evaluation of `skipwatch evaluate`)."""
    try:
        rule_set = load_rules(rules)
        place_index = load_places(places or CATALOG_DIR / "places")
        truth = read_labels(labels) if labels is not None else None
        if not recording.is_file():
            raise OSError(f"{recording}: no such file")
    except (RuleLoadError, PlaceFileError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    with ExitStack() as stack:
        sink = stack.enter_context(out.open("wb")) if out is not None else None
        run = Run(
            Engine(rule_set, place_index),
            labels=truth,
            alerts_out=sink,
            progress=None if quiet else Progress(sys.stderr),
            lateness_s=lateness,
        )
        try:
            summary = run.execute(recording_events(recording))
        except RecordingError as exc:
            typer.echo(f"error: {recording}: {exc}", err=True)
            raise typer.Exit(1) from None
    if "evaluation" in summary:
        typer.echo(format_evaluation(summary["evaluation"]), err=True)
    typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())

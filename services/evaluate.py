"""Running the engine over a recording or a simulation, streaming, with progress and evaluation.

Shared by `skipwatch backtest` and `skipwatch evaluate`. Records are decoded one at a time and
alerts go to sinks as they happen (a JSON-lines file, the episode tracker of an evaluation):
memory grows with loans and rules, not with the recording.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from rules.backtest import Backtest
from rules.engine import Engine, InputEvent
from rules.evaluation import ALL_RULES, LEVELS, EpisodeTracker, Evaluation, Truth
from rules.events.alert import AlertEvent, Severity
from rules.events.recording import EVENT_TYPE_BY_TOPIC, Label, read_recording
from services.simulator import CN_TZ, Simulation

PROGRESS_EVERY_S = 5.0


def recording_events(path: Path) -> Iterator[InputEvent]:
    """The events of a recording file, decoded one line at a time."""
    with path.open("rb") as handle:
        for _, event in read_recording(handle):
            yield event


def simulation_events(simulation: Simulation) -> Iterator[InputEvent]:
    """A simulation's records as events, without writing or re-parsing JSON."""
    models = EVENT_TYPE_BY_TOPIC
    for record in simulation.records():
        yield models[record.topic].model_validate(record.value)


def read_labels(path: Path) -> list[Label]:
    """Label lines; a bad line raises ValueError naming it."""
    labels = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                labels.append(Label.model_validate_json(line))
            except ValueError as exc:
                raise ValueError(f"{path}: line {number}: {exc}") from None
    return labels


class Progress:
    """A line on ``stream`` every ``every_s`` seconds: events, events/s, event time, alerts."""

    def __init__(
        self,
        stream: IO[str] | None,
        every_s: float = PROGRESS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream, self.every_s, self.clock = stream, every_s, clock
        self.started = self.last = clock()
        self.cpu_started = time.process_time()

    def tick(self, events: int, backtest: Backtest) -> None:
        now = self.clock()
        if self.stream is None or now - self.last < self.every_s:
            return
        self.last = now
        rate = events / max(now - self.started, 1e-9)
        mark = backtest.watermark
        at = dt.datetime.fromtimestamp(mark, CN_TZ).isoformat() if mark is not None else "-"
        self.stream.write(
            f"engine: {events:,} events ({rate:,.0f}/s), event time {at}, "
            f"{backtest.alert_events:,} alert events\n"
        )
        self.stream.flush()

    def elapsed(self) -> tuple[float, float]:
        """(wall, CPU) seconds since the start."""
        return self.clock() - self.started, time.process_time() - self.cpu_started


@dataclass
class Run:
    """One engine run over a stream of events, with optional sinks and an evaluation."""

    engine: Engine
    labels: list[Label] | None = None
    alerts_out: IO[bytes] | None = None
    progress: Progress | None = None
    lateness_s: float = 0.0
    evaluation: Evaluation | None = field(init=False, default=None)
    tracker: EpisodeTracker | None = field(init=False, default=None)
    first_ts: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.labels is not None:
            truth = {label.loan_id: Truth.from_label(label) for label in self.labels}
            self.evaluation = Evaluation(truth, tz=CN_TZ)
            self.tracker = EpisodeTracker(self.evaluation.add)

    def _sink(self, alert: AlertEvent) -> None:
        if self.alerts_out is not None:
            self.alerts_out.write(alert.model_dump_json().encode() + b"\n")
        if self.tracker is not None:
            self.tracker.feed(alert)

    def execute(self, events: Iterable[InputEvent]) -> dict[str, Any]:
        backtest = Backtest(self.engine, self._sink, lateness_s=self.lateness_s)
        progress = self.progress or Progress(None)
        count = 0
        for event in events:
            backtest.feed(event)
            count += 1
            if self.first_ts is None and backtest.watermark is not None:
                self.first_ts = backtest.watermark
            if count & 0xFFF == 0:
                progress.tick(count, backtest)
        backtest.finish()
        wall, cpu = progress.elapsed()
        summary = backtest.summary()
        summary["events"] = count
        summary["seconds"] = {"wall": round(wall, 1), "cpu": round(cpu, 1)}
        summary["events_per_s"] = {
            "wall": round(count / wall) if wall > 0 else None,
            "cpu": round(count / cpu) if cpu > 0 else None,
        }
        if self.tracker is not None and self.evaluation is not None:
            self.tracker.finish()
            days = 0.0
            if self.first_ts is not None and backtest.max_ts is not None:
                days = max(backtest.max_ts - self.first_ts, 0.0) / 86_400.0
            summary["evaluation"] = self.evaluation.report(backtest.states, days)
            summary["evaluation"]["daily"] = {
                level.value: {
                    day: n for (lv, day), n in sorted(self.evaluation.daily.items()) if lv is level
                }
                for level in LEVELS
            }
            summary["evaluation"]["leads_h"] = {
                level.value: {
                    kind: sorted(round(x, 2) for x in self.evaluation.leads(level, kind))
                    for kind in summary["evaluation"]["skip_kinds"]
                }
                for level in LEVELS
            }
        return summary


# ---------------------------------------------------------------------------- text output

_COLUMNS = (
    ("loans_alerted", "alerted", "{:>7}"),
    ("precision", "prec", "{:>6}"),
    ("recall_at_label", "rec@T", "{:>6}"),
    ("recall_by_label_1h", "rec@T+1h", "{:>8}"),
    ("lead_h_median", "lead med h", "{:>10}"),
    ("lead_h_p10", "lead p10 h", "{:>10}"),
    ("episodes_per_1000_loan_days", "ep/1k loan-d", "{:>12}"),
    ("flap_share", "flap", "{:>6}"),
    ("false_loans", "false loans", "{:>11}"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def format_table(title: str, rows: dict[str, dict[str, Any]], width: int = 44) -> list[str]:
    header = f"{title:<{width}}" + " ".join(fmt.format(name) for _, name, fmt in _COLUMNS)
    lines = [header, "-" * len(header)]
    for name, metrics in rows.items():
        cells = " ".join(fmt.format(_cell(metrics.get(key))) for key, _, fmt in _COLUMNS)
        lines.append(f"{name[:width]:<{width}}{cells}")
    return lines


def format_evaluation(evaluation: dict[str, Any]) -> str:
    """The printed report: per level, overall and per rule, then per kind of loan."""
    out = [
        f"{evaluation['loans']} loans, {evaluation['skips']} labelled skips, "
        f"{evaluation['days']:.2f} days; T = unreachable_at, grace {evaluation['grace_h']:g} h",
    ]
    for level in (s.value for s in LEVELS):
        block = evaluation["levels"][level]
        out.append("")
        rows = {ALL_RULES: block["overall"], **block["rules"]}
        rows = {k: v for k, v in rows.items() if k == ALL_RULES or v["loans_alerted"]}
        out += format_table(f"{level.upper()}S by rule", rows)
        out.append("")
        out += format_table(f"{level.upper()}S by kind of loan (all rules)", block["kinds"])
    out.append("")
    out.append("confusion by kind (critical: caught by T+1h / late / warned only / missed;")
    out.append("                   good loans: critical / warned / quiet)")
    for kind, counts in evaluation["confusion"].items():
        out.append(f"  {kind:<44}" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    critical = evaluation["levels"][Severity.CRITICAL.value]["overall"]
    warning = evaluation["levels"][Severity.WARNING.value]["overall"]
    out.append("")
    out.append(
        "headline: criticals recall@T+1h {r} precision {p} false-critical loans {f} "
        "({fs} of good loans); warnings {w} episodes/1k loan-days, flapping {fl}".format(
            r=_cell(critical["recall_by_label_1h"]),
            p=_cell(critical["precision"]),
            f=critical["false_loans"],
            fs=_cell(critical["false_loan_share"]),
            w=_cell(warning["episodes_per_1000_loan_days"]),
            fl=_cell(warning["flap_share"]),
        )
    )
    return "\n".join(out)


def dump_json(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

"""`skipwatch evaluate`: a small simulation end to end, the recording mode, bad input."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from services.cli_evaluate import evaluate_command
from services.simulator import Simulation, SimulationConfig, catalog_places, write_places_csv

pytestmark = pytest.mark.unit

app = typer.Typer()
app.command()(evaluate_command)


def test_evaluate_a_small_simulation_writes_figures_and_an_html_report(tmp_path: Path) -> None:
    html, json_out = tmp_path / "report", tmp_path / "summary.json"
    args = ["--loans", "40", "--days", "4", "--seed", "5", "--skip-fraction", "0.25"]
    result = CliRunner().invoke(app, [*args, "--html", str(html), "--json", str(json_out)])
    assert result.exit_code == 0, result.output
    assert "CRITICALS by rule" in result.stdout and "WARNINGS by kind of loan" in result.stdout
    assert "headline: criticals recall@T+1h" in result.stdout
    summary = orjson.loads(json_out.read_bytes())
    evaluation = summary["evaluation"]
    assert summary["command"].startswith("skipwatch evaluate --loans 40 --days 4 --seed 5")
    assert evaluation["loans"] == 40 and evaluation["skips"] == 10
    assert sum(sum(c.values()) for c in evaluation["confusion"].values()) == 40
    for level in ("critical", "warning"):
        overall = evaluation["levels"][level]["overall"]
        assert {"precision", "recall_at_label", "recall_by_label_1h", "lead_h_p10"} <= set(overall)
        assert {"episodes_per_1000_loan_days", "flap_share"} <= set(overall)
    page = (html / "index.html").read_text(encoding="utf-8")
    assert page.count("<svg") == 4  # confusion, volume, two lead-time histograms
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_evaluate_reads_a_recording_with_its_labels_and_places(tmp_path: Path) -> None:
    config = SimulationConfig(loans=12, days=3, seed=3, skip_fraction=0.25, places=catalog_places())
    sim = Simulation(config)
    recording, labels, places = tmp_path / "r.jsonl", tmp_path / "l.jsonl", tmp_path / "p.csv"
    recording.write_bytes(b"".join(r.line() + b"\n" for r in sim.records()))
    labels.write_text("".join(label.model_dump_json() + "\n" for label in sim.truth))
    write_places_csv(sim.places, places)
    args = ["--recording", str(recording), "--labels", str(labels), "--places", str(places)]
    from_file = CliRunner().invoke(app, [*args, "--quiet"])
    assert from_file.exit_code == 0, from_file.output
    assert "12 loans, 3 labelled skips" in from_file.stdout
    # The same figures as simulating in-process (up to the timing line).
    args = ["--loans", "12", "--days", "3", "--seed", "3", "--skip-fraction", "0.25", "--quiet"]
    in_process = CliRunner().invoke(app, args)
    assert in_process.exit_code == 0, in_process.output

    def figures(output: str) -> str:
        return output[: output.index("headline:")]

    assert figures(from_file.stdout) == figures(in_process.stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recording", "x.jsonl"], "go together"),
        (["--recording", "missing.jsonl", "--labels", "missing.jsonl"], "error:"),
    ],
)
def test_evaluate_refuses_bad_input(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert message in result.output

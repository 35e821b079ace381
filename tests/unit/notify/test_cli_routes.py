"""`skipwatch routes test` prints the receivers an alert reaches."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app

pytestmark = pytest.mark.unit

SAMPLE = str(Path(__file__).resolve().parents[3] / "deploy" / "notify" / "routing.example.yaml")


def test_routes_test_prints_receivers_and_muting() -> None:
    result = CliRunner().invoke(
        app,
        [
            "routes",
            "test",
            "--config",
            SAMPLE,
            "--labels",
            "severity=critical,team=recovery,loan=L-1",
            "--at",
            "2026-12-07T23:00+08:00",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith(" ")]
    assert lines == [
        "collections-wecom  (muted now by a time interval)",
        "oncall-dingtalk",
        "case-system",
    ]


def test_routes_test_rejects_bad_labels_and_bad_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["routes", "test", "--config", SAMPLE, "--labels", "severity"])
    assert result.exit_code == 1 and "label 'severity' must be name=value" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("route: {receiver: x}\nreceivers: []\n")
    result = CliRunner().invoke(app, ["routes", "test", "--config", str(bad), "--labels", "a=b"])
    assert (
        result.exit_code == 1 and "bad.yaml: route.receiver: no receiver named 'x'" in result.output
    )

"""``geomem phase-diagram --quick``: outputs, resume, clear errors."""

from __future__ import annotations

import csv
import json

import pytest

# H1a's theory/population.py and theory/published.py are prerequisites of the REM modules
pytest.importorskip("geomem.theory.population")
pytest.importorskip("geomem.theory.published")
from typer.testing import CliRunner

from geomem.validation.cli import app

runner = CliRunner()


def test_quick_run_writes_all_outputs_and_resumes(tmp_path):
    out = tmp_path / "pd"
    result = runner.invoke(app, ["phase-diagram", "--quick", "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    for name in ("phase_diagram.png", "phase_diagram.pdf"):
        assert (out / name).stat().st_size > 1000
    rows = list(csv.DictReader((out / "phase_diagram.csv").open()))
    assert set(rows[0]) == {"N", "t", "subspace", "method", "condensed", "retained_fraction",
                            "gap"}
    assert {r["method"] for r in rows} == {"paper", "rem"}
    assert len(rows) == 2 * 12 * 16 * 2  # methods x N x t x subspaces
    assert all(0.0 <= float(r["retained_fraction"]) <= 1.0 for r in rows)
    boundaries = list(csv.DictReader((out / "boundaries.csv").open()))
    assert {r["subspace"] for r in boundaries} == {"0", "1", "global"}
    record = json.loads((out / "record.json").read_text())
    assert record["command"] == "phase-diagram" and record["parameters"]["methods"] == [
        "paper", "rem"]
    assert record["versions"]["numpy"] and "git_revision" in record
    first = (out / "phase_diagram.csv").read_bytes()
    again = runner.invoke(app, ["phase-diagram", "--quick", "--out", str(out)])
    assert again.exit_code == 0
    assert (out / "phase_diagram.csv").read_bytes() == first


def test_vp_runs_rem_only(tmp_path):
    out = tmp_path / "vp"
    result = runner.invoke(app, ["phase-diagram", "--quick", "--schedule", "VP", "--gap",
                                 "log", "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    rows = list(csv.DictReader((out / "phase_diagram.csv").open()))
    assert {r["method"] for r in rows} == {"rem"} and {r["gap"] for r in rows} == {"log"}


@pytest.mark.parametrize(("args", "option"), [
    (["--schedule", "DDPM"], "--schedule"),
    (["--method", "exact"], "--method"),
    (["--schedule", "VP", "--method", "paper"], "--method"),
    (["--gap", "relative"], "--gap"),
    (["--n-grid", "1"], "--n-grid"),
    (["--n-min", "1"], "--n-min"),
    (["--t-min", "0"], "--t-min"),
])
def test_bad_options_are_named(tmp_path, args, option):
    result = runner.invoke(app, ["phase-diagram", "--quick", "--out", str(tmp_path / "x"), *args])
    assert result.exit_code == 2
    assert option in result.output

"""``geomem trained-spectra --quick``: all outputs, cached re-run, clear errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from geomem.validation.cli import app
from geomem.validation.trained_spectra import QUICK, TRUE_DIMENSION, dimension_of, theory_spectra

runner = CliRunner()

OUTPUTS = ("spectra.png", "spectra.pdf", "dimension.png", "dimension.pdf", "loss.png",
           "loss.pdf", "spectra.csv", "dimensions.csv", "dimension_table.csv",
           "dimension_table.md", "loss.csv", "record.json")


def test_quick_run_writes_everything_and_reuses_checkpoints(tmp_path):
    out = tmp_path / "run"
    first = runner.invoke(app, ["trained-spectra", "--quick", "--out", str(out), "--workers", "1"])
    assert first.exit_code == 0, first.output
    for name in OUTPUTS:
        assert (out / name).exists(), name
    assert "| N |" in first.output                              # the printed table
    record = json.loads((out / "record.json").read_text())
    assert "scale_down" in record["parameters"]
    assert record["parameters"]["training"]["scale_down"] == QUICK["steps"] / 2_000_000
    assert all(not t["loaded"] for t in record["training"])
    ckpts = sorted((out / "checkpoints").iterdir())
    assert len(ckpts) == len(QUICK["n_values"])
    assert all((c / "state.pt").exists() and (c / "loss.csv").exists()
               and any((c / "snapshots").iterdir()) for c in ckpts)
    with (out / "dimension_table.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["N"]) for r in rows] == list(QUICK["n_values"])
    assert all(int(r["true_dimension"]) == TRUE_DIMENSION for r in rows)
    assert {"skdim_MLE", "skdim_TwoNN", "skdim_lPCA"} <= set(rows[0])
    with (out / "spectra.csv").open() as fh:
        sources = {r["source"] for r in csv.DictReader(fh)}
    assert sources == {"network_ogroup", "network_exact", "empirical_exact", "population",
                       "paper", "rem"}
    before = (out / "dimensions.csv").read_bytes()

    second = runner.invoke(app, ["trained-spectra", "--quick", "--out", str(out), "--workers", "1"])
    assert second.exit_code == 0, second.output
    record = json.loads((out / "record.json").read_text())
    assert all(t["loaded"] for t in record["training"])
    assert (out / "dimensions.csv").read_bytes() == before


def test_theory_dimensions_in_the_figure4_geometry():
    # population score at small noise keeps all 7 tangent directions; at sigma ~ 0.4 only the
    # std-1 pair is above the noise (the std-0.3 subspace has variance ~0.06 < sigma^2)
    sigmas = np.array([0.01, 0.4])
    spectra = theory_spectra(1000, sigmas)
    cliff = dimension_of("population", spectra["population"], "cliff")
    assert cliff.dimension[0] == 7 and cliff.candidates is None
    assert dimension_of("population", spectra["population"], "gap").dimension[1] == 2


@pytest.mark.parametrize("args, option", [
    (["--n-values", "1,10"], "--n-values"), (["--steps", "0"], "--steps"),
    (["--ref-sigmas", "-1"], "--ref-sigmas"), (["--n-times", "1"], "--n-times"),
    (["--width", "0"], "--width"), (["--ref-sigmas", "5"], "--ref-sigmas")])
def test_bad_options(tmp_path, args, option):
    result = runner.invoke(app, ["trained-spectra", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert option in result.output

"""geomem lid-benchmark: outputs, the cross-route identity FLIPD = closed form, bad input."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from geomem.numerics.training import TrainingConfig
from geomem.validation._lid_networks import (
    NETWORK_DIM,
    NETWORK_METHODS,
    NETWORK_STEPS,
    QUICK_STEPS,
    read_steps,
)
from geomem.validation.cli import app
from geomem.validation.lid_benchmark import DATASETS, dataset_sample

runner = CliRunner()
#: FLIPD (trace route) and the closed-form LID (weighted squared distances) of the same
#: empirical score: equal up to float64 rounding of sums of O(d N) terms
CROSS_ROUTE_RTOL = 1e-8


def test_quick_run_writes_outputs_and_routes_agree(tmp_path):
    out = tmp_path / "lid"
    res = runner.invoke(app, ["lid-benchmark", "--quick", "--datasets",
                              "linear2_d20,sphere2_d10", "--out", str(out)])
    assert res.exit_code == 0, res.output
    for name in ("lid.csv", "mae.csv", "lid_benchmark.png", "lid_benchmark.pdf", "record.json",
                 "lid_networks.png", "lid_networks.pdf"):
        assert (out / name).exists(), name
    record = json.loads((out / "record.json").read_text())         # strict JSON
    assert record["parameters"]["networks"] == ["linear2_d20"]      # the only one in R^20
    rows = list(csv.DictReader((out / "lid.csv").open()))
    ids = [(r["dataset"], r["N"], r["delta_fraction"], r["method"], r["train_step"], r["point"])
           for r in rows]
    assert len(ids) == len(set(ids))          # the read-off noise is measured once, not twice
    net = [r for r in rows if r["method"].endswith("_network")]
    early, last = read_steps(TrainingConfig(steps=QUICK_STEPS, first_checkpoint=20))
    assert {r["dataset"] for r in net} == {"linear2_d20"}
    assert {(r["method"], int(r["train_step"])) for r in net} == {
        (f"{m}_network", s) for m in NETWORK_METHODS for s in (early, last)}
    assert all(r["train_step"] == "" for r in rows if not r["method"].endswith("_network"))
    # normal bundle and spectral gap count directions: integers in [0, d]
    counts = [float(r["estimate"]) for r in net if not r["method"].startswith("flipd")]
    assert all(0 <= c <= NETWORK_DIM and c == int(c) for c in counts if np.isfinite(c))
    key = {(r["dataset"], r["N"], r["delta_fraction"], r["point"]): float(r["estimate"])
           for r in rows if r["method"] == "flipd"}
    closed = {(r["dataset"], r["N"], r["delta_fraction"], r["point"]): float(r["estimate"])
              for r in rows if r["method"] == "closed_form"}
    assert key.keys() == closed.keys() and len(key) == 2 * 2 * 7 * 4
    np.testing.assert_allclose(list(key.values()), [closed[k] for k in key],
                               rtol=CROSS_ROUTE_RTOL)
    mae = list(csv.DictReader((out / "mae.csv").open()))
    assert len(mae) == 2 * 7 + 3 * 2 and all(r["dataset"] in DATASETS for r in mae)
    # lPCA on 30-60 points of a plane in R^20 is exact (a global linear method on linear data)
    lpca = [r for r in mae if r["dataset"] == "linear2_d20" and r["method"] == "skdim_lPCA"]
    assert float(lpca[0]["mae"]) == 0.0


def test_datasets_have_their_dimension():
    """The spheres lie on the unit sphere of a (k+1)-dim subspace; the linear sets span k."""
    x = dataset_sample("sphere4_d20", 200, 1)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-12)
    assert np.linalg.matrix_rank(x, tol=1e-9) == 5
    assert np.linalg.matrix_rank(dataset_sample("linear5_d20", 200, 1), tol=1e-9) == 5


@pytest.mark.parametrize("args,fragment", [(["--datasets", "cube"], "--datasets"),
                                           (["--points", "0"], "--points")])
def test_bad_options(tmp_path, args, fragment):
    res = runner.invoke(app, ["lid-benchmark", *args, "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and fragment in res.output


def test_read_steps_are_a_saved_snapshot_near_a_tenth_and_the_budget():
    config = TrainingConfig(steps=NETWORK_STEPS)
    early, last = read_steps(config)
    assert last == NETWORK_STEPS and early == 3162          # 10^(28/8), the nearest to 3000
    assert read_steps(TrainingConfig(steps=QUICK_STEPS, first_checkpoint=20)) == (24, 200)


def test_rerun_reuses_networks_and_no_networks_skips_them(tmp_path):
    out, cache = tmp_path / "lid", tmp_path / "ckpt"
    args = ["lid-benchmark", "--quick", "--datasets", "linear2_d20", "--n-values", "30",
            "--cache-dir", str(cache)]
    first = runner.invoke(app, [*args, "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert len(list((cache / "score-ensembles").iterdir())) == 1
    # a new output folder, same checkpoints: the networks are loaded, not trained again
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "lid2")])
    assert again.exit_code == 0 and "reused trained networks" in again.output
    a = (out / "lid.csv").read_text()
    assert a == (tmp_path / "lid2" / "lid.csv").read_text()
    skip = runner.invoke(app, [*args, "--no-networks", "--out", str(tmp_path / "lid3")])
    assert skip.exit_code == 0, skip.output
    assert "_network" not in (tmp_path / "lid3" / "lid.csv").read_text()
    assert not (tmp_path / "lid3" / "lid_networks.png").exists()

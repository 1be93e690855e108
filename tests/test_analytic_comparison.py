"""``geomem analytic-denoisers``: the r^2 measure, N* from a generalization summary, the model
set, and a quick end-to-end run (outputs, rerun from the cache, bad input)."""

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from geomem.validation._analytic_plots import family
from geomem.validation._generalization_stats import crossover_n
from geomem.validation.analytic_comparison import analytic_models, r_squared, read_n_star
from geomem.validation.cli import app


def test_r_squared_limits():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((10, 1, 3, 3))
    assert r_squared(ref, ref) == 1.0
    assert r_squared(ref, np.broadcast_to(ref.mean(0), ref.shape)) == pytest.approx(0.0,
                                                                                    abs=1e-12)
    assert r_squared(ref, ref + 10) < 0
    assert math.isnan(r_squared(np.ones((4, 2)), np.zeros((4, 2))))


def test_read_n_star_interpolates_as_generalization_does(tmp_path):
    path = tmp_path / "summary.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset", "N", "median_ab_similarity"])
        for n, m in ((1, 0.94), (10, 0.57), (100, 0.95), (898, 0.945)):
            w.writerow(["digits", n, m])
        for n, m in ((1, -0.1), (1000, 0.8)):
            w.writerow(["disks", n, m])
    n_star = read_n_star(path)
    assert n_star["digits"] == pytest.approx(crossover_n([1, 10, 100, 898],
                                                         [0.94, 0.57, 0.95, 0.945]))
    assert 10 < n_star["digits"] < 100 and n_star["disks"] is None


def test_analytic_models_names_and_families():
    rng = np.random.default_rng(1)
    models = analytic_models(rng.random((12, 1, 5, 5)), (3, 5))
    fams = {family(name) for name in models}
    assert fams == {"empirical", "gaussian", "gaussian_lowrank", "wiener_local", "local", "els"}
    assert {"local_P3", "local_P5", "els_P3", "els_P5"} <= set(models)
    y = rng.random((2, 1, 5, 5))
    for name, model in models.items():
        out = model(y, 0.2)
        assert out.shape == y.shape and np.all(np.isfinite(out)), name


def test_quick_run_outputs_and_rerun_from_cache(tmp_path):
    out, cache = tmp_path / "ad", tmp_path / "cache"
    args = ["analytic-denoisers", "--quick", "--out", str(out), "--cache-dir", str(cache)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(out / "r2.csv")))
    assert {r["split"] for r in rows} >= {"held_out", "training"}
    assert {int(r["N"]) for r in rows} == {1, 10}
    models = {r["model"] for r in rows}
    assert {"network_B", "empirical", "gaussian", "local_P3", "els_P3", "wiener_local"} <= models
    for r in rows:
        assert float(r["r2"]) <= 1 + 1e-12 and float(r["mse_to_network"]) >= 0
        assert float(r["r2_residual"]) <= 1 + 1e-12
    # N = 1: every model but ELS returns the one training image, whatever the noise
    train = [r for r in rows if r["N"] == "1" and r["split"] == "training"
             and r["model"] in ("empirical", "gaussian", "local_P3")]
    assert all(float(r["model_mse_to_clean"]) == pytest.approx(0.0, abs=1e-20) for r in train)
    record = json.loads((out / "record.json").read_text())
    assert set(record["best_model_at_spectrum_sigma"]) == {"digits/N=1", "digits/N=10"}
    spectra = list(csv.DictReader(open(out / "spectra.csv")))
    assert {r["model"] for r in spectra} >= {"network"} and len(spectra) > 0
    for stem in ("analytic_r2", "analytic_patch_sizes", "analytic_spectra"):
        assert (out / f"{stem}.png").exists() and (out / f"{stem}.pdf").exists()
    cached = sorted((out / "cache").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert [p.stat().st_mtime_ns for p in cached] == stamps     # results reused, not redone
    assert list(csv.DictReader(open(out / "r2.csv"))) == rows


@pytest.mark.parametrize("args, option", [(["--sigmas", "0"], "--sigmas"),
                                          (["--sigmas", "20"], "--sigmas"),
                                          (["--patch-sizes", "4"], "--patch-sizes"),
                                          (["--images", "1"], "--images"),
                                          (["--datasets", "cats"], "--datasets"),
                                          (["--generalization", "/nonexistent.csv"],
                                           "--generalization")])
def test_bad_input_names_the_option(tmp_path, args, option):
    res = CliRunner().invoke(app, ["analytic-denoisers", *args, "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and option in res.output

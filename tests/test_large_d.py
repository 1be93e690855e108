"""``geomem large-d`` (issue 14 item 4): geometry, N, the mean-Jacobian crossing, the sampler's
tolerance used by the command, and the CLI (outputs, resume, bad input)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from geomem.numerics import sample_empirical_jacobians
from geomem.validation.large_d import (
    DEFAULT_TOL,
    band_crossing,
    large_d_model,
    n_train_at,
)

runner = CliRunner()
#: retained counts at DEFAULT_TOL against tol = 1e-3 (Welch t-test, seeded): rejected below
WELCH_LEVEL = 1e-3


def _invoke(*args, code=0):
    from geomem.validation.cli import app

    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def test_geometry_and_n_train():
    assert large_d_model(30).dims == (2, 5) and large_d_model(3000).dims == (200, 500)
    assert large_d_model(30).stds == (1.0, 0.3) and not large_d_model(30).normalized
    assert n_train_at(30, 0.23) == 992.0
    assert n_train_at(3000, 0.23) == pytest.approx(math.exp(690.0), rel=1e-12)
    with pytest.raises(ValueError, match="alpha out of range"):
        n_train_at(3000, 0.24)           # e^720 > 1e300
    with pytest.raises(ValueError, match="d out of range"):
        large_d_model(1)


def test_band_crossing_brackets_the_mid_curve():
    t = np.geomspace(1e-3, 1e-1, 9)
    mid = np.log(t / 1e-2) / 4 + 0.5          # crosses 1/2 at t = 0.01
    t_mid, lo, hi, status = band_crossing(t, mid - 0.1, mid, mid + 0.1, 0.5)
    assert status == "crossed" and t_mid == pytest.approx(1e-2, rel=1e-9)
    assert lo == pytest.approx(1e-2 * math.exp(-0.4), rel=1e-9)
    assert hi == pytest.approx(1e-2 * math.exp(0.4), rel=1e-9)
    # a band leaving the grid gives an open (NaN) end, never a made-up bound
    _, lo, hi, _ = band_crossing(t, mid - 2.0, mid, mid + 2.0, 0.5)
    assert math.isnan(lo) and math.isnan(hi)
    assert band_crossing(t, mid + 5, mid + 5, mid + 5, 0.5)[3] == "not_lost"


@pytest.mark.parametrize("t", [pytest.param(0.0112, marks=pytest.mark.slow), 0.0173])
def test_command_tolerance_keeps_the_retained_counts(t):
    """The command's tol (1e-2) against 1e-3 at d = 100, N = e^23 around t_C."""
    model = large_d_model(100)
    n = n_train_at(100, 0.23)
    loose = sample_empirical_jacobians(model, t, n, "vp", draws=80, seed=21, tol=DEFAULT_TOL,
                                       max_head=16384)
    tight = sample_empirical_jacobians(model, t, n, "vp", draws=80, seed=22, tol=1e-3,
                                       max_head=16384)
    assert np.all(loose.tail_error <= DEFAULT_TOL) and np.all(tight.tail_error <= 1e-3)
    for k in range(2):
        p = stats.ttest_ind(loose.retained_dimension[:, k], tight.retained_dimension[:, k],
                            equal_var=False).pvalue
        assert p > WELCH_LEVEL, (k, p)


def test_cli_quick_writes_outputs_and_resumes(tmp_path):
    out = tmp_path / "ld"
    # the exact overlay is checked against the sampler in test_large_n (it dominates the time)
    args = ("large-d", "--quick", "--no-exact", "--workers", "1", "--out", out)
    result = _invoke(*args)
    assert "| VP | 100 |" in result.output
    for ext in ("png", "pdf"):
        assert (out / f"large_d.{ext}").stat().st_size > 1000
    curves = list(csv.DictReader((out / "large_d.csv").open()))
    assert {r["source"] for r in curves} == {"per_point", "mean_jacobian", "rem"}
    per_point = [r for r in curves if r["source"] == "per_point"]
    values = np.array([float(r["value"]) for r in per_point])
    assert np.all((values >= 0) & (values <= 1))
    # the per-point retained fraction rises from memorization to generalization
    for d in ("30", "100"):
        sel = sorted((r for r in per_point if r["d"] == d and r["subspace"] == "1"),
                     key=lambda r: float(r["t"]))
        assert float(sel[0]["value"]) < 0.2 < 0.8 < float(sel[-1]["value"])
    losses = list(csv.DictReader((out / "gap_loss.csv").open()))
    assert {(r["d"], r["subspace"], r["source"]) for r in losses} == {
        (d, k, s) for d in ("30", "100") for k in ("1", "2")
        for s in ("per_point", "mean_jacobian", "rem")}
    t_c = {r["d"]: float(r["t_collapse"]) for r in losses}
    assert t_c["30"] == pytest.approx(0.0153, rel=0.01)
    record = json.loads((out / "record.json").read_text())
    assert record["parameters"]["tol"] == DEFAULT_TOL and "git_revision" in record
    assert record["parameters"]["exact"] is False
    before = {n: (out / f"{n}.csv").read_bytes() for n in ("large_d", "gap_loss", "order")}
    cache = sorted((out / "cache").glob("*.json"))
    for path in cache[::5]:          # an interruption: a few finished points lost
        path.unlink()
    _invoke(*args)
    for name, data in before.items():
        assert (out / f"{name}.csv").read_bytes() == data, name


@pytest.mark.parametrize("args, needle", [
    (("--ds", "30,5000", "--alpha", "0.23"), "--alpha"),
    (("--ds", "10",), "--ds"),
    (("--schedules", "DDPM",), "--schedules"),
    (("--tol", "1.5",), "--tol"),
])
def test_bad_input_is_one_line(args, needle, tmp_path):
    result = _invoke("large-d", *args, "--out", tmp_path / "bad", code=2)
    assert needle in result.output and "Traceback" not in result.output

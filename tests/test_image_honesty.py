"""Honest image measurements (issue 16, item 6): medians state their support, the shrinkage
spectrum reports asymmetry and out-of-range values, slopes use a fixed sigma range, and the
sampler stops where the documents say."""

import math

import numpy as np
import pytest
import torch

from geomem.numerics.linear_denoiser import WienerDenoiser


def test_image_dimension_median_needs_half_of_the_points():
    from geomem.validation.image_dimensions import _median, _point_summary

    # 1 of 8 points found a cliff: that median is not published
    assert math.isnan(_median([3.0] + [np.nan] * 7))
    assert _median([3.0, 5.0, 4.0, 4.0] + [np.nan] * 4) == 4.0
    points = [{"gap_dimension": g, "shrinkage_dimension": 5, "shrinkage_fraction_outside_01": 0.0,
               "relative_asymmetry": 0.1} for g in [2.0, np.nan, np.nan, np.nan]]
    summary = _point_summary(points)
    assert math.isnan(summary["gap_median"])
    assert (summary["gap_n_finite"], summary["n_points"]) == (1, 4)
    assert summary["relative_asymmetry_median"] == pytest.approx(0.1)


class _Linear(torch.nn.Module):
    """D(y) = A y with a fixed (possibly asymmetric) A: a denoiser with a known Jacobian."""

    def __init__(self, a):
        super().__init__()
        self.register_buffer("a", torch.as_tensor(a, dtype=torch.float32))

    def forward(self, y):
        return (y.reshape(len(y), -1) @ self.a.T).reshape(y.shape)


def test_gahb_reports_asymmetry_out_of_range_shrinkage_and_wiener():
    from geomem.validation.gahb import gahb_measurements

    rng = np.random.default_rng(0)
    d = 16
    diag = np.linspace(-0.2, 1.1, d)
    sym = np.diag(diag)
    skew = 0.3 * (lambda m: m - m.T)(rng.standard_normal((d, d)))
    clean = rng.uniform(0, 1, (6, 1, 4, 4))
    res = gahb_measurements(_Linear(sym + skew), clean, 0.1, n_jacobian=2,
                            wiener=WienerDenoiser(rng.uniform(0, 1, (50, 1, 4, 4))))
    lam = np.asarray(res["shrinkage"])
    # eigenvalues of the symmetric part (the skew part drops out), out-of-range ones kept
    np.testing.assert_allclose(lam[0], np.sort(diag)[::-1], atol=1e-6)
    assert np.mean((lam < 0) | (lam > 1)) == pytest.approx(np.mean((diag < 0) | (diag > 1)))
    expected = np.linalg.norm(2 * skew) / np.linalg.norm(sym + skew)    # J - J^T = 2 skew
    np.testing.assert_allclose(res["relative_asymmetry"], expected, rtol=1e-5)
    assert len(res["mse_wiener"]) == 6 and np.all(np.isfinite(res["mse_wiener"]))


def test_slope_fit_uses_only_the_fixed_sigma_range():
    from geomem.validation.gahb import SLOPE_SIGMA_RANGE, fit_log_slope

    sig = np.array([0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64])
    mse = np.where(sig < 0.02, 1e-3, sig ** 1.5)             # a floor below the range
    assert fit_log_slope(sig, mse, SLOPE_SIGMA_RANGE) == pytest.approx(1.5)
    assert abs(fit_log_slope(sig, mse) - 1.5) > 0.1           # the floor would bias it


def test_generalization_sampler_stops_at_the_documented_sigma():
    from geomem.validation.generalization import SAMPLER

    assert SAMPLER["sigma_final"] == 0.01                     # THEORY 8, docs/images.md


def test_crossover_is_none_when_no_chain_converged_anywhere():
    from geomem.validation.generalization import crossover_n

    assert crossover_n([1, 10, 100], [np.nan, np.nan, np.nan]) is None
    assert crossover_n([1, 10, 100], [np.nan, 0.95, 0.97]) == 10.0

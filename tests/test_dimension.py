"""Spectral-gap dimension estimators (numerics/dimension.py) on synthetic spectra."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomem.numerics.dimension import CLIFF_DROP, METHODS, estimate_dimension


def _spectrum(d: int, k: int, depth: float, rng: np.random.Generator, jitter: float
              ) -> np.ndarray:
    """d - k large values around 1, k small ones around 1/depth, multiplicative jitter."""
    values = np.r_[np.ones(d - k), np.full(k, 1.0 / depth)]
    return values * (1.0 + jitter * rng.uniform(-1, 1, d))


@settings(max_examples=60, deadline=None)
@given(d=st.integers(12, 60), frac=st.floats(0, 1), depth=st.floats(3.0, 1e4),
       slopes=st.tuples(st.floats(0, 0.5), st.floats(0, 0.5)), seed=st.integers(0, 2**31 - 1))
def test_all_methods_recover_a_single_gap(d, frac, depth, slopes, seed):
    # the cliff detector needs drop + 2 values above the cliff and >= 1 below it
    k = 1 + int(frac * (d - CLIFF_DROP - 3))
    # two plateaus with linear trends (zero second difference inside each: the cliff detector
    # is exact on them; with noisy plateaus it has false cliffs, see the next test)
    top = 1.0 + slopes[0] * np.linspace(1, 0, d - k) / d
    bottom = (1.0 + slopes[1] * np.linspace(1, 0, k) / d) / depth
    sv = np.random.default_rng(seed).permutation(np.r_[top, bottom])  # order must not matter
    for method in METHODS:
        result = estimate_dimension(sv, method)
        assert result.found, method
        assert float(result) == k, (method, result)
        assert result.position == d - k


@settings(max_examples=60, deadline=None)
@given(d=st.integers(12, 60), frac=st.floats(0, 1), depth=st.floats(3.0, 1e4),
       seed=st.integers(0, 2**31 - 1))
def test_gap_and_ratio_recover_a_noisy_gap(d, frac, depth, seed):
    k = 1 + int(frac * (d - 2))
    rng = np.random.default_rng(seed)
    sv = _spectrum(d, k, depth, rng, jitter=0.1)
    assert float(estimate_dimension(sv, "gap")) == k
    assert float(estimate_dimension(sv, "ratio")) == k


def test_cliff_false_positive_on_noisy_plateau_is_flagged_by_its_contrast():
    # the paper's detector compares with 10 x the median: on a noisy, gap-free spectrum a
    # small median can let one noise second difference through (documented failure mode)
    rng = np.random.default_rng(0)
    flat = 1.0 + 1e-3 * rng.uniform(-1, 1, (2000, 30))
    res = estimate_dimension(flat, "cliff")
    assert 0.0 < res.found.mean() < 0.5
    assert np.nanmax(res.contrast) < 5.0          # a real cliff of depth 3 has contrast >> 10
    real = estimate_dimension(np.r_[np.ones(20), np.full(10, 1 / 3)], "cliff")
    assert float(real) == 10


@settings(max_examples=30, deadline=None)
@given(depth=st.floats(5.0, 100.0), seed=st.integers(0, 2**31 - 1))
def test_two_gaps_are_both_reported(depth, seed):
    # normal 23 | subspace of 5 | subspace of 2, as in the Figure-4 geometry
    sv = np.random.default_rng(seed).permutation(
        np.r_[np.ones(23), np.full(5, 1 / depth), np.full(2, 1 / depth**2)])
    cliff = estimate_dimension(sv, "cliff")
    assert float(cliff) == 7 and cliff.n_gaps == 2 and cliff.candidates == (7, 2)
    gap = estimate_dimension(sv, "gap")
    assert gap.n_gaps == 2 and gap.candidates == (7, 2)
    assert float(gap) in (7, 2)


def test_flat_spectrum_has_no_gap_and_the_convention_is_explicit():
    sv = np.full(30, 3.0)
    for method in ("cliff", "gap"):
        res = estimate_dimension(sv, method)
        assert not res.found and np.isnan(float(res)) and res.position == -1
        assert float(estimate_dimension(sv, method, no_gap=0)) == 0
    assert float(estimate_dimension(sv, "ratio")) == 0


def test_vectorised_matches_loop():
    rng = np.random.default_rng(1)
    batch = np.stack([_spectrum(30, k, 50.0, rng, 1e-3) for k in (2, 5, 7, 12, 20, 1)])
    batch = batch.reshape(2, 3, 30)
    for method in METHODS:
        res = estimate_dimension(batch, method)
        assert res.dimension.shape == (2, 3) and res.candidates is None
        loop = [float(estimate_dimension(s, method)) for s in batch.reshape(6, 30)]
        np.testing.assert_array_equal(res.dimension.ravel(), loop)
        with pytest.raises(TypeError):
            float(res)


def test_ratio_threshold_is_the_population_snr_criterion():
    # population score singular values 1/(Delta + v): s/s_max < 1/2 <=> v > Delta
    v = np.r_[np.full(2, 0.4), np.full(5, 0.036), np.full(23, 4e-5)]
    for delta, expected in ((1e-3, 7), (0.1, 2), (1.0, 0)):
        assert float(estimate_dimension(1 / (delta + v), "ratio")) == expected


def test_scale_invariance():
    rng = np.random.default_rng(2)
    sv = _spectrum(30, 7, 20.0, rng, 1e-3)
    for method in METHODS:
        assert float(estimate_dimension(sv, method)) == float(estimate_dimension(1e6 * sv,
                                                                                  method))


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "pca"}, "method"), ({"drop": -1}, "drop"), ({"drop": 1.5}, "drop"),
    ({"method": "gap", "min_ratio": 1.0}, "min_ratio"),
    ({"method": "ratio", "threshold": 1.0}, "threshold"), ({"factor": 0.0}, "factor")])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimate_dimension(np.linspace(1, 2, 30), **kwargs)


def test_bad_spectra():
    for bad in (np.r_[np.ones(29), -1.0], np.r_[np.ones(29), np.nan], 3.0, np.ones(7)):
        with pytest.raises(ValueError, match="singular_values"):
            estimate_dimension(bad, "cliff")

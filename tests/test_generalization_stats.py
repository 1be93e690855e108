"""Bootstrap medians and the CI of the crossover N* (two-network experiment)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomem.validation._generalization_stats import (
    bootstrap_medians,
    converged_median,
    crossover_ci,
    crossover_n,
)

#: coverage of a nominal 95% CI over 200 seeded repetitions: binomial SE 1.5%, so 4 SE below
COVERAGE_FLOOR = 0.89


def _curve(n):
    """A median similarity rising from 0.5 to 1 (logistic in log N; 0.9 near N = 200)."""
    return 0.5 + 0.5 / (1 + np.exp(-2.0 * (np.log10(n) - 2.0)))


def test_bootstrap_medians_ignore_unconverged_chains_and_mark_empty_columns():
    values = [np.array([0.1, 0.2, 9.0]), np.array([0.5, 0.5])]
    ok = [np.array([True, True, False]), np.array([False, False])]
    boot = bootstrap_medians(values, ok, replicates=300, seed=1)
    assert boot.shape == (300, 2)
    assert np.all((boot[:, 0] >= 0.1) & (boot[:, 0] <= 0.2))   # the 9.0 never enters
    assert np.all(np.isnan(boot[:, 1]))
    assert converged_median(values[0], ok[0]) == pytest.approx(0.15)


@settings(max_examples=20, deadline=None)
@given(value=st.floats(0.0, 1.0), size=st.integers(1, 30), seed=st.integers(0, 10_000))
def test_bootstrap_of_constant_chains_is_that_constant(value, size, seed):
    boot = bootstrap_medians([np.full(size, value)], [np.ones(size, bool)], replicates=50,
                             seed=seed)
    np.testing.assert_allclose(boot, value)


def test_crossover_ci_open_when_never_crossing_and_point_when_certain():
    grid = [1, 10, 100]
    never = crossover_ci(grid, np.full((100, 3), 0.2))
    assert never == {"low": None, "high": None, "fraction_crossing": 0.0}
    fixed = np.tile([0.5, 0.8, 1.0], (100, 1))
    ci = crossover_ci(grid, fixed)
    star = crossover_n(grid, [0.5, 0.8, 1.0])
    assert ci["low"] == pytest.approx(star) and ci["high"] == pytest.approx(star)
    assert ci["fraction_crossing"] == 1.0


@pytest.mark.slow
def test_crossover_ci_covers_the_true_crossing():
    """Chains: median-centred noise around a known curve; the 95% CI of N* must cover the
    true crossing in at least COVERAGE_FLOOR of seeded repetitions."""
    grid = np.array([10, 30, 100, 300, 1000])
    truth = crossover_n(grid, _curve(grid))
    covered = 0
    for rep in range(200):
        rng = np.random.default_rng(rep)
        values = [m + 0.15 * rng.standard_normal(40) for m in _curve(grid)]
        ok = [np.ones(40, bool)] * len(grid)
        ci = crossover_ci(grid, bootstrap_medians(values, ok, replicates=400, seed=rep))
        covered += (ci["low"] or 0) <= truth <= (ci["high"] or np.inf)
    assert covered / 200 >= COVERAGE_FLOOR


def test_percentile_ci_ignores_nan_draws_and_is_nan_when_all_are():
    from geomem.validation._generalization_stats import percentile_ci

    low, high = percentile_ci(np.r_[np.linspace(0, 1, 101), np.nan])
    assert low == pytest.approx(0.025) and high == pytest.approx(0.975)
    assert all(np.isnan(percentile_ci(np.full(5, np.nan))))

"""mean_ci, summarize and verdict of geomem.validation._common on synthetic data (issue 15,
item 16): coverage of the interval, group handling, verdict rules."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from geomem.validation._common import (
    CI_LEVEL,
    MAX_CI_FRACTION,
    QUANTILES,
    REL_TOL,
    mean_ci,
    summarize,
    verdict,
)

#: coverage trials: the empirical coverage of a 95% interval has SE sqrt(.95 .05 / 4000) = 0.0034,
#: so +-0.015 is a 4.4-SE band (an interval sqrt(n) too wide covers ~100%, too narrow ~50-70%)
TRIALS = 4000
COVERAGE_TOL = 0.015


@pytest.mark.parametrize("n", [3, 5, 20])
def test_mean_ci_covers_the_true_mean_at_its_level(n):
    rng = np.random.default_rng(n)
    samples = rng.normal(2.0, 0.7, size=(TRIALS, n))
    hits = 0
    for row in samples:
        _, low, high = mean_ci(row)
        hits += low <= 2.0 <= high
    assert abs(hits / TRIALS - CI_LEVEL) < COVERAGE_TOL


def test_mean_ci_is_the_student_t_interval():
    x = np.array([1.0, 2.5, 0.5, 3.0, 2.0])
    mean, low, high = mean_ci(x)
    ref_low, ref_high = stats.t.interval(CI_LEVEL, x.size - 1, loc=x.mean(),
                                         scale=stats.sem(x))
    assert mean == pytest.approx(x.mean())
    assert (low, high) == pytest.approx((ref_low, ref_high), rel=1e-12)


def test_mean_ci_edge_cases():
    assert all(np.isnan(mean_ci([])))
    mean, low, high = mean_ci([4.0])
    assert mean == 4.0 and np.isnan(low) and np.isnan(high)
    # non-finite replicates are dropped, not propagated
    assert mean_ci([1.0, np.nan, 3.0])[0] == 2.0


def test_summarize_uses_group_means_for_the_interval():
    """Correlated values within a group must not shrink the CI: it is computed over the group
    means (3 groups here), not over the 300 values."""
    rng = np.random.default_rng(1)
    group_means = np.array([0.0, 1.0, 2.0])
    values = np.repeat(group_means, 100) + 1e-3 * rng.standard_normal(300)
    groups = np.repeat([0, 1, 2], 100)
    out = summarize(values, groups, prefix="x_")
    _, low, high = mean_ci([values[groups == k].mean() for k in range(3)])
    assert out["x_ci_low"] == pytest.approx(low) and out["x_ci_high"] == pytest.approx(high)
    assert out["x_ci_high"] - out["x_ci_low"] > 1.0          # not ~1e-4 (the naive interval)
    for q in QUANTILES:
        assert out[f"x_q{int(round(q * 100)):02d}"] == pytest.approx(np.quantile(values, q))
    flat = summarize(values)
    assert flat["ci_high"] - flat["ci_low"] < out["x_ci_high"] - out["x_ci_low"]


def test_verdict_rules():
    # theory inside a narrow CI: agree; outside and beyond REL_TOL: disagree
    assert verdict(1.0, 1.0, 0.95, 1.05)[1] == "agree"
    rel, word = verdict(1.5, 1.0, 0.95, 1.05)
    assert word == "disagree" and rel == pytest.approx(0.5)
    # outside the CI but within REL_TOL: agree (finite-d corrections are not a disagreement)
    assert verdict(1.0 + 0.9 * REL_TOL, 1.0, 0.99, 1.01)[1] == "agree"
    # CI wider than MAX_CI_FRACTION |mc|: inconclusive even when the theory is inside
    wide = 1.01 * MAX_CI_FRACTION
    assert verdict(1.0, 1.0, 1.0 - wide / 2, 1.0 + wide / 2)[1] == "inconclusive"
    assert verdict(1.0, 1.0, np.nan, np.nan)[1] == "inconclusive"
    assert verdict(None, 1.0, 0.9, 1.1)[1] == "n/a"
    assert verdict(1.0, np.nan, 0.9, 1.1)[1] == "n/a"

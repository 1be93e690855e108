"""Monte-Carlo measurement protocols: estimator identities, the gap criterion, its limits."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomem.theory import VE, VP, LinearManifold
from geomem.theory.phase import LOSS_FRACTION
from geomem.validation.measurements import (
    fresh_protocol,
    fresh_test_points,
    origin_protocol,
    orthogonal_group_matrix,
    rem_retained_dimension,
    retained_counts,
)
from geomem.validation.spectra import crossing_time


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(2, 8), sigma=st.floats(0.01, 3.0))
def test_estimator_recovers_linear_score_spectrum(seed, d, sigma):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d))
    J = -(A @ A.T + 0.1 * np.eye(d))  # symmetric, like a score Jacobian
    S = orthogonal_group_matrix(lambda X: X @ J.T, np.zeros(d), sigma, rng)
    expected = np.sort(np.abs(np.linalg.eigvalsh(J)))[::-1]
    assert np.allclose(np.linalg.svd(S, compute_uv=False), expected, rtol=1e-9)
    U = np.eye(d)[:, :1]
    assert np.allclose(np.linalg.svd(S @ U, compute_uv=False), np.linalg.norm(J[:, 0]))


@settings(max_examples=25, deadline=None)
@given(delta=st.floats(1e-4, 10.0), v=st.floats(1e-3, 10.0), a=st.floats(0.1, 1.0))
def test_gap_criterion_limits(delta, v, a):
    population = 1.0 / (delta + a * a * v)
    assert retained_counts(np.full(3, population), a, delta, v) == 3  # N = infinity: all kept
    assert retained_counts(np.full(3, 1.0 / delta), a, delta, v) == 0  # condensed: -1/Delta
    # the REM criterion is the same one applied to -1/(Delta + lam a^2 v)
    r = a * a * v / delta
    for lam in (0.5 / (2 + r), 2.0 / (2 + r), 1.0):
        sv = 1.0 / (delta + lam * a * a * v)
        kept = retained_counts(np.array([sv]), a, delta, v)
        assert rem_retained_dimension(lam, a, delta, v, 1) == kept
        assert kept == (lam * (1 + r) / (1 + lam * r) >= LOSS_FRACTION)


@pytest.mark.parametrize("schedule", [VE(), VP()])
def test_fresh_points_at_large_n_keep_the_population_gap(schedule):
    model = LinearManifold(6, (2, 2), variances=(1.0, 0.3))
    rng = np.random.default_rng(1)
    t = 1.0
    a, delta = float(schedule.a(t)), float(schedule.delta(t))
    Y = model.sample(3000, rng)
    X = fresh_test_points(model, 20, a, delta, rng)
    res = fresh_protocol(Y, X, model, a, delta)
    assert res["retained"].mean() > 1.9  # both directions of both subspaces, nearly always
    # condensed end: a tiny noise level leaves no gap at single points (up to a rare point
    # lying between two training points)
    small = 1e-5
    a, delta = float(schedule.a(small)), float(schedule.delta(small))
    X = fresh_test_points(model, 20, a, delta, rng)
    assert fresh_protocol(Y, X, model, a, delta)["retained"].mean() < 0.1
    origin = origin_protocol(Y, model, a, delta, rng, repetitions=2)
    assert origin["retained"].max() == 0 and origin["sv"].shape == (6,)


def test_crossing_time():
    t = np.array([1.0, 0.1, 0.01, 0.001])
    assert np.isclose(crossing_time(t, [2, 2, 0, 0], 1.0), np.sqrt(0.1 * 0.01))
    assert np.isnan(crossing_time(t, [2, 2, 2, 2], 1.0))  # never lost
    assert np.isnan(crossing_time(t, [0, 0, 0, 0], 1.0))  # lost at the largest t already
    assert crossing_time(t[::-1], [0, 0, 2, 2], 1.0) == crossing_time(t, [2, 2, 0, 0], 1.0)


#: forward differences at sigma = 1e-5 on a score with O(1) curvature: error ~ sigma * |H|
FORWARD_DIFFERENCE_RTOL = 1e-3


def test_centred_origin_estimator_is_the_exact_jacobian_at_the_origin():
    from geomem.numerics.empirical import empirical_jacobian, empirical_score
    from geomem.validation.measurements import orthogonal_group_estimate

    model = LinearManifold(6, (2, 2), stds=(1.0, 0.3), residual_std=0.05)
    rng = np.random.default_rng(4)
    Y = model.sample(20, rng)
    a, delta = 1.0, 0.5

    def score(X):
        return empirical_score(np.atleast_2d(X), Y, a=a, delta=delta)

    assert np.linalg.norm(score(np.zeros(6))) > 0.05  # a non-zero mean score to remove
    exact = np.asarray(empirical_jacobian(np.zeros((1, 6)), Y, a=a, delta=delta))[0]
    for centring in ("subtract", "symmetric"):
        S, Z = orthogonal_group_estimate(score, np.zeros(6), 1e-5, rng, centring=centring)
        np.testing.assert_allclose(Z.T @ S, exact, rtol=FORWARD_DIFFERENCE_RTOL,
                                   atol=FORWARD_DIFFERENCE_RTOL * np.abs(exact).max())
    S, Z = orthogonal_group_estimate(score, np.zeros(6), 1e-5, rng, centring="none")
    # uncentred: the mean-score term s(0)/sigma dominates the largest singular value
    assert np.linalg.svd(S, compute_uv=False)[0] > 100 * np.abs(exact).max()


def test_protocols_report_the_shared_function_counts():
    from geomem.validation.measurements import subspace_retained_dimension

    model = LinearManifold(6, (2, 2), variances=(1.0, 0.3))
    rng = np.random.default_rng(2)
    Y = model.sample(300, rng)
    a, delta = 1.0, 0.05
    X = fresh_test_points(model, 5, a, delta, rng)
    fresh = fresh_protocol(Y, X, model, a, delta)
    np.testing.assert_array_equal(fresh["retained"],
                                  subspace_retained_dimension(fresh["jacobians"], model, a,
                                                              delta))
    origin = origin_protocol(Y, model, a, delta, rng, repetitions=3)
    assert origin["jacobians"].shape == (3, 6, 6)
    np.testing.assert_array_equal(origin["retained"],
                                  subspace_retained_dimension(origin["jacobians"], model, a,
                                                              delta))

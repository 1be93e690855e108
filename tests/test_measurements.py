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

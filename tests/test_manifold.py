"""Linear-manifold model: geometry, sampling moments, presets, normalised moments, bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomem.theory import LinearManifold

# 4e5 samples: sample-variance relative standard error ~ sqrt(2/4e5) = 0.2%; 5 sigma
SAMPLE_VAR_RTOL = 0.012
#: normalised second moments vs a seeded Monte Carlo, in standard errors of each direction's
#: sample mean (30 directions: a 4-sigma excursion has probability ~6e-5 per direction)
MOMENT_Z_MAX = 4.0


@given(d=st.integers(2, 12), seed=st.integers(0, 2**31 - 1), data=st.data())
@settings(max_examples=25, deadline=None)
def test_geometry_is_consistent(d, seed, data):
    k = data.draw(st.integers(1, min(3, d)))
    dims = data.draw(st.lists(st.integers(1, 3), min_size=k, max_size=k).filter(
        lambda x: sum(x) <= d))
    stds = data.draw(st.lists(st.floats(0.05, 5.0), min_size=k, max_size=k))
    model = LinearManifold(d, dims, stds=stds, residual_std=0.01, basis="random", seed=seed)
    U = model.basis
    np.testing.assert_allclose(U.T @ U, np.eye(d), atol=1e-12)
    assert model.direction_stds.shape == (d,)
    assert np.sum(model.direction_subspace >= 0) == sum(dims)
    for j, m in enumerate(dims):
        B = model.subspace_basis(j)
        assert B.shape == (d, m)
        # the covariance restricted to subspace j is s_j^2 I
        np.testing.assert_allclose(B.T @ model.covariance() @ B, stds[j] ** 2 * np.eye(m),
                                   atol=1e-12)


def test_sample_moments_match_covariance():
    model = LinearManifold(6, (2, 1), variances=(2.0, 0.5), residual_std=0.1, basis="random",
                           seed=3)
    y = model.sample(400_000, np.random.default_rng(0))
    emp = (y.T @ y) / len(y)
    diag = np.diag(model.basis.T @ emp @ model.basis)
    np.testing.assert_allclose(diag, model.direction_variances, rtol=SAMPLE_VAR_RTOL)


def test_std_and_variance_are_unambiguous():
    a = LinearManifold(5, (2,), stds=0.3)
    b = LinearManifold(5, (2,), variances=0.09)
    np.testing.assert_allclose(a.direction_stds, b.direction_stds)
    assert a.variances == pytest.approx((0.09,))
    with pytest.raises(ValueError, match="exactly one"):
        LinearManifold(5, (2,), stds=1.0, variances=1.0)
    with pytest.raises(ValueError, match="exactly one"):
        LinearManifold(5, (2,))


def test_figure4_preset():
    gen, th = LinearManifold.figure4(), LinearManifold.figure4(theory=True)
    assert gen.d == th.d == 30 and gen.dims == (2, 5) and gen.stds == (1.0, 0.3)
    assert gen.residual_std == 0.01 and th.residual_std == 1e-6
    y = gen.sample(50, 0)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-12)


def test_normalized_second_moments_match_sampling():
    model = LinearManifold.figure4()
    exact = model.normalized_direction_variances()
    assert exact.sum() == pytest.approx(1.0, rel=1e-9)  # |y| = 1 exactly
    y = model.sample(200_000, np.random.default_rng(1))
    se = np.std(y**2, axis=0, ddof=1) / np.sqrt(len(y))
    z = np.abs(np.mean(y**2, axis=0) - exact) / se
    assert np.all(z < MOMENT_Z_MAX), z  # every direction, the 23 normal ones included


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(d=3, dims=(2, 2), stds=1.0), "sum\\(dims\\)"),
        (dict(d=3, dims=(0,), stds=1.0), "dims"),
        (dict(d=3, dims=(1,), stds=0.0), "stds"),
        (dict(d=3, dims=(1,), stds=-1.0), "stds"),
        (dict(d=3, dims=(1,), variances=np.nan), "variances"),
        (dict(d=3, dims=(1,), stds=1.0, residual_std=-0.1), "residual_std"),
        (dict(d=3, dims=(1,), stds=1.0, basis="polar"), "basis"),
        (dict(d=0, dims=(1,), stds=1.0), "d out of range"),
        (dict(d=3, dims=(1, 1), stds=(1.0, 2.0, 3.0)), "one entry per subspace"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LinearManifold(**kwargs)

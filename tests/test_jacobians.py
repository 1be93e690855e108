"""Tests for geomem.numerics.jacobians: autodiff Jacobians and the THEORY section 6 estimators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomem.numerics.empirical import empirical_jacobian, empirical_score, jacobian_spectrum
from geomem.numerics.jacobians import (
    extreme_singular_values,
    haar_orthogonal,
    normalize_spectrum,
    orthogonal_group_singular_values,
    paper_protocol_spectra,
    score_jacobian,
    symmetric_difference_singular_values,
)

#: float64 round-off of a few d x d products and one SVD, relative to the largest value.
EXACT_RTOL = 1e-10
#: Lanczos on J^T J in float64 converges to ~1e-12 relative; allow a margin.
LANCZOS_RTOL = 1e-8

seeds = st.integers(0, 2**31 - 1)
dims = st.integers(2, 12)


def _spd(d: int, rng: np.random.Generator) -> np.ndarray:
    M = rng.standard_normal((d, d))
    return M @ M.T / d + 0.1 * np.eye(d)


def _svd(A: np.ndarray) -> np.ndarray:
    return np.linalg.svd(A, compute_uv=False)


# ----------------------------------------------------------------------------- score_jacobian

def test_score_jacobian_linear_is_exact_and_chunking_is_invisible():
    rng = np.random.default_rng(0)
    A = torch.tensor(rng.standard_normal((7, 5)))           # d_out = 7, d = 5
    x = torch.tensor(rng.standard_normal((9, 5)))
    J = score_jacobian(lambda X: X @ A.T, x)
    assert J.shape == (9, 7, 5) and J.dtype == torch.float64
    torch.testing.assert_close(J, A.expand(9, 7, 5), rtol=0, atol=1e-15)
    torch.testing.assert_close(score_jacobian(lambda X: X @ A.T, x, chunk_size=2), J)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_score_jacobian_nonlinear_with_time_matches_analytic(mode):
    rng = np.random.default_rng(1)
    W = torch.tensor(rng.standard_normal((6, 6)))
    x = torch.tensor(rng.standard_normal((4, 6)))
    t = torch.tensor([0.1, 0.5, 1.0, 2.0], dtype=torch.float64)

    def fn(X, T):                                          # s(x, t) = tanh(W x) / (1 + t) - x^3
        return torch.tanh(X @ W.T) / (1 + T[:, None]) - X**3

    J = score_jacobian(fn, x, t, mode=mode, chunk_size=3)
    sech2 = 1 - torch.tanh(x @ W.T) ** 2                   # (B, d_out)
    analytic = sech2[:, :, None] * W[None] / (1 + t[:, None, None]) \
        - torch.diag_embed(3 * x**2)
    torch.testing.assert_close(J, analytic, rtol=1e-12, atol=1e-12)


def test_score_jacobian_fwd_equals_rev_and_closed_form_empirical_jacobian():
    rng = np.random.default_rng(2)
    Y = rng.standard_normal((40, 8))
    X = rng.standard_normal((5, 8))
    a, delta = 0.9, 0.3
    Yt = torch.tensor(Y)

    def torch_empirical_score(Xq):                        # THEORY section 4, written naively
        logits = -((Xq[:, None, :] - a * Yt[None]) ** 2).sum(-1) / (2 * delta)
        w = torch.softmax(logits, dim=1)
        return (a * w @ Yt - Xq) / delta

    J_rev = score_jacobian(torch_empirical_score, X)
    J_fwd = score_jacobian(torch_empirical_score, X, mode="fwd")
    torch.testing.assert_close(J_rev, J_fwd, rtol=1e-12, atol=1e-12)
    closed = empirical_jacobian(X, Y, a=a, delta=delta)
    np.testing.assert_allclose(J_rev.numpy(), closed, rtol=0, atol=EXACT_RTOL / delta**2)


def test_score_jacobian_scalar_time_broadcasts():
    x = torch.ones(3, 2, dtype=torch.float64)
    J = score_jacobian(lambda X, T: -X / T[:, None], x, 0.5)
    torch.testing.assert_close(J, -2 * torch.eye(2, dtype=torch.float64).expand(3, 2, 2))


# ----------------------------------------------------------------------------- estimators

def test_haar_orthogonal_is_orthogonal_and_seeded():
    Q = haar_orthogonal(9, 3)
    np.testing.assert_allclose(Q @ Q.T, np.eye(9), atol=1e-13)
    np.testing.assert_array_equal(Q, haar_orthogonal(9, 3))


#: Haar moments are compared within this many standard errors (one-sided 5-sigma events have
#: probability ~3e-7; the seed is fixed, so the test is deterministic anyway)
HAAR_Z = 5.0


def test_haar_orthogonal_has_haar_moments():
    """Haar: every entry has mean 0 and variance 1/d, and Q and -Q are equally likely. Plain QR
    (no sign fix) gives Q_11 = -|g_1|/|g| < 0 always: mean ~ -0.45 at d = 4, ~18 SE off."""
    d, n = 4, 400
    rng = np.random.default_rng(5)
    Qs = np.stack([haar_orthogonal(d, rng) for _ in range(n)])
    se = np.sqrt(1.0 / d / n)
    assert np.all(np.abs(Qs.mean(axis=0)) < HAAR_Z * se)
    # Q_ij^2 ~ Beta(1/2, (d-1)/2): variance 2(d-1)/(d^2(d+2)) <= 2/(d(d+2)), mean 1/d
    se2 = np.sqrt(2.0 / (d * (d + 2)) / n)
    assert np.all(np.abs((Qs**2).mean(axis=0) - 1.0 / d) < HAAR_Z * se2)


@settings(max_examples=15, deadline=None)
@given(seed=seeds, d=dims, sigma=st.floats(1e-3, 10.0))
def test_orthogonal_group_exact_for_linear_score(seed, d, sigma):
    """s = -A x: rows of S are -(x0 + sigma z_k)^T A^T / sigma, S = -Z A^T - 1 (A x0)^T / sigma."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d))                       # any square A, symmetric or not
    exact = _svd(A)
    at_origin = orthogonal_group_singular_values(lambda X: -X @ A.T, np.zeros(d), sigma, rng=seed)
    np.testing.assert_allclose(at_origin, exact, rtol=0, atol=EXACT_RTOL * exact[0])
    x0 = rng.standard_normal(d)
    centred = orthogonal_group_singular_values(lambda X: -X @ A.T, x0, sigma, rng=seed,
                                               subtract_center=True)
    np.testing.assert_allclose(centred, exact, rtol=0, atol=EXACT_RTOL * exact[0])
    # without centring: a rank-one update, so Weyl interlacing sv_{i+1}(A) <= sv_i(S) <= sv_{i-1}(A)
    raw = orthogonal_group_singular_values(lambda X: -X @ A.T, x0, sigma, rng=seed)
    tol = EXACT_RTOL * max(raw[0], exact[0])
    assert np.all(raw[:-1] >= exact[1:] - tol) and np.all(raw[1:] <= exact[:-1] + tol)


def test_orthogonal_group_accepts_torch_point_and_numpy_empirical_score():
    rng = np.random.default_rng(4)
    A = _spd(6, rng)
    At = torch.tensor(A, dtype=torch.float32)
    sv = orthogonal_group_singular_values(lambda X: -X @ At.T, torch.zeros(6), 0.5, rng=0)
    np.testing.assert_allclose(sv, _svd(A), rtol=1e-5)     # float32 products
    # numpy callable on the empirical score: converges to the closed form at rate O(sigma)
    Y = rng.standard_normal((30, 6))
    delta = 0.5
    x0 = rng.standard_normal(6)
    exact = jacobian_spectrum(x0[None], Y, a=1.0, delta=delta).singular_values[0]
    errors = [np.max(np.abs(orthogonal_group_singular_values(
        lambda X: empirical_score(X, Y, a=1.0, delta=delta), x0, s, rng=1,
        subtract_center=True) - exact)) / exact[0] for s in (1e-2, 1e-3)]
    assert errors[1] < 0.2 * errors[0] and errors[1] < 1e-2


@settings(max_examples=10, deadline=None)
@given(seed=seeds, d=dims, sigma=st.floats(1e-2, 10.0), reps=st.integers(1, 3))
def test_symmetric_difference_exact_for_linear_and_quadratic(seed, d, sigma, reps):
    """(s(x0+sn) - s(x0-sn))/2 = sigma J n for quadratic s; K = reps * d stacked Haar bases."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d))
    Q = rng.standard_normal((d, d, d))                    # s_i(x) += x^T Q_i x
    x0 = rng.standard_normal(d)
    K = reps * d

    def quadratic(X):
        return -X @ A.T + np.einsum("bj,ijk,bk->bi", X, Q, X)

    J = -A + np.einsum("ijk,k->ij", Q + Q.transpose(0, 2, 1), x0)
    for fn, jac in ((lambda X: -X @ A.T, -A), (quadratic, J)):
        exact = _svd(jac)
        sv = symmetric_difference_singular_values(fn, x0, sigma, n_directions=K, rng=seed)
        np.testing.assert_allclose(sv, exact, rtol=0, atol=1e-9 * exact[0])
    raw = symmetric_difference_singular_values(quadratic, x0, sigma, n_directions=K, rng=seed,
                                               rescale=False)
    np.testing.assert_allclose(raw, sigma * np.sqrt(reps) * _svd(J), rtol=1e-9)


def test_symmetric_difference_default_uses_4d_directions_and_batches():
    calls = []

    def fn(X):
        calls.append(X.shape[0])
        return -2.0 * X

    sv = symmetric_difference_singular_values(fn, np.ones(5), 0.1, rng=0, batch_size=7)
    assert sum(calls) == 2 * 4 * 5 and max(calls) <= 7
    np.testing.assert_allclose(sv, 2.0, rtol=1e-12)


def test_paper_protocol_averages_exact_linear_spectra():
    A = _spd(5, np.random.default_rng(5))
    out = paper_protocol_spectra(lambda s: (lambda X: -X @ A.T / s), np.zeros(5),
                                 sigmas=[1.0, 0.5, 0.25], repetitions=2, rng=0)
    expected = _svd(A)[None, :] / np.array([1.0, 0.5, 0.25])[:, None]
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@settings(max_examples=20, deadline=None)
@given(values=st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=10), drop=st.integers(0, 1))
def test_normalize_spectrum_properties(values, drop):
    out = normalize_spectrum(values, drop_largest=drop)
    assert out.shape == (len(values) - drop,)
    assert out[0] == 1.0 and np.all(np.diff(out) <= 0) and np.all(out > 0)
    np.testing.assert_allclose(out * sorted(values, reverse=True)[drop],
                               sorted(values, reverse=True)[drop:], rtol=1e-14)
    np.testing.assert_allclose(normalize_spectrum(np.array([values, values]), drop)[1], out)


# ----------------------------------------------------------------------------- matrix-free

@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_extreme_singular_values_match_dense(which):
    rng = np.random.default_rng(6)
    d = 100                                                 # > LANCZOS_MIN_NCV: restarts
    W = torch.tensor(rng.standard_normal((d, d)) / np.sqrt(d))
    scales = torch.tensor(np.geomspace(0.5, 20.0, d))

    def fn(X):                                              # non-symmetric, nonlinear
        return -scales * X + torch.sin(X @ W.T)

    x = torch.tensor(rng.standard_normal(d))
    dense = torch.linalg.svdvals(score_jacobian(fn, x[None])[0]).numpy()
    sv = extreme_singular_values(fn, x, 4, which, rng=0)
    expected = dense[:4] if which == "largest" else dense[::-1][:4]
    np.testing.assert_allclose(sv, expected, rtol=LANCZOS_RTOL)


# ----------------------------------------------------------------------------- bad input

def test_bad_input_errors():
    lin = lambda X: -X  # noqa: E731
    with pytest.raises(ValueError, match="mode"):
        score_jacobian(lin, torch.ones(2, 2), mode="central")
    with pytest.raises(ValueError, match="shape"):
        score_jacobian(lin, torch.ones(3))
    with pytest.raises(ValueError, match="torch"):
        score_jacobian(lambda X: -np.asarray(X), torch.ones(2, 2))
    with pytest.raises(ValueError, match="t must"):
        score_jacobian(lambda X, T: -X, torch.ones(2, 2), torch.ones(3))
    with pytest.raises(ValueError, match="sigma"):
        orthogonal_group_singular_values(lin, np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="n_directions"):
        orthogonal_group_singular_values(lin, np.zeros(3), 1.0, n_directions=4)
    with pytest.raises(ValueError, match="x0"):
        symmetric_difference_singular_values(lin, np.array([np.nan, 1.0]), 1.0)
    with pytest.raises(ValueError, match=r"\(B, d\)"):
        symmetric_difference_singular_values(lambda X: X[:, :1], np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="drop_largest"):
        normalize_spectrum([1.0, 2.0], drop_largest=2)
    with pytest.raises(ValueError, match="sv"):
        normalize_spectrum([1.0, -2.0])
    with pytest.raises(ValueError, match="k out of range"):
        extreme_singular_values(lin, torch.ones(4, dtype=torch.float64), 4)
    with pytest.raises(ValueError, match="which"):
        extreme_singular_values(lin, torch.ones(4, dtype=torch.float64), 1, which="middle")
    with pytest.raises(ValueError, match="repetitions"):
        paper_protocol_spectra(lambda s: lin, np.zeros(2), repetitions=0)

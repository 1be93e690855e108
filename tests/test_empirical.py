"""Exact empirical-score Jacobians: every backend and path against a direct float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from geomem.numerics.empirical import (
    empirical_jacobian,
    empirical_score,
    jacobian_eigenvalues,
    jacobian_spectrum,
    weight_statistics,
)

#: float64 paths agree to this fraction of the spectral scale max(1/delta, max|eig|).
RTOL64 = 1e-10
#: float32 (torch) agrees to this fraction of the spectral scale.
RTOL32 = 1e-4
BACKEND_PATHS = [("numpy", "dense"), ("numpy", "gram"), ("numpy", "lowrank"),
                 ("numba", "dense"), ("numba", "auto"), ("torch", "dense"), ("torch", "gram"),
                 ("torch", "lowrank")]


def direct_reference(X, Y, a, delta):
    """Per-query textbook formulas in float64 (difference-form energies, explicit softmax)."""
    eigs, scores, stats = [], [], []
    for x in X:
        logits = -np.sum((x - a * Y) ** 2, axis=1) / (2 * delta)
        w = np.exp(logits - logsumexp(logits))
        ybar = w @ Y
        C = (Y - ybar).T @ ((Y - ybar) * w[:, None])
        J = -np.eye(len(x)) / delta + (a / delta) ** 2 * C
        eigs.append(np.linalg.eigvalsh(J))
        scores.append((a * ybar - x) / delta)
        nz = w[w > 0]
        stats.append((np.sum(w ** 2), -np.sum(nz * np.log(nz)), w.max(), C))
    return np.array(eigs), np.array(scores), stats


def spectral_scale(eig, delta):
    return max(1.0 / delta, float(np.max(np.abs(eig))))


@st.composite
def problems(draw):
    n = draw(st.integers(1, 12))
    d = draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(n, d)) * draw(st.sampled_from([0.1, 1.0, 10.0]))
    if draw(st.booleans()) and n > 1:            # duplicated training points
        Y[-1] = Y[0]
    delta = draw(st.sampled_from([1e-3, 0.05, 0.5, 3.0]))
    a = draw(st.sampled_from([0.3, 1.0]))
    X = a * Y[rng.integers(0, n, size=3)] + np.sqrt(delta) * rng.normal(size=(3, d))
    return X, Y, a, delta


@settings(max_examples=25, deadline=None)
@given(problems())
def test_all_backends_and_paths_match_direct_reference(problem):
    X, Y, a, delta = problem
    ref_eig, ref_score, ref_stats = direct_reference(X, Y, a, delta)
    scale = spectral_scale(ref_eig, delta)
    for backend, path in BACKEND_PATHS:
        spec = jacobian_spectrum(X, Y, a=a, delta=delta, backend=backend, path=path)
        assert spec.eigenvalues.shape == X.shape
        np.testing.assert_allclose(spec.eigenvalues, ref_eig, rtol=0, atol=RTOL64 * scale,
                                   err_msg=f"{backend}/{path}")
        np.testing.assert_allclose(spec.sum_w2, [s[0] for s in ref_stats], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(spec.entropy, [s[1] for s in ref_stats], rtol=1e-9,
                                   atol=1e-9)
        np.testing.assert_allclose(spec.max_weight, [s[2] for s in ref_stats], rtol=1e-9)
    score_scale = max(1.0, float(np.max(np.abs(ref_score))) * delta) / delta
    for backend in ("numpy", "numba", "torch"):
        s = empirical_score(X, Y, a=a, delta=delta, backend=backend)
        np.testing.assert_allclose(s, ref_score, rtol=0, atol=RTOL64 * score_scale)


def test_single_training_point_gives_minus_identity_over_delta():
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(1, 5))
    X = rng.normal(size=(4, 5)) * 3
    for backend in ("numpy", "numba", "torch"):
        spec = jacobian_spectrum(X, Y, a=0.7, delta=0.2, backend=backend)
        assert np.all(spec.eigenvalues == -1 / 0.2)
        assert np.all(spec.participation_ratio == 1.0) and np.all(spec.entropy == 0.0)
        J = empirical_jacobian(X, Y, a=0.7, delta=0.2, backend=backend)
        np.testing.assert_array_equal(J, np.broadcast_to(-np.eye(5) / 0.2, J.shape))


def test_gram_dense_lowrank_agree_when_memorising_and_when_generalising():
    rng = np.random.default_rng(1)
    Y = rng.normal(size=(200, 30)) / np.sqrt(30)
    X = Y[:6] + 0.02 * rng.normal(size=(6, 30))
    for delta in (1e-4, 1.0):
        dense = jacobian_spectrum(X, Y, a=1.0, delta=delta, path="dense")
        for path in ("gram", "lowrank", "auto"):
            other = jacobian_spectrum(X, Y, a=1.0, delta=delta, path=path)
            scale = spectral_scale(dense.eigenvalues, delta)
            np.testing.assert_allclose(other.eigenvalues, dense.eigenvalues, rtol=0,
                                       atol=RTOL64 * scale)
    assert jacobian_spectrum(X, Y, a=1.0, delta=1e-4).path == "gram"
    assert jacobian_spectrum(X, Y, a=1.0, delta=1.0).path == "dense"


def test_lowrank_data_takes_lowrank_path_and_matches_dense():
    rng = np.random.default_rng(2)
    V = np.linalg.qr(rng.normal(size=(80, 3)))[0]
    Y = rng.normal(size=(100, 3)) @ V.T
    X = rng.normal(size=(5, 80))
    auto = jacobian_spectrum(X, Y, a=1.0, delta=0.5, subspaces=[V[:, :1]])
    dense = jacobian_spectrum(X, Y, a=1.0, delta=0.5, path="dense", subspaces=[V[:, :1]])
    assert auto.path == "lowrank"
    scale = spectral_scale(dense.eigenvalues, 0.5)
    np.testing.assert_allclose(auto.eigenvalues, dense.eigenvalues, atol=RTOL64 * scale, rtol=0)
    np.testing.assert_allclose(auto.subspace_traces, dense.subspace_traces, rtol=1e-9)
    # all but rank(Y) eigenvalues are exactly -1/delta
    assert np.all(np.sum(auto.eigenvalues == -2.0, axis=1) >= 80 - 3)


def test_tiny_delta_and_huge_queries_stay_finite():
    rng = np.random.default_rng(3)
    Y = rng.normal(size=(20, 4))
    near = Y[:3] + 1e-7 * rng.normal(size=(3, 4))
    huge = rng.normal(size=(2, 4)) * 1e100
    for backend in ("numpy", "numba", "torch"):
        spec = jacobian_spectrum(near, Y, a=1.0, delta=1e-12, backend=backend)
        assert np.all(np.isfinite(spec.eigenvalues))
        # condensed on one point: C_w = 0, J = -I/delta
        np.testing.assert_allclose(spec.eigenvalues, -1e12, rtol=1e-10)
        s = empirical_score(near, Y, a=1.0, delta=1e-12, backend=backend)
        np.testing.assert_allclose(s, (Y[:3] - near) / 1e-12, rtol=1e-6)
        big = jacobian_spectrum(huge, Y, a=1.0, delta=1e-3, backend=backend)
        assert np.all(np.isfinite(big.eigenvalues)) and np.all(big.participation_ratio >= 1)
        sb = empirical_score(huge, Y, a=1.0, delta=1e-3, backend=backend)
        np.testing.assert_allclose(sb, -huge / 1e-3, rtol=1e-12)


def test_closed_form_jacobian_equals_autograd_of_torch_score():
    rng = np.random.default_rng(4)
    Y = rng.normal(size=(15, 4))
    X = rng.normal(size=(3, 4))
    a, delta = 0.8, 0.3
    Yt = torch.as_tensor(Y)

    def score_torch(x):
        logits = -((x - a * Yt) ** 2).sum(1) / (2 * delta)
        w = torch.softmax(logits, 0)
        return (a * (w @ Yt) - x) / delta

    J = empirical_jacobian(X, Y, a=a, delta=delta)
    for b in range(3):
        Jt = torch.func.jacrev(score_torch)(torch.as_tensor(X[b])).numpy()
        np.testing.assert_allclose(J[b], Jt, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(empirical_score(X, Y, a=a, delta=delta),
                               torch.vmap(score_torch)(torch.as_tensor(X)).numpy(), rtol=1e-12)


def test_score_is_gradient_of_log_density_by_finite_differences():
    rng = np.random.default_rng(5)
    Y = rng.normal(size=(30, 3))
    x = rng.normal(size=3)
    a, delta, h = 1.2, 0.4, 1e-5

    def log_p(z):
        return logsumexp(-np.sum((z - a * Y) ** 2, axis=1) / (2 * delta))

    fd = [(log_p(x + h * e) - log_p(x - h * e)) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(empirical_score(x[None], Y, a=a, delta=delta)[0], fd, rtol=1e-7)


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_weight_statistics_match_direct_softmax(backend):
    rng = np.random.default_rng(6)
    Y = rng.normal(size=(40, 6))
    X = rng.normal(size=(7, 6))
    P = [np.eye(6)[:, :2], np.linalg.qr(rng.normal(size=(6, 3)))[0]]
    ws = weight_statistics(X, Y, a=0.9, delta=0.7, subspaces=P, backend=backend)
    _, _, ref = direct_reference(X, Y, 0.9, 0.7)
    logits = -((X[:, None, :] - 0.9 * Y[None]) ** 2).sum(-1) / 1.4
    w = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    np.testing.assert_allclose(ws.sum_w2, (w ** 2).sum(1), rtol=1e-10)
    np.testing.assert_allclose(ws.participation_ratio, 1 / (w ** 2).sum(1), rtol=1e-10)
    np.testing.assert_allclose(ws.entropy, -(w * np.log(w)).sum(1), rtol=1e-10)
    np.testing.assert_allclose(ws.max_weight, w.max(1), rtol=1e-10)
    for k, Pk in enumerate(P):
        np.testing.assert_allclose(ws.weighted_sq_norm[:, k], w @ ((Y @ Pk) ** 2).sum(1),
                                   rtol=1e-10)
        np.testing.assert_allclose(ws.mean_sq_norm[:, k], (((w @ Y) @ Pk) ** 2).sum(1),
                                   rtol=1e-10)
        # tr(P C_w P) = sum w |P y|^2 - |P ybar|^2, the identity other engineers rely on
        spec = jacobian_spectrum(X, Y, a=0.9, delta=0.7, subspaces=P, path="dense")
        np.testing.assert_allclose(spec.subspace_traces[:, k],
                                   ws.weighted_sq_norm[:, k] - ws.mean_sq_norm[:, k], rtol=1e-9)
        np.testing.assert_allclose(spec.subspace_traces[:, k],
                                   [np.trace(Pk.T @ s[3] @ Pk) for s in ref], rtol=1e-9)


def test_torch_float32_agrees_with_float64_reference():
    rng = np.random.default_rng(7)
    Y = rng.normal(size=(300, 20)) / np.sqrt(20)
    X = Y[:8] + 0.3 * rng.normal(size=(8, 20))
    for delta in (0.01, 0.3):
        ref = jacobian_eigenvalues(X, Y, a=1.0, delta=delta)
        f32 = jacobian_eigenvalues(X, Y, a=1.0, delta=delta, backend="torch", dtype="float32")
        np.testing.assert_allclose(f32, ref, rtol=0, atol=RTOL32 * spectral_scale(ref, delta))
    t = empirical_score(X, Y, a=1.0, delta=0.3, backend="torch", return_tensor=True)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64


@pytest.mark.parametrize("kwargs, name", [
    ({"delta": 0.0}, "delta"), ({"delta": -1.0}, "delta"), ({"delta": np.nan}, "delta"),
    ({"a": 0.0}, "a"), ({"backend": "jax"}, "backend"), ({"path": "fast"}, "path"),
])
def test_bad_arguments_raise_value_error_naming_parameter(kwargs, name):
    args = {"a": 1.0, "delta": 1.0, **kwargs}
    with pytest.raises(ValueError, match=name):
        jacobian_spectrum(np.zeros((2, 3)), np.ones((4, 3)), **args)


def test_bad_arrays_raise_value_error():
    with pytest.raises(ValueError, match="X"):
        empirical_score(np.zeros((2, 4)), np.ones((4, 3)), a=1, delta=1)
    with pytest.raises(ValueError, match="Y"):
        empirical_score(np.zeros((2, 3)), np.full((4, 3), np.inf), a=1, delta=1)
    with pytest.raises(ValueError, match="subspaces"):
        weight_statistics(np.zeros((2, 3)), np.ones((4, 3)), a=1, delta=1,
                          subspaces=[np.eye(4)])
    with pytest.raises(ValueError, match="options"):
        empirical_score(np.zeros((2, 3)), np.ones((4, 3)), a=1, delta=1, device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_reference():
    rng = np.random.default_rng(8)
    Y = rng.normal(size=(500, 30)) / np.sqrt(30)
    X = Y[:16] + 0.2 * rng.normal(size=(16, 30))
    for delta in (1e-3, 0.1, 1.0):
        ref = jacobian_spectrum(X, Y, a=1.0, delta=delta)
        for dtype, rtol in (("float64", RTOL64), ("float32", RTOL32)):
            gpu = jacobian_spectrum(X, Y, a=1.0, delta=delta, backend="torch", device="cuda",
                                    dtype=dtype)
            scale = spectral_scale(ref.eigenvalues, delta)
            np.testing.assert_allclose(gpu.eigenvalues, ref.eigenvalues, atol=rtol * scale,
                                       rtol=0)
            np.testing.assert_allclose(gpu.participation_ratio, ref.participation_ratio,
                                       rtol=100 * rtol)


def test_streaming_over_many_chunks_matches_single_chunk(monkeypatch):
    """Tiny blocks force many chunks and query blocks: exercises the online log-sum-exp."""
    from geomem.numerics import _empirical_common

    rng = np.random.default_rng(9)
    Y = rng.normal(size=(60, 5))
    Y[30] = Y[2]                                  # duplicate across chunks
    X = np.concatenate([Y[:4] + 0.05 * rng.normal(size=(4, 5)), rng.normal(size=(3, 5))])
    P = [np.eye(5)[:, :2]]
    for delta in (1e-6, 0.05, 2.0):
        ref_eig, ref_score, ref_stats = direct_reference(X, Y, 1.0, delta)
        one = weight_statistics(X, Y, a=1.0, delta=delta, subspaces=P)
        monkeypatch.setattr(_empirical_common, "BLOCK_ELEMENTS", 40)  # every backend reads it
        for backend in ("numpy", "torch"):
            for path in ("dense", "gram", "lowrank"):
                spec = jacobian_spectrum(X, Y, a=1.0, delta=delta, backend=backend, path=path)
                np.testing.assert_allclose(spec.eigenvalues, ref_eig, rtol=0,
                                           atol=RTOL64 * spectral_scale(ref_eig, delta))
                np.testing.assert_allclose(spec.entropy, [s[1] for s in ref_stats], atol=1e-9)
            np.testing.assert_allclose(empirical_score(X, Y, a=1.0, delta=delta, backend=backend),
                                       ref_score, rtol=1e-10, atol=1e-10 / delta)
            many = weight_statistics(X, Y, a=1.0, delta=delta, subspaces=P, backend=backend)
            np.testing.assert_allclose(many.sum_w2, one.sum_w2, rtol=1e-10)
            np.testing.assert_allclose(many.weighted_sq_norm, one.weighted_sq_norm, rtol=1e-10)
        monkeypatch.undo()


def test_auto_routes_each_query_by_its_own_support():
    """A batch mixing condensed and uncondensed queries is split (gram + dense) and gives the
    dense path's eigenvalues and statistics query by query."""
    rng = np.random.default_rng(7)
    cluster = 0.01 * rng.standard_normal((20, 12))  # queries at its centre weigh all 20
    isolated = 10.0 + rng.standard_normal((20, 12))  # queries on them condense (support 1)
    Y = np.concatenate([cluster, isolated])
    X = np.concatenate([isolated[:3] + 1e-3 * rng.standard_normal((3, 12)),
                        1e-3 * rng.standard_normal((3, 12)), isolated[3:5]])
    delta = 0.05
    auto = jacobian_spectrum(X, Y, a=1.0, delta=delta)
    dense = jacobian_spectrum(X, Y, a=1.0, delta=delta, path="dense")
    assert "+" in auto.path
    np.testing.assert_allclose(auto.eigenvalues, dense.eigenvalues, rtol=0,
                               atol=RTOL64 / delta)
    np.testing.assert_allclose(auto.sum_w2, dense.sum_w2, rtol=RTOL64)


def test_weight_statistics_subspace_trace_matches_the_covariance_route():
    """tr(P_k C_w P_k) from the weight moments equals the trace of the covariance the
    Jacobian path builds; None without subspaces."""
    rng = np.random.default_rng(11)
    Y = rng.standard_normal((30, 6))
    X = rng.standard_normal((5, 6))
    bases = [np.eye(6)[:, :2], np.eye(6)[:, 2:5]]
    ws = weight_statistics(X, Y, a=0.8, delta=0.3, subspaces=bases)
    spec = jacobian_spectrum(X, Y, a=0.8, delta=0.3, path="dense", subspaces=bases)
    np.testing.assert_allclose(ws.subspace_trace, spec.subspace_traces, rtol=RTOL64)
    assert weight_statistics(X, Y, a=0.8, delta=0.3).subspace_trace is None


# ----------------------------------------------------------------------------- issue 15: 12, 13

@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_empty_batch_gives_empty_results_on_every_backend(backend):
    """B = 0 queries: (0, d) score, (0, d, d) Jacobian, (0, d) eigenvalues, (0,) statistics
    and (0, K) traces on every backend and path (was IndexError / 'expected a non-empty list')."""
    Y = np.random.default_rng(0).standard_normal((12, 4))
    X = np.zeros((0, 4))
    P = [np.eye(4)[:, :2]]
    assert empirical_score(X, Y, a=1.0, delta=0.1, backend=backend).shape == (0, 4)
    assert empirical_jacobian(X, Y, a=1.0, delta=0.1, backend=backend).shape == (0, 4, 4)
    ws = weight_statistics(X, Y, a=1.0, delta=0.1, subspaces=P, backend=backend)
    assert ws.sum_w2.shape == (0,) and ws.weighted_sq_norm.shape == (0, 1)
    for path in ("auto", "dense", "gram", "lowrank"):
        spec = jacobian_spectrum(X, Y, a=1.0, delta=0.1, backend=backend, path=path,
                                 subspaces=P)
        assert spec.eigenvalues.shape == (0, 4) and spec.singular_values.shape == (0, 4)
        assert spec.participation_ratio.shape == (0,)
        assert spec.subspace_traces.shape == (0, 1)


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_tiny_delta_gives_the_condensed_answer(backend):
    """delta = 1e-300 (was OverflowError): every query condenses on its nearest training point,
    so J = -I/delta exactly, the score is (a y_nearest - x)/delta, and a tie-free batch has
    sum w^2 = 1."""
    rng = np.random.default_rng(1)
    Y = rng.standard_normal((15, 3))
    X = Y[:4] + 1e-3 * rng.standard_normal((4, 3))
    delta = 1e-300
    spec = jacobian_spectrum(X, Y, a=1.0, delta=delta, backend=backend)
    np.testing.assert_array_equal(spec.eigenvalues, np.full((4, 3), -1.0 / delta))
    np.testing.assert_array_equal(spec.sum_w2, np.ones(4))
    J = empirical_jacobian(X, Y, a=1.0, delta=delta, backend=backend)
    np.testing.assert_array_equal(J, np.broadcast_to(-np.eye(3) / delta, (4, 3, 3)))
    score = empirical_score(X, Y, a=1.0, delta=delta, backend=backend)
    np.testing.assert_allclose(score * delta, Y[:4] - X, rtol=1e-12)


def test_huge_coordinates_raise_with_the_supported_range():
    """|Y| = 1e200 (was 'zero-size array' / silent NaN score): ValueError naming Y and the
    supported range on every entry point."""
    Y = np.random.default_rng(2).standard_normal((10, 3)) * 1e200
    X = np.zeros((2, 3))
    calls = [empirical_score, empirical_jacobian, jacobian_spectrum, weight_statistics,
             jacobian_eigenvalues]
    for fn in calls:
        with pytest.raises(ValueError, match=r"Y out of range: allowed a \|y\| <= 1e\+150"):
            fn(X, Y, a=1.0, delta=1.0)
        with pytest.raises(ValueError, match=r"X out of range"):
            fn(Y[:2], Y / 1e200, a=1.0, delta=1.0)


def test_uncondensed_overflow_raises_instead_of_inf():
    """Two equidistant training points at delta = 1e-300: C_w has eigenvalue 1 and the true
    eigenvalue a^2/delta^2 = 1e600 is beyond float64, so a ValueError names delta."""
    Y = np.array([[1.0, 0.0], [-1.0, 0.0]])
    X = np.zeros((1, 2))
    with pytest.raises(ValueError, match="delta = 1e-300 is out of the supported range"):
        jacobian_spectrum(X, Y, a=1.0, delta=1e-300, path="dense")
    with pytest.raises(ValueError, match="delta"):
        empirical_jacobian(X, Y, a=1.0, delta=1e-300)


def test_float32_torch_overflow_is_an_error_not_nan():
    """float32 squares overflow near 1e19: the torch float32 backend refuses instead of
    returning inf/NaN statistics."""
    rng = np.random.default_rng(3)
    Y = rng.standard_normal((8, 3)) * 1e25
    with pytest.raises(ValueError, match="float32"):
        jacobian_spectrum(Y[:2] + 1e24, Y, a=1.0, delta=1e40, backend="torch", dtype="float32",
                          path="dense")

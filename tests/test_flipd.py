"""FLIPD: exact empirical closed form vs autodiff, population curve vs Monte Carlo, networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomem.numerics import empirical_flipd, empirical_jacobian, empirical_score, network_flipd
from geomem.theory import (
    VE,
    VP,
    LinearManifold,
    expected_population_flipd,
    finite_n_flipd,
    population_flipd,
    population_flipd_std,
    training_point_flipd,
)

BACKENDS = ["numpy", "numba", "torch"]
#: float64 closed form vs autodiff: the reference forms d + Delta tr J, which cancels d digits
#: (|Delta tr J| ~ d), so allow ~1e4 eps relative to d
RTOL_F64 = 1e-10
ATOL_F64_PER_DIM = 1e-11
#: float32 torch backend: energies and softmax in single precision (eps ~ 6e-8) times E ~ 1e2
RTOL_F32 = 2e-4
#: finite-difference check of FLIPD = d + d log p / d log sigma: central step 1e-4, O(h^2)
RTOL_FD = 1e-6
#: Monte Carlo tests: |mean - theory| below this many standard errors (false alarm ~ 6e-7)
N_SE = 5.0


def _torch_score(Y: np.ndarray, a: float, delta: float):
    """Independent torch implementation of the empirical score z -> (a ybar - z)/Delta."""
    Yt = torch.as_tensor(Y, dtype=torch.float64)

    def score(z):
        logits = -((z[..., None, :] - a * Yt) ** 2).sum(-1) / (2 * delta)
        w = torch.softmax(logits, dim=-1)
        return (a * w @ Yt - z) / delta
    return score


def _autodiff_flipd(X, Y, a, delta):
    """d + Delta (tr jacrev(s) + |s|^2) at a X, by torch.func (reference)."""
    score = _torch_score(Y, a, delta)
    z = a * torch.as_tensor(X, dtype=torch.float64)
    J = torch.func.vmap(torch.func.jacrev(score))(z)
    s = score(z)
    d = X.shape[1]
    return (d + delta * (torch.diagonal(J, dim1=-2, dim2=-1).sum(-1) + (s * s).sum(-1))).numpy()


def _inputs(seed, n=40, d=6, b=12):
    rng = np.random.default_rng(seed)
    Y = rng.standard_normal((n, d)) * rng.uniform(0.3, 2.0, d)
    X = np.concatenate([rng.standard_normal((b // 2, d)),
                        Y[: b - b // 2] + 0.05 * rng.standard_normal((b - b // 2, d))])
    return X, Y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("a, delta", [(1.0, 0.5), (0.8, 0.05), (0.95, 0.003)])
def test_empirical_flipd_matches_autodiff(backend, a, delta):
    X, Y = _inputs(int(1000 * delta))
    ref = _autodiff_flipd(X, Y, a, delta)
    got = empirical_flipd(X, Y, a=a, delta=delta, backend=backend)
    assert got.shape == (X.shape[0],)
    np.testing.assert_allclose(got, ref, rtol=RTOL_F64, atol=ATOL_F64_PER_DIM * X.shape[1])


def test_torch_float32_backend():
    X, Y = _inputs(7)
    ref = empirical_flipd(X, Y, a=0.9, delta=0.1)
    got = empirical_flipd(X, Y, a=0.9, delta=0.1, backend="torch", dtype="float32")
    np.testing.assert_allclose(got, ref, rtol=RTOL_F32)
    tensor = empirical_flipd(X, Y, a=0.9, delta=0.1, backend="torch", return_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (X.shape[0],)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_closed_form_in_trace_of_weighted_covariance(backend):
    """FLIPD = (a^2 tr C_w + |a ybar - x_t|^2)/Delta with the package's Jacobian and score."""
    X, Y = _inputs(3, d=5)
    a, delta = 0.9, 0.2
    J = empirical_jacobian(a * X, Y, a=a, delta=delta, backend=backend)
    s = empirical_score(a * X, Y, a=a, delta=delta, backend=backend)
    tr_c = (np.trace(J, axis1=1, axis2=2) + X.shape[1] / delta) * delta**2 / a**2
    closed = (a**2 * tr_c + delta**2 * np.sum(s * s, axis=1)) / delta
    np.testing.assert_allclose(empirical_flipd(X, Y, a=a, delta=delta, backend=backend), closed,
                               rtol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), log_delta=st.floats(-3.0, 1.0), a=st.floats(0.2, 1.0))
def test_flipd_is_log_density_slope_in_sigma(seed, log_delta, a):
    """FLIPD = d + d log p_sigma(x_t) / d log sigma (heat equation), at fixed a and x_t."""
    X, Y = _inputs(seed, n=15, d=4, b=4)
    delta = 10.0**log_delta
    z = a * X

    def log_p(log_sigma):
        dl = math.exp(2 * log_sigma)
        e = -np.sum((z[:, None, :] - a * Y) ** 2, axis=-1) / (2 * dl)
        mx = e.max(axis=1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(e - mx).sum(axis=1))
        return lse - 0.5 * X.shape[1] * np.log(2 * np.pi * dl)

    h = 1e-4
    ls = 0.5 * math.log(delta)
    slope = (log_p(ls + h) - log_p(ls - h)) / (2 * h)
    got = empirical_flipd(X, Y, a=a, delta=delta)
    np.testing.assert_allclose(got, X.shape[1] + slope, rtol=RTOL_FD, atol=RTOL_FD * X.shape[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_point_keeps_relative_precision(backend):
    """N = 2 at y_1: FLIPD = 2 E e^{-E}/(1 + e^{-E}) exactly, even when it is ~1e-200."""
    Y = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, -1.0]])
    for delta in (0.5, 0.01, 1e-3):
        energy = np.sum(Y[1] ** 2) / (2 * delta)
        exact = 2 * energy * np.exp(-energy) / (1 + np.exp(-energy))
        got = empirical_flipd(Y[:1], Y, a=1.0, delta=delta, backend=backend)
        np.testing.assert_allclose(got, [exact], rtol=1e-12)


def test_population_curve_against_monte_carlo():
    """E_x FLIPD over fresh clean points (explicit matrices, random basis) vs the closed form."""
    model = LinearManifold(8, (2, 3), stds=(1.0, 0.4), residual_std=0.05, basis="random",
                           seed=3)
    X = model.sample(20000, np.random.default_rng(0))
    for schedule, t in ((VP(), 0.01), (VP(), 0.3), (VE(), 0.02), (VE(), 2.0)):
        a, dl = float(schedule.a(t)), float(schedule.delta(t))
        prec = np.linalg.inv(dl * np.eye(8) + a**2 * model.covariance())
        s = -(a * X) @ prec
        mc = 8 + dl * (-np.trace(prec) + np.sum(s * s, axis=1))
        np.testing.assert_allclose(mc, population_flipd(model, X, t, schedule), rtol=1e-9)
        se = mc.std() / math.sqrt(mc.size)
        assert abs(mc.mean() - expected_population_flipd(model, t, schedule)) < N_SE * se
        np.testing.assert_allclose(mc.std(), population_flipd_std(model, t, schedule),
                                   rtol=0.05)


def test_population_curve_limits():
    model = LinearManifold(30, (2, 5), stds=(1.0, 0.3))
    t = np.array([1e-8, 1e-4, 0.1, 1.0, 10.0, 40.0])
    curve = expected_population_flipd(model, t, VP())
    assert curve.shape == t.shape
    assert abs(curve[0] - model.m) < 1e-3 and curve[-1] < 1e-30
    assert np.all(np.diff(curve) < 0)


def test_training_point_flipd_pair_term_at_two_points():
    """N = 2: FLIPD at y_1 averaged over fresh pairs equals the pair formula (Monte Carlo)."""
    model = LinearManifold(5, (2,), stds=(1.3,), basis="random", seed=1)
    rng = np.random.default_rng(4)
    for t in (0.5, 0.03):
        a, dl = float(VP().a(t)), float(VP().delta(t))
        vals = np.array([empirical_flipd(Y[:1], Y, a=a, delta=dl)[0]
                         for Y in (model.sample(2, rng) for _ in range(4000))])
        theory = float(training_point_flipd(model, t, 2, VP(), method="pair"))
        assert abs(vals.mean() - theory) < N_SE * vals.std() / math.sqrt(vals.size)


#: exact (r integral with the self weight, chi-square rule over y_1) against the closed pair
#: form at N = 2: two independent routes; measured 2e-11 (the r integral's refinement 1e-8)
EXACT_VS_PAIR_RTOL = 1e-8


@pytest.mark.parametrize("schedule, times", [(VP(), (1e-5, 0.05, 1.0)), (VE(), (1e-3, 1.0))],
                         ids=["VP", "VE"])
def test_training_point_flipd_exact_equals_the_pair_form_at_two_points(schedule, times):
    model = LinearManifold(5, (2,), stds=(1.3,), basis="random", seed=1)
    t = np.array(times)
    exact = training_point_flipd(model, t, 2, schedule)
    np.testing.assert_allclose(exact, training_point_flipd(model, t, 2, schedule, method="pair"),
                               rtol=EXACT_VS_PAIR_RTOL)


def test_training_point_flipd_exact_against_monte_carlo_and_the_pair_bound():
    """N = 10: the exact finite-N expectation equals Monte Carlo over training sets (the SE
    over sets, as the points of one set are correlated), lies below the pair term (an upper
    bound), approaches it as t -> 0, and both -> 0 (memorization read as dimension)."""
    model = LinearManifold(6, (2,), stds=1.0)
    n, reps = 10, 1500
    rng = np.random.default_rng(1)
    ratios = []
    for t in (0.3, 0.001):
        a, dl = float(VP().a(t)), float(VP().delta(t))
        per_set = np.array([empirical_flipd(Y, Y, a=a, delta=dl).mean()
                            for Y in (model.sample(n, rng) for _ in range(reps))])
        exact = float(training_point_flipd(model, t, n, VP()))
        pair = float(training_point_flipd(model, t, n, VP(), method="pair"))
        assert abs(per_set.mean() - exact) < N_SE * per_set.std() / math.sqrt(reps)
        assert exact < pair
        ratios.append(exact / pair)
    assert ratios[0] < 0.5 and abs(ratios[-1] - 1.0) < 0.1, ratios
    assert training_point_flipd(model, 1e-6, n, VP(), method="pair") < 1e-3
    assert training_point_flipd(model, 1e-6, n, VP()) < 1e-3
    assert training_point_flipd(model, 0.3, 1, VP()) == 0.0


def test_finite_n_flipd_one_training_point_closed_form():
    """N = 1: w = 1, so E FLIPD(x) = (a^2/Delta)(tr Sigma + |x|^2) exactly."""
    model = LinearManifold(5, (1, 2), stds=(1.0, 0.5), basis="random", seed=2)
    x = np.random.default_rng(0).standard_normal((3, 5))
    for t in (1.5, 0.3):          # N = 1 needs the slow upper contour; a few seconds here
        a, dl = float(VP().a(t)), float(VP().delta(t))
        expect = a**2 / dl * (np.sum(model.direction_variances) + np.sum(x * x, axis=1))
        np.testing.assert_allclose(finite_n_flipd(model, t, 1, VP(), x), expect, rtol=1e-7)


@pytest.mark.parametrize("n, t", [(2, 0.3), (10, 0.05)])
def test_finite_n_flipd_against_monte_carlo(n, t):
    """E over training sets at explicit clean points: exact theory vs Monte Carlo."""
    model = LinearManifold(4, (1, 2), stds=(1.0, 0.5))
    rng = np.random.default_rng(5)
    x = model.sample(2, rng)
    a, dl = float(VP().a(t)), float(VP().delta(t))
    mc = np.array([empirical_flipd(x, model.sample(n, rng), a=a, delta=dl)
                   for _ in range(4000)])
    theory = finite_n_flipd(model, t, n, VP(), x)
    assert np.all(np.abs(mc.mean(0) - theory) < N_SE * mc.std(0) / math.sqrt(mc.shape[0]))


def test_finite_n_flipd_fresh_points_limits():
    """Fresh clean points: N large in the generalization regime -> the population curve; at
    small t the memorizing score gives a large FLIPD at fresh points (far from every y_mu),
    while at training points it goes to 0."""
    model = LinearManifold(4, (1, 2), stds=(1.0, 0.5))
    x = model.sample(2, 5)
    big = float(finite_n_flipd(model, 0.5, 1000, VP(), n_nodes=3))   # 3 nodes: ~1e-8 here
    assert abs(big / float(expected_population_flipd(model, 0.5, VP())) - 1) < 2e-3
    np.testing.assert_allclose(finite_n_flipd(model, 0.5, 1000, VP(), x),
                               population_flipd(model, x, 0.5, VP()), rtol=2e-3)
    fresh = finite_n_flipd(model, 0.01, 10, VP(), x)
    train = float(training_point_flipd(model, 0.01, 10, VP(), method="pair"))
    assert np.all(fresh > 2 * model.m) and train < 0.05 * fresh.min()


def test_network_flipd_exact_and_hutchinson():
    X, Y = _inputs(11, d=10, b=6)
    a, delta = 0.9, 0.05
    ref = empirical_flipd(X, Y, a=a, delta=delta)
    exact = network_flipd(_torch_score(Y, a, delta), X, a=a, delta=delta)
    assert exact.method == "exact" and np.all(exact.standard_error == 0)
    np.testing.assert_allclose(exact.flipd, ref, rtol=RTOL_F64, atol=ATOL_F64_PER_DIM * 10)
    hutch = network_flipd(_torch_score(Y, a, delta), X, a=a, delta=delta, method="hutchinson",
                          n_probes=400, seed=2)
    # SE = 0 is right where J is diagonal (weights condensed on one point: J = -I/Delta)
    assert hutch.n_probes == 400 and np.any(hutch.standard_error > 0)
    assert np.all(np.abs(hutch.flipd - ref) <= N_SE * hutch.standard_error + 1e-9 * ref)


def test_network_flipd_linear_score():
    """A linear score -z/(Delta + a^2 v): tr and FLIPD known exactly (population formula)."""
    model = LinearManifold(5, (2,), stds=0.7)
    t = 0.05
    a, dl = float(VP().a(t)), float(VP().delta(t))
    prec = torch.as_tensor(np.linalg.inv(dl * np.eye(5) + a**2 * model.covariance()))
    X = model.sample(4, np.random.default_rng(0))
    est = network_flipd(lambda z: -z @ prec, X, a=a, delta=dl, method="exact")
    np.testing.assert_allclose(est.flipd, population_flipd(model, X, t, VP()), rtol=1e-10)


@pytest.mark.parametrize("call, name", [
    (lambda: empirical_flipd(np.zeros((2, 3)), np.zeros((4, 2)), a=1.0, delta=1.0), "X"),
    (lambda: empirical_flipd(np.zeros((2, 3)), np.zeros(3), a=1.0, delta=1.0), "Y"),
    (lambda: empirical_flipd(np.zeros((2, 3)), np.zeros((4, 3)), a=0.0, delta=1.0), "a"),
    (lambda: empirical_flipd(np.zeros((2, 3)), np.zeros((4, 3)), a=1.0, delta=np.nan), "delta"),
    (lambda: empirical_flipd(np.zeros((2, 3)), np.zeros((4, 3)), a=1.0, delta=1.0,
                             backend="jax"), "backend"),
    (lambda: empirical_flipd(np.zeros((2, 3)), np.zeros((4, 3)), a=1.0, delta=1.0,
                             device="cpu"), "options"),
    (lambda: expected_population_flipd(LinearManifold.figure4(), 0.1, VP()), "normalized"),
    (lambda: expected_population_flipd("model", 0.1, VP()), "model"),
    (lambda: population_flipd(LinearManifold(3, (1,), stds=1.0), np.zeros((2, 4)), 0.1, VP()),
     "X"),
    (lambda: training_point_flipd(LinearManifold(3, (1,), stds=1.0), 0.1, 0, VP()),
     "n_train"),
    (lambda: finite_n_flipd(LinearManifold(3, (1,), stds=1.0), 0.1, 0, VP()), "n_train"),
    (lambda: finite_n_flipd(LinearManifold(3, (1,), stds=1.0), 0.1, 5, VP(), "origin"), "x"),
    (lambda: finite_n_flipd(LinearManifold(3, (1,), stds=1.0), [0.1, 0.2], 5, VP()), "t"),
    (lambda: finite_n_flipd(LinearManifold.figure4(), 0.1, 5, VP()), "normalized"),
    (lambda: network_flipd(3, np.zeros((2, 3)), a=1.0, delta=1.0), "score_fn"),
    (lambda: network_flipd(lambda z: z, np.zeros((2, 3)), a=1.0, delta=1.0, method="svd"),
     "method"),
    (lambda: network_flipd(lambda z: z, np.zeros((2, 3)), a=1.0, delta=-1.0), "delta"),
    (lambda: network_flipd(lambda z: z, np.zeros((2, 3)), a=1.0, delta=1.0, n_probes=1),
     "n_probes"),
    (lambda: network_flipd(lambda z: z[:, :2], np.zeros((2, 3)), a=1.0, delta=1.0), "score_fn"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_empty_batch():
    assert empirical_flipd(np.zeros((0, 3)), np.ones((4, 3)), a=1.0, delta=1.0).shape == (0,)

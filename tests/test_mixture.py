"""Gaussian mixtures (score vs autodiff of the log-density) and the speciation time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomem.theory import (
    DDPM,
    VE,
    VP,
    GaussianMixture,
    LinearManifold,
    collapse_time,
    largest_covariance_eigenvalue,
    mixture_collapse_time,
    mixture_mutual_information,
    speciation_time,
)

#: float64 closed-form score vs torch autograd of an independent log-density: both are exact
#: up to round-off in Cholesky solves of covariances with condition number <~ 1e2
RTOL_SCORE = 1e-9
#: sample moments from 40000 draws: standard error ~ 1/sqrt(40000) * scale ~ 0.01
ATOL_MOMENTS = 0.06


def _random_mixture(seed: int, k: int = 3, d: int = 4) -> GaussianMixture:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((k, d, d))
    cov = A @ A.transpose(0, 2, 1) / d + 0.3 * np.eye(d)
    return GaussianMixture(2.0 * rng.standard_normal((k, d)), cov, rng.uniform(0.2, 1.0, k))


def _torch_log_density(model: GaussianMixture):
    """Independent log-density: torch.distributions mixture of multivariate normals."""
    mix = torch.distributions.Categorical(probs=torch.tensor(np.array(model.weights)))
    comp = torch.distributions.MultivariateNormal(torch.tensor(np.array(model.means)),
                                                  covariance_matrix=torch.tensor(np.array(
                                                      model.covariances)))
    return torch.distributions.MixtureSameFamily(mix, comp).log_prob


@pytest.mark.parametrize("noise", [None, ("vp", 0.05), ("vp", 1.5), ("ve", 0.3)])
def test_score_matches_autodiff_of_log_density(noise):
    model = _random_mixture(0)
    law = model if noise is None else model.noised(noise[1], noise[0])
    X = np.random.default_rng(1).standard_normal((16, model.d)) * 3.0
    x = torch.tensor(X, requires_grad=True)
    log_p = _torch_log_density(law)(x)
    (grad,) = torch.autograd.grad(log_p.sum(), x)
    score = law.score(X) if noise is None else model.population_score(X, noise[1], noise[0])
    np.testing.assert_allclose(score, grad.numpy(), rtol=RTOL_SCORE, atol=1e-12)
    np.testing.assert_allclose(law.log_density(X), log_p.detach().numpy(), rtol=1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), k=st.integers(1, 4), d=st.integers(1, 5))
def test_score_is_gradient_of_log_density(seed, k, d):
    """Central finite differences of log_density (step 1e-5: error ~ 1e-10 h^-1 + h^2)."""
    model = _random_mixture(seed, k, d)
    x = np.random.default_rng(seed + 1).standard_normal(d)
    h = 1e-5
    fd = np.array([(model.log_density(x + h * e) - model.log_density(x - h * e)) / (2 * h)
                   for e in np.eye(d)])
    np.testing.assert_allclose(model.score(x), fd, rtol=1e-5, atol=1e-6)
    r = model.responsibilities(x)
    assert r.shape == (k,) and abs(r.sum() - 1.0) < 1e-12


def test_sampler_moments_and_labels():
    model = _random_mixture(2)
    Y, labels = model.sample(40000, np.random.default_rng(3), return_labels=True)
    np.testing.assert_allclose(Y.mean(0), model.mean(), atol=ATOL_MOMENTS)
    np.testing.assert_allclose(np.cov(Y.T), model.covariance(), atol=2 * ATOL_MOMENTS)
    np.testing.assert_allclose(np.bincount(labels, minlength=3) / 40000, model.weights,
                               atol=0.01)
    for c in range(3):
        np.testing.assert_allclose(Y[labels == c].mean(0), model.means[c], atol=ATOL_MOMENTS)


def test_one_component_is_the_linear_gaussian_score():
    lm = LinearManifold(4, (2,), stds=0.8, residual_std=0.1, basis="random", seed=0)
    g = GaussianMixture(np.zeros((1, 4)), lm.covariance()[None])
    X = lm.sample(5, 0)
    a, dl = float(VP().a(0.2)), float(VP().delta(0.2))
    expect = -X @ np.linalg.inv(dl * np.eye(4) + a * a * lm.covariance())
    np.testing.assert_allclose(g.population_score(X, 0.2, VP()), expect, rtol=1e-12)


def test_symmetric_two_class_model():
    g = GaussianMixture.symmetric(50, mean_norm=math.sqrt(50.0), std=1.0, seed=4)
    assert g.k == 2 and np.allclose(g.means[0], -g.means[1])
    # Lambda = |m|^2 + sigma^2 along m (between- plus within-class variance)
    assert abs(largest_covariance_eigenvalue(g) - 51.0) < 1e-9


def test_speciation_time_published_formula():
    """Biroli et al. 2024: t_S = (1/2) ln Lambda under VP (form='published', exactly), and the
    schedule-generic SNR criterion agrees with it to (1/2) ln(1 + 1/Lambda)."""
    g = GaussianMixture.symmetric(200, mean_norm=math.sqrt(200.0), std=1.0)
    lam = 201.0
    assert speciation_time(g, "vp", form="published") == pytest.approx(0.5 * math.log(lam),
                                                                        rel=1e-12)
    t_s = speciation_time(g, VP())
    assert t_s == pytest.approx(0.5 * math.log1p(lam), rel=1e-12)
    assert 0 < t_s - 0.5 * math.log(lam) <= 1.0 / (2 * lam)
    assert speciation_time(g, VE()) == pytest.approx(lam, rel=1e-12)       # Delta(t_S) = Lambda
    lm = LinearManifold(10, (2, 3), stds=(3.0, 1.0))
    assert speciation_time(lm, "vp", form="published") == pytest.approx(math.log(3.0))
    assert speciation_time(lm, VE()) == pytest.approx(9.0)


@pytest.mark.parametrize("schedule", [VP(), VE(), DDPM()])
def test_speciation_time_solves_the_snr_criterion(schedule):
    model = LinearManifold.figure4()          # normalised: exact second moments of the generator
    lam = largest_covariance_eigenvalue(model)
    assert abs(lam - float(np.max(model.normalized_direction_variances()))) < 1e-15
    t = speciation_time(model, schedule)
    a, dl = float(schedule.a(t)), float(schedule.delta(t))
    assert a * a * lam == pytest.approx(dl, rel=1e-8)


@pytest.mark.parametrize("n_train", [10, 1000])
def test_mixture_collapse_time_is_the_published_one_for_a_gaussian(n_train):
    """One isotropic component: the entropy criterion is the published
    t_C = (1/2) ln(1 + s^2/(N^{2/d} - 1)) (VP) up to the Monte-Carlo error of I(t)."""
    d, s = 5, 0.8
    g = GaussianMixture(np.zeros((1, d)), s * s)
    t_c = mixture_collapse_time(g, n_train, VP(), rng=3)
    exact = 0.5 * math.log1p(s * s / (n_train ** (2 / d) - 1))
    assert exact == pytest.approx(collapse_time(LinearManifold(d, (d,), stds=s), n_train, VP()))
    snr = float(VP().snr(t_c))
    i_exact = 0.5 * d * math.log1p(snr * s * s)               # I(t) of a Gaussian at t_C(MC)
    _, se = mixture_mutual_information(g, t_c, VP(), rng=3)
    assert abs(i_exact - math.log(n_train)) < 5 * se
    assert abs(t_c - exact) < 0.05 * exact


def test_mixture_collapse_time_orders():
    """Separated classes: collapse happens after (at smaller t than) speciation, and a mixture
    of two point masses never collapses onto N > 2 points."""
    g = GaussianMixture.symmetric(10, mean_norm=4.0, std=0.5)
    assert mixture_collapse_time(g, 100, VP()) < speciation_time(g, VP())
    with pytest.raises(ValueError, match="n_train"):
        mixture_collapse_time(GaussianMixture(np.array([[1.0], [-1.0]]), 0.0), 10, VP())


@pytest.mark.parametrize("call, name", [
    (lambda: GaussianMixture(np.zeros(3)), "means"),
    (lambda: GaussianMixture(np.zeros((2, 3)), np.ones((2, 2))), "covariances"),
    (lambda: GaussianMixture(np.zeros((2, 3)), -1.0), "covariances"),
    (lambda: GaussianMixture(np.zeros((1, 2)), np.array([[[1.0, 2.0], [2.0, 1.0]]])),
     "covariances"),
    (lambda: GaussianMixture(np.zeros((2, 3)), 1.0, [1.0, -1.0]), "weights"),
    (lambda: GaussianMixture(np.zeros((2, 3)), 1.0, [1.0]), "weights"),
    (lambda: GaussianMixture(np.zeros((2, 3)), 0.0).score(np.zeros(3)), "covariances"),
    (lambda: GaussianMixture(np.zeros((2, 3))).score(np.zeros(2)), "x"),
    (lambda: GaussianMixture(np.zeros((2, 3))).sample(-1), "n"),
    (lambda: GaussianMixture(np.zeros((2, 3))).noised(-1.0, "vp"), "t"),
    (lambda: speciation_time("model", VP()), "model"),
    (lambda: mixture_collapse_time("model", 10, VP()), "model"),
    (lambda: mixture_collapse_time(GaussianMixture(np.zeros((2, 3))), 1, VP()), "n_train"),
    (lambda: mixture_mutual_information(GaussianMixture(np.zeros((2, 3))), 0.1, VP(),
                                        n_samples=1), "n_samples"),
    (lambda: speciation_time(GaussianMixture(np.zeros((2, 3))), VP(), form="exact"), "form"),
    (lambda: speciation_time(GaussianMixture(np.zeros((2, 3)), 4.0), VE(), form="published"),
     "form"),
    (lambda: speciation_time(GaussianMixture(np.zeros((2, 3)), 0.5), VP(), form="published"),
     "form"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()

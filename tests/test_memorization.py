"""Memorization measures (numerics/memorization.py) and the statistics of ``geomem
memorization`` (validation/memorization.py), each against an independent route."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from geomem.numerics.empirical import empirical_score
from geomem.numerics.memorization import (
    denoiser_rank,
    empirical_score_fn,
    memorized_fraction,
    population_score_fn,
    relative_score_distance,
    retained_dimensions,
    reverse_samples,
    score_jacobians,
    time_of_sigma,
)
from geomem.numerics.retained import RETAINED_DEFINITIONS
from geomem.numerics.score_mlp import torch_a_delta
from geomem.theory.manifold import LinearManifold
from geomem.theory.schedules import VE, VP, GeometricVE
from geomem.validation._memorization_tasks import GEOMETRIES, population_jacobian
from geomem.validation.memorization import fit_exponent, memorization_time, tau_summary

#: float64 closed forms against float64 autodiff: rounding only
EXACT_RTOL = 1e-10
#: float32 network evaluation of a float64 reference
FLOAT32_RTOL = 1e-5


def _gaussian():
    return GEOMETRIES["fig4-gaussian"]()


@given(st.floats(0.01, 2.0))
def test_time_of_sigma_inverts_the_schedules(sigma):
    for schedule in (GeometricVE(0.01, 2.0), VE(), VP()):
        t = time_of_sigma(schedule, sigma)
        a, delta = torch_a_delta(schedule, torch.tensor(t, dtype=torch.float64))
        np.testing.assert_allclose(float(torch.sqrt(delta) / a), sigma, rtol=1e-9)


def test_time_of_sigma_rejects_out_of_range():
    with pytest.raises(ValueError, match="sigma"):
        time_of_sigma(GeometricVE(0.01, 2.0), 5.0)


def test_population_score_is_the_gradient_of_the_gaussian_log_density():
    model = _gaussian()
    schedule = VP()
    t = 0.3
    a, delta = schedule.a(t), schedule.delta(t)
    cov = torch.as_tensor(a * a * model.covariance() + delta * np.eye(model.d))
    x = torch.randn(5, model.d, dtype=torch.float64, requires_grad=True)
    log_p = -0.5 * torch.einsum("bi,ij,bj->b", x, torch.linalg.inv(cov), x)
    (grad,) = torch.autograd.grad(log_p.sum(), x)
    score = population_score_fn(model, schedule)(x.detach(), t)
    np.testing.assert_allclose(score.numpy(), grad.numpy(), rtol=EXACT_RTOL)
    with pytest.raises(ValueError, match="un-normalised"):
        population_score_fn(LinearManifold.figure4(), schedule)


def test_empirical_score_fn_matches_the_numerics_kernel():
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((40, 6))
    X = rng.standard_normal((7, 6))
    schedule = VP()
    t = 0.2
    ours = empirical_score_fn(Y, schedule)(torch.as_tensor(X), t).numpy()
    ref = empirical_score(X, Y, a=schedule.a(t), delta=schedule.delta(t))
    np.testing.assert_allclose(ours, ref, rtol=EXACT_RTOL, atol=1e-12)


def test_score_jacobians_of_a_linear_score():
    A = np.random.default_rng(1).standard_normal((5, 5))
    At = torch.as_tensor(A, dtype=torch.float32)
    J = score_jacobians(lambda x, t: x @ At.T, np.zeros((3, 5)), 0.1)
    np.testing.assert_allclose(J, np.broadcast_to(A, (3, 5, 5)), rtol=FLOAT32_RTOL)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("definition", RETAINED_DEFINITIONS)
def test_population_jacobian_retains_every_tangent_direction(geometry, definition):
    model = GEOMETRIES[geometry]()
    for sigma in (0.02, 0.1):
        J = population_jacobian(model, 1.0, sigma**2)[None]
        counts = retained_dimensions(J, model, 1.0, sigma**2, definition=definition)
        np.testing.assert_allclose(counts[0], model.dims, atol=1e-9)
    # the denoiser of the population keeps the 7 tangent directions at sigma = 0.02
    assert denoiser_rank(population_jacobian(model, 1.0, 4e-4)[None], 1.0, 4e-4)[0] == 7


def test_denoiser_rank_of_a_memorizing_score_is_zero():
    # a single training point carries all the weight: J = -I/Delta, the denoiser is constant
    delta = 4e-4
    J = -np.eye(6)[None] / delta
    assert denoiser_rank(J, 1.0, delta)[0] == 0


def test_memorized_fraction_counts_near_copies():
    rng = np.random.default_rng(2)
    Y = rng.standard_normal((20, 5))
    copies = Y[:10] + 1e-3 * rng.standard_normal((10, 5))
    midpoints = 0.5 * (Y[:10] + Y[10:20])
    assert memorized_fraction(copies, Y) == 1.0
    assert memorized_fraction(np.vstack([copies, midpoints]), Y) == 0.5
    with pytest.raises(ValueError, match="2 training points"):
        memorized_fraction(copies, Y[:1])


def test_sampler_with_the_empirical_score_reproduces_training_points():
    # the exact empirical score is the fully memorizing limit: its probability-flow samples
    # end on training points (independent of any network)
    model = _gaussian()
    Y = model.sample(8, np.random.default_rng(3))
    schedule = GeometricVE(0.01, 5.0)
    samples = reverse_samples(empirical_score_fn(Y, schedule), schedule, 32, model.d,
                              steps=48, seed=1)
    assert memorized_fraction(samples, Y) >= 0.95


def test_sampler_with_the_population_score_generalizes():
    # the population score's samples follow the model: covariance close to the model's
    # along the std-1 subspace and no memorization of a 64-point training set
    model = _gaussian()
    schedule = GeometricVE(0.01, 10.0)
    samples = reverse_samples(population_score_fn(model, schedule), schedule, 400, model.d,
                              steps=48, seed=2)
    top = samples @ model.subspace_basis(0)
    assert np.all(np.abs(top.var(axis=0) - 1.0) < 0.25)   # ~4 standard errors at n = 400
    assert memorized_fraction(samples, model.sample(64, np.random.default_rng(4))) < 0.1


def test_relative_score_distance():
    model = _gaussian()
    schedule = GeometricVE(0.01, 2.0)
    pop = population_score_fn(model, schedule)
    X = model.sample(10, np.random.default_rng(5))
    assert relative_score_distance(pop, pop, X, 0.3) == pytest.approx(0.0, abs=1e-12)
    half = relative_score_distance(lambda x, t: 0.5 * pop(x, t), pop, X, 0.3)
    assert half == pytest.approx(0.25, rel=FLOAT32_RTOL)


# ----------------------------------------------------------------------------- statistics
def test_memorization_time_interpolates_in_log_steps():
    steps = [100, 1000, 10_000]
    assert memorization_time(steps, [7, 7, 0], 7) == pytest.approx(np.sqrt(1000 * 10_000))
    assert np.isnan(memorization_time(steps, [7, 5, 4], 7))          # censored
    assert memorization_time(steps, [1, 0, 0], 7) == 100             # memorized at once
    # crossing a quarter of the way between two snapshots, in log steps
    assert memorization_time([10, 1000], [4.5, 0.5], 7) == pytest.approx(10 * 100**0.25)


def test_tau_summary_censoring_and_interval():
    out = tau_summary([100.0, np.nan])
    assert out["tau_mem"] is None and out["n_censored"] == 1
    rng = np.random.default_rng(6)
    taus = np.exp(np.log(500) + 0.1 * rng.standard_normal(8))
    out = tau_summary(taus)
    assert out["tau_mem"] == pytest.approx(np.exp(np.mean(np.log(taus))))
    assert out["ci_low"] < out["tau_mem"] < out["ci_high"]
    assert out["ci_low"] < 500 < out["ci_high"]


def test_fit_exponent_recovers_a_power_law():
    rng = np.random.default_rng(7)
    n = np.repeat([16, 32, 64, 128, 256], 3)
    tau = 150 * n**1.1 * np.exp(0.05 * rng.standard_normal(n.size))
    fit = fit_exponent(n, tau)
    assert fit["ci_low"] < 1.1 < fit["ci_high"]
    assert fit["ci_high"] - fit["ci_low"] < 0.2
    censored = fit_exponent([16, 32], [np.nan, np.nan])
    assert censored["exponent"] is None

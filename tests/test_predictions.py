"""predicted_singular_values: shapes, ordering, limits and agreement between methods."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

# H1a's theory/population.py and theory/published.py are prerequisites of the REM modules
pytest.importorskip("geomem.theory.population")
pytest.importorskip("geomem.theory.published")
from hypothesis import given, settings
from hypothesis import strategies as st

from geomem.theory import VE, VP, LinearManifold
from geomem.theory.population import effective_direction_variances, population_singular_values
from geomem.theory.predictions import predicted_singular_values, rem_singular_values

FIG4 = LinearManifold.figure4(theory=True)
UNNORM = LinearManifold(12, (2, 3), stds=(1.0, 0.3), residual_std=0.01, basis="random", seed=1)


@pytest.mark.parametrize("method", ["population", "paper", "rem"])
def test_shapes_and_sorted_descending(method):
    t = np.geomspace(1e-3, 1, 4)[:, None]
    n = np.array([10, 1000, 1e6])
    sv = predicted_singular_values(FIG4, t, n, VE(), method)
    assert sv.shape == (4, 3, 30)
    assert np.all(np.isfinite(sv)) and np.all(sv > 0)
    assert np.all(np.diff(sv, axis=-1) <= 0)


@settings(max_examples=15, deadline=None)
@given(log_t=st.floats(-8, 1), log10_n=st.floats(0.31, 12))
def test_rem_between_population_and_one_over_delta(log_t, log10_n):
    t = np.exp(log_t)
    for schedule in (VE(), VP()):
        rem = predicted_singular_values(UNNORM, t, 10**log10_n, schedule, "rem",
                                        test_point="annealed")
        pop = predicted_singular_values(UNNORM, t, 10**log10_n, schedule, "population")
        inv_delta = 1.0 / float(schedule.delta(t))
        assert np.all(rem >= pop * (1 - 1e-12))
        assert np.all(rem <= inv_delta * (1 + 1e-12))


def test_rem_tends_to_population_as_n_grows():
    t = np.geomspace(1e-4, 1, 6)
    for schedule in (VE(), VP()):
        pop = predicted_singular_values(FIG4, t, 10, schedule, "population")
        for test_point in ("average", "annealed"):
            far = predicted_singular_values(FIG4, t, 1e300, schedule, "rem", test_point=test_point)
            np.testing.assert_allclose(far, pop, rtol=1e-12)
        gaps = [np.max(np.abs(predicted_singular_values(FIG4, t, n, schedule, "rem",
                                                        test_point="annealed") / pop - 1))
                for n in (10, 1e3, 1e6, 1e12)]
        assert np.all(np.diff(gaps) <= 0) and gaps[0] > 0.5


# ----------------------------------------------------------------------------- independent routes
#: brentq to float64 resolution on hand-written KL sums (accurate to ~1e-13): the predicted
#: spectra 1/(Delta + lam a^2 v) inherit the root's relative error at most
ROOT_RTOL = 1e-10


def _kl_by_hand(lam, v, a, delta, x_sq):
    """KL(q_lam||p) of THEORY §5b summed over directions, from q_lam = N(mu, 1/P) per
    direction: P = 1 + lam a^2 v/Delta, mu = lam a sqrt(v) x/(Delta P), KL = (1/P + mu^2 - 1 +
    ln P)/2; x_sq is x_i^2 in model coordinates, or its mean a^2 v + Delta (annealed)."""
    y = lam * a * a * v / delta
    mu_sq = (lam * a / (delta * (1.0 + y))) ** 2 * v * x_sq
    return 0.5 * float(np.sum(np.log1p(y) - y / (1.0 + y) + mu_sq))


def _lam_by_root(v, a, delta, n, x_sq):
    """lam* = 1 where KL(q_1||p) <= ln N, else the root of KL(q_lam||p) = ln N (brentq)."""
    if _kl_by_hand(1.0, v, a, delta, x_sq) <= math.log(n):
        return 1.0
    return optimize.brentq(lambda lam: _kl_by_hand(lam, v, a, delta, x_sq) - math.log(n),
                           0.0, 1.0, xtol=1e-300, rtol=1e-15, maxiter=500)


@pytest.mark.parametrize("model", [FIG4, UNNORM], ids=["fig4", "unnormalised"])
@pytest.mark.parametrize("schedule", [VE(), VP()], ids=["VE", "VP"])
def test_annealed_branch_against_independent_root(model, schedule):
    """test_point="annealed": lam* by brentq on the hand-written E_x KL(q_lam||p) (E x_i^2 =
    a^2 v_i + Delta), then 1/(Delta + lam* a^2 v_i) sorted. Kills a^2 -> a (VP), v -> sqrt(v),
    lam* dropped, N ignored, the quenched average in place of the annealed one, and a dropped
    (1 + r) in the annealed mean."""
    v = effective_direction_variances(model)
    t_values = np.geomspace(1e-3, 0.5, 6) if isinstance(schedule, VE) else np.geomspace(
        1e-3, 0.3, 6)
    condensed = 0
    for n in (10.0, 1e3, 1e6):
        got = predicted_singular_values(model, t_values, n, schedule, "rem",
                                        test_point="annealed")
        for i, t in enumerate(t_values):
            a, delta = float(schedule.a(t)), float(schedule.delta(t))
            lam = _lam_by_root(v, a, delta, n, a * a * v + delta)
            condensed += lam < 1.0
            want = -np.sort(-1.0 / (delta + lam * a * a * v))
            np.testing.assert_allclose(got[i], want, rtol=ROOT_RTOL)
    assert 0 < condensed < 18  # both phases are covered


def test_explicit_test_points_against_independent_root():
    """test_point=x: lam*(x) by brentq on the hand-written KL at each x (FIG4 has the axis
    basis, so model coordinates are x itself); the spectrum is 1/(t + lam*(x) v_i) (VE)."""
    t, n = 0.003, 500
    x = FIG4.sample(7, 0) + np.sqrt(t) * np.random.default_rng(1).standard_normal((7, 30))
    per_point = predicted_singular_values(FIG4, t, n, VE(), "rem", test_point=x)
    assert per_point.shape == (7, 30)
    v = effective_direction_variances(FIG4)
    for row, xi in zip(per_point, x, strict=True):
        lam = _lam_by_root(v, 1.0, t, n, xi**2)
        assert lam < 1.0
        np.testing.assert_allclose(row, -np.sort(-1.0 / (t + lam * v)), rtol=ROOT_RTOL)
    avg = predicted_singular_values(FIG4, t, n, VE(), "rem")
    assert np.all(np.isfinite(avg))


def test_population_method_ignores_n_but_validates_it():
    t = np.array([0.01, 0.1])
    np.testing.assert_allclose(predicted_singular_values(FIG4, t, 20, VP(), "population"),
                               population_singular_values(FIG4, t, VP()))
    with pytest.raises(ValueError, match="n_train"):
        predicted_singular_values(FIG4, t, 1, VP(), "population")


def test_bad_inputs():
    with pytest.raises(ValueError, match="method"):
        predicted_singular_values(FIG4, 0.1, 10, VE(), "exact")
    with pytest.raises(ValueError, match="schedule must be VE"):
        predicted_singular_values(FIG4, 0.1, 10, VP(), "paper")
    with pytest.raises(ValueError, match="test_point"):
        predicted_singular_values(FIG4, 0.1, 10, VE(), "rem", test_point="origin")
    with pytest.raises(ValueError, match="t out of range"):
        predicted_singular_values(FIG4, -0.1, 10, VE(), "rem")
    with pytest.raises(ValueError, match="n_train"):
        predicted_singular_values(FIG4, 0.1, 0.5, VE(), "rem")
    with pytest.raises(ValueError, match="schedule"):
        predicted_singular_values(FIG4, 0.1, 10, "EDM", "rem")
    with pytest.raises(ValueError, match="lam"):
        rem_singular_values(FIG4, 0.1, 0.0, VE())


def test_paper_method_depends_on_n_train():
    """method="paper" is the published formula at the given N (sorted), not at a fixed N:
    two N give two different spectra, each the sorted paper_singular_values."""
    from geomem.theory import paper_singular_values

    t = np.array([0.01, 0.05])
    spectra = []
    for n in (20.0, 1e6):
        got = predicted_singular_values(FIG4, t, n, VE(), "paper")
        want = -np.sort(-paper_singular_values(FIG4, t, n, VE(), sort=False), axis=-1)
        np.testing.assert_allclose(got, want, rtol=1e-14)
        spectra.append(got)
    assert np.max(np.abs(spectra[0] - spectra[1]) / spectra[1]) > 0.1

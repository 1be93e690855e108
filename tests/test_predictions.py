"""predicted_singular_values: shapes, ordering, limits and agreement between methods."""

from __future__ import annotations

import numpy as np
import pytest

# H1a's theory/population.py and theory/published.py are prerequisites of the REM modules
pytest.importorskip("geomem.theory.population")
pytest.importorskip("geomem.theory.published")
from hypothesis import given, settings
from hypothesis import strategies as st

from geomem.theory import VE, VP, LinearManifold
from geomem.theory.population import effective_direction_variances, population_singular_values
from geomem.theory.predictions import predicted_singular_values, rem_singular_values
from geomem.theory.rem import annealed_freezing_parameter, freezing_parameter

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


def test_rem_formula_and_test_point_options():
    t, n = 0.003, 500
    lam = float(annealed_freezing_parameter(FIG4, t, n, VE()))
    want = -np.sort(-rem_singular_values(FIG4, t, lam, VE()))
    got = predicted_singular_values(FIG4, t, n, VE(), "rem", test_point="annealed")
    np.testing.assert_allclose(got, want, rtol=1e-14)
    x = FIG4.sample(7, 0) + np.sqrt(t) * np.random.default_rng(1).standard_normal((7, 30))
    per_point = predicted_singular_values(FIG4, t, n, VE(), "rem", test_point=x)
    lam_x = freezing_parameter(FIG4, t, n, VE(), x=x)
    assert per_point.shape == (7, 30)
    v_max = float(np.max(effective_direction_variances(FIG4)))
    np.testing.assert_allclose(per_point[:, -1], 1.0 / (t + lam_x * v_max), rtol=1e-12)
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

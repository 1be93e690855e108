"""The published theory (THEORY §5a): closed-form t_c,i, sigma_i(t), the authors' figure curve."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomem.theory import VE, VP, GeometricVE, LinearManifold
from geomem.theory.published import (
    direction_condensation_times,
    paper_figure_curve,
    paper_singular_values,
)

# the reference loop and the vectorised code do the same float64 operations in another order
LOOP_RTOL = 1e-12

FIG4 = LinearManifold.figure4(theory=True)


@st.composite
def models(draw, normalized=None):
    d = draw(st.integers(2, 8))
    k = draw(st.integers(1, min(3, d)))
    dims = draw(st.lists(st.integers(1, 2), min_size=k, max_size=k).filter(lambda x: sum(x) <= d))
    stds = draw(st.lists(st.floats(0.05, 2.0), min_size=k, max_size=k))
    norm = draw(st.booleans()) if normalized is None else normalized
    return LinearManifold(d, dims, stds=stds, residual_std=draw(st.sampled_from([0.0, 1e-3])),
                          normalized=norm)


def paper_loop(stds, normalized, t, n_train):
    """sigma_i(t) written directly from the THEORY §5a text, one direction at a time."""
    g = 0.0 if normalized else 1.0
    s4 = sum(s**4 for s in stds)
    ln_n = math.log(n_train)
    t_c0 = math.sqrt(g * s4 / 2 / (2 * ln_n))
    phi_0 = max(0.0, 1 / t - 1 / t_c0) if t_c0 > 0 else 0.0
    big_f = sum(s**2 / (t**2 * (t + s**2)) for s in stds)
    out = []
    for s in stds:
        t_ci = math.sqrt((g * s4 / 2 + t * s**2) / (2 * ln_n))
        phi_i = max(0.0, 1 / t - 1 / t_ci) if t_ci > 0 else 0.0
        v_i = big_f * (phi_0 + phi_i)
        out.append(math.sqrt((1 / (t + s**2)) ** 2 + v_i**2))
    return sorted(out, reverse=True)


@given(model=models(), t=st.floats(1e-3, 3.0), n_train=st.floats(2.0, 1e8))
@settings(max_examples=60, deadline=None)
def test_matches_loop_from_theory_text(model, t, n_train):
    expected = paper_loop(model.direction_stds, model.normalized, t, n_train)
    np.testing.assert_allclose(paper_singular_values(model, t, n_train), expected, rtol=LOOP_RTOL)


def test_figure_curve_matches_loop():
    t, curve = paper_figure_curve()
    np.testing.assert_array_equal(t, np.linspace(1, 0.005, 200))
    assert curve.shape == (200, 23)
    stds = [1.0] * 2 + [0.3] * 5 + [1e-6] * 23
    for i in (0, 37, 120, 171, 185, 199):
        row = np.asarray(paper_loop(stds, True, t[i], 1000))[7:]
        np.testing.assert_allclose(curve[i], row / row.max(), rtol=LOOP_RTOL)
    assert np.all(curve.max(axis=1) == 1.0) and np.all(curve > 0)
    assert np.all(np.diff(curve, axis=1) <= 0)


def test_figure4_condensation_times():
    tc = direction_condensation_times(FIG4, 1000)
    ln_n = math.log(1000)
    # normalised data: g = 0, t_c,i = s_i^2 / (2 ln N)
    np.testing.assert_allclose(tc[:2], 1.0 / (2 * ln_n), rtol=1e-14)
    np.testing.assert_allclose(tc[2:7], 0.09 / (2 * ln_n), rtol=1e-14)
    np.testing.assert_allclose(tc[7:], 1e-12 / (2 * ln_n), rtol=1e-12)
    # the std-1 subspace is lost first (at the larger time) under the published criterion
    assert tc[0] > tc[2] > tc[7]


@given(model=models(), n_train=st.floats(2.0, 1e12))
@settings(max_examples=40, deadline=None)
def test_condensation_time_is_the_fixed_point(model, n_train):
    tc = direction_condensation_times(model, n_train)
    s2 = model.direction_stds**2
    g = 0.0 if model.normalized else 1.0
    rhs = np.sqrt((g * np.sum(s2**2) / 2 + tc * s2) / (2 * math.log(n_train)))
    np.testing.assert_allclose(rhs, tc, rtol=1e-12, atol=1e-300)
    # phi_i switches on exactly below t_c,i: just above, only the phi_0 term remains
    i = int(np.argmax(tc))
    t_above, t_below = tc[i] * (1 + 1e-9), tc[i] * 0.5
    above = paper_singular_values(model, t_above, n_train, sort=False)[i]
    below = paper_singular_values(model, t_below, n_train, sort=False)[i]
    expected = np.hypot(1 / (t_above + s2[i]), _phi0_term(model, t_above, n_train))
    assert above == pytest.approx(expected, rel=1e-9)
    assert below > np.hypot(1 / (t_below + s2[i]), _phi0_term(model, t_below, n_train))


def _phi0_term(model, t, n_train):
    """F(t) phi_0(t) (the direction-independent fluctuation term)."""
    s2 = model.direction_stds**2
    g = 0.0 if model.normalized else 1.0
    t_c0 = math.sqrt(g * np.sum(s2**2) / 2 / (2 * math.log(n_train)))
    phi_0 = max(0.0, 1 / t - 1 / t_c0) if t_c0 > 0 else 0.0
    return np.sum(s2 / (t**2 * (t + s2))) * phi_0


@given(model=models(), n_small=st.floats(2.0, 1e6), factor=st.floats(1.5, 1e6))
@settings(max_examples=40, deadline=None)
def test_condensation_time_monotone(model, n_small, factor):
    times = direction_condensation_times(model, [n_small, n_small * factor])
    assert times.shape == (2, model.d)
    assert np.all(times[1] <= times[0]) and np.all(times[1][times[0] > 0] < times[0][times[0] > 0])
    # increasing in s_i: order of the stds is the order of the times
    order = np.argsort(model.direction_stds, kind="stable")
    assert np.all(np.diff(times[0][order]) >= 0)
    stds = model.direction_stds
    strictly = np.diff(stds[order]) > 0
    assert np.all(np.diff(times[0][order])[strictly] > 0)


@given(model=models(), t=st.floats(0.5, 10.0))
@settings(max_examples=25, deadline=None)
def test_large_n_limit_is_population_with_raw_stds(model, t):
    values = paper_singular_values(model, t, 1e300)
    expected = np.sort(1.0 / (t + model.direction_stds**2))[::-1]
    np.testing.assert_allclose(values, expected, rtol=1e-14)


@given(model=models(), t=st.lists(st.floats(1e-3, 2.0), min_size=1, max_size=5))
@settings(max_examples=25, deadline=None)
def test_shape_sorted_and_monotone_in_n(model, t):
    t = np.asarray(t)[:, None]
    n = np.array([10.0, 1e3, 1e6])
    values = paper_singular_values(model, t, n)
    assert values.shape == (t.shape[0], 3, model.d)
    assert np.all(np.diff(values, axis=-1) <= 0)
    unsorted = paper_singular_values(model, t, n, sort=False)
    # never below the N = infinity value, and decreasing towards it as N grows
    assert np.all(unsorted >= 1.0 / (t[..., None] + model.direction_stds**2) * (1 - 1e-14))
    assert np.all(np.diff(unsorted, axis=1) <= 1e-12 * unsorted[:, 1:])


def test_bad_input():
    with pytest.raises(ValueError, match="n_train out of range"):
        direction_condensation_times(FIG4, 1.5)
    with pytest.raises(ValueError, match="n_train out of range"):
        paper_singular_values(FIG4, 0.1, [1000, 1])
    with pytest.raises(ValueError, match="t out of range"):
        paper_singular_values(FIG4, 0.0, 1000)
    with pytest.raises(ValueError, match="t out of range"):
        paper_singular_values(FIG4, [0.1, -0.1], 1000)
    for schedule in (VP(), GeometricVE(), "VP", "DDPM"):
        with pytest.raises(ValueError, match="schedule must be VE"):
            paper_singular_values(FIG4, 0.1, 1000, schedule)
    with pytest.raises(ValueError, match="model"):
        direction_condensation_times(None, 1000)
    with pytest.raises(ValueError, match="drop_largest"):
        paper_figure_curve(drop_largest=30)
    with pytest.raises(ValueError, match="one-dimensional"):
        paper_figure_curve(t=np.ones((2, 2)))
    # VE() explicitly is accepted, as is the name
    np.testing.assert_array_equal(paper_singular_values(FIG4, 0.1, 1000, VE()),
                                  paper_singular_values(FIG4, 0.1, 1000, "VE"))

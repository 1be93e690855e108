"""phase_diagram: shapes, definitions, consistency of grid classification and boundaries."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import optimize

# H1a's theory/population.py and theory/published.py are prerequisites of the REM modules
pytest.importorskip("geomem.theory.population")
pytest.importorskip("geomem.theory.published")

from geomem.theory import VE, VP, GeometricVE, LinearManifold
from geomem.theory.phase import LOSS_FRACTION, PhaseDiagram, phase_diagram
from geomem.theory.population import effective_direction_variances, population_singular_values
from geomem.validation.records import to_jsonable

FIG4 = LinearManifold.figure4(theory=True)
N_VALUES = np.geomspace(3, 1e6, 9)
T_VALUES = np.geomspace(1e-5, 1, 41)
#: an un-normalised model (g = 1 in the published rule: t_c0 > 0, phi_0 != 0)
PAPER_UNNORM = LinearManifold(12, (2, 3), stds=(1.0, 0.3), residual_std=0.01)


@pytest.mark.parametrize("method", ["paper", "rem"])
def test_shapes_ranges_and_read_only(method):
    pd = phase_diagram(FIG4, N_VALUES, T_VALUES, VE(), method)
    assert pd.condensed.shape == pd.retained_fraction.shape == (9, 41, 2)
    assert pd.condensed.dtype == bool and pd.globally_condensed.shape == (9, 41)
    assert pd.subspace_boundary.shape == (9, 2) and pd.global_boundary.shape == (9,)
    assert np.all((pd.retained_fraction >= 0) & (pd.retained_fraction <= 1))
    assert np.all(np.isfinite(pd.collapse_time))
    with pytest.raises(ValueError):
        pd.retained_fraction[0, 0, 0] = 0.5
    rows = pd.to_rows()
    assert len(rows) == 9 * 41 * 2
    assert set(rows[0]) == {"N", "t", "subspace", "method", "condensed", "retained_fraction"}
    # large t: nothing lost; small t, small N: something lost
    assert not pd.condensed[:, -1].any() and pd.globally_condensed[0, 0]


# ----------------------------------------------------------------------------- references
# Independent routes for the "rem" and "paper" definitions: every reference below is written
# from THEORY §5 / §5b / §5c and solved by scipy (brentq), never by the functions phase.py calls.

#: brentq runs to xtol 1e-300, rtol 1e-15 (float64 roots); the hand-written KL and threshold
#: sums are accurate to ~1e-13, so the solvers and the references agree to this
ROOT_RTOL = 1e-10
#: retained fractions from the gap-ratio definition vs the solver's simplified closed form
#: (both in float64, the gaps are >= 1e-2 of 1/Delta on this grid)
FRACTION_RTOL = 1e-9
#: grid points this close to the LOSS_FRACTION threshold (or lam* to 1) are not classified
THRESHOLD_SLACK = 1e-9


def _brentq(f, lo, hi):
    return optimize.brentq(f, lo, hi, xtol=1e-300, rtol=1e-15, maxiter=500)


def _annealed_kl_by_hand(lam, v, a, delta):
    """E_x KL(q_lam||p) per THEORY §5b, direction by direction: q_lam = N(mu, 1/P) with
    P = 1 + lam a^2 v/Delta and mu = lam a sqrt(v) x/(Delta P); KL = (1/P + mu^2 - 1 + ln P)/2
    and E x^2 = a^2 v + Delta over fresh x ~ p_t."""
    y = lam * a * a * v / delta
    mean_sq = (lam * a * np.sqrt(v) / (delta * (1.0 + y))) ** 2 * (a * a * v + delta)
    return 0.5 * float(np.sum(np.log1p(y) - y / (1.0 + y) + mean_sq))


def _annealed_lam_by_root(v, a, delta, n):
    """lam* = 1 where E_x KL(q_1||p) <= ln N, else the root of E_x KL(q_lam||p) = ln N."""
    log_n = math.log(n)
    if _annealed_kl_by_hand(1.0, v, a, delta) <= log_n:
        return 1.0
    return _brentq(lambda lam: _annealed_kl_by_hand(lam, v, a, delta) - log_n, 0.0, 1.0)


def _vp_collapse_time_by_root(v, n):
    """t_C(N) under VP: root l of sum_i ln(1 + v_i e^l)/2 = ln N, then t = ln(1 + e^-l)/2
    (a = e^-t, Delta = 1 - e^-2t give a^2/Delta = 1/(e^2t - 1))."""
    level = _brentq(lambda lv: 0.5 * float(np.sum(np.log1p(v * math.exp(lv)))) - math.log(n),
                    -60.0, 80.0)
    return 0.5 * math.log1p(math.exp(-level))


def _first_direction(model, k):
    return int(np.flatnonzero(model.direction_subspace == k)[0])


def test_rem_definitions_against_independent_roots():
    """"rem" on VP (a != 1): lam* by brentq on the hand-written annealed KL, t_C by brentq on
    the threshold sum, and the retained fraction from its definition -- the gap
    1/Delta - sigma_k of the REM spectrum sigma_k = 1/(Delta + lam* a^2 v_k) over the gap of
    the population spectrum (population_singular_values) -- on both scales. Kills a^2 -> a,
    v -> sqrt(v) (s^2 -> s), a dropped (1 + r) term, N ignored, lam* < 1 -> <= 1, the log
    scale's denominator mutated, and any change of the annealed KL."""
    schedule, n_values, t_values = VP(), N_VALUES[::2], T_VALUES[::4]
    pd = phase_diagram(FIG4, n_values, t_values, schedule, "rem")
    log = phase_diagram(FIG4, n_values, t_values, schedule, "rem", gap="log")
    v = effective_direction_variances(FIG4)
    a, delta = schedule.a(t_values), schedule.delta(t_values)
    lam = np.array([[_annealed_lam_by_root(v, a[j], delta[j], n) for j in range(t_values.size)]
                    for n in n_values])
    assert 0.0 < lam.min() < 0.1 and np.any(lam == 1.0)  # the grid spans both phases
    np.testing.assert_allclose(pd.freezing_parameter, lam, rtol=ROOT_RTOL)
    np.testing.assert_allclose(log.freezing_parameter, lam, rtol=ROOT_RTOL)
    # globally condensed <=> lam* < 1 <=> t < t_C(N)
    t_c = np.array([_vp_collapse_time_by_root(v, n) for n in n_values])
    np.testing.assert_allclose(pd.global_boundary, t_c, rtol=ROOT_RTOL)
    np.testing.assert_allclose(pd.collapse_time, t_c, rtol=ROOT_RTOL)
    clear = np.abs(t_values[None, :] / t_c[:, None] - 1.0) > THRESHOLD_SLACK
    want_global = t_values[None, :] < t_c[:, None]
    np.testing.assert_array_equal(pd.globally_condensed[clear], want_global[clear])
    np.testing.assert_array_equal(log.globally_condensed[clear], want_global[clear])
    # retained fraction from the gap-ratio definition (THEORY §5c)
    first = [_first_direction(FIG4, k) for k in range(FIG4.n_subspaces)]
    sigma_inf = population_singular_values(FIG4, t_values, schedule, sort=False)[:, first]
    vk = v[first]
    inv_delta = (1.0 / delta)[None, :, None]
    sigma = 1.0 / (delta[None, :, None] + lam[..., None] * (a * a)[None, :, None] * vk)
    for diagram, want in (
            (pd, (inv_delta - sigma) / (inv_delta - sigma_inf[None])),
            (log, np.log(inv_delta / sigma) / np.log(inv_delta / sigma_inf[None]))):
        want = np.clip(want, 0.0, 1.0)
        np.testing.assert_allclose(diagram.retained_fraction, want, rtol=FRACTION_RTOL,
                                   atol=1e-15)
        clear = np.abs(want - LOSS_FRACTION) > THRESHOLD_SLACK
        np.testing.assert_array_equal(diagram.condensed[clear], (want < LOSS_FRACTION)[clear])
        assert diagram.condensed.any() and not diagram.condensed.all()
    # the smaller-variance subspace keeps the smaller fraction of its gap, on both scales
    assert np.all(pd.retained_fraction[..., 1] <= pd.retained_fraction[..., 0] + 1e-12)
    assert np.all(log.retained_fraction[..., 1] <= log.retained_fraction[..., 0] + 1e-12)
    # ln(1 + lam r)/ln(1 + r) >= lam (1 + r)/(1 + lam r) never holds strictly: log loses more
    assert np.all(log.retained_fraction <= pd.retained_fraction + 1e-12)
    assert log.condensed.sum() > pd.condensed.sum()


@pytest.mark.parametrize("gap", ["linear", "log"])
def test_rem_subspace_boundary_is_largest_lost_time(gap):
    n_values = np.array([2.0, 3.0, 5.0, 8.0, 30.0, 1e4, 1e9])
    dense_t = np.geomspace(1e-9, 10, 600)
    pd = phase_diagram(FIG4, n_values, dense_t, VE(), "rem", gap=gap)
    boundary = pd.subspace_boundary
    if gap == "linear":  # the linear gap is lost only at small N
        assert np.any(np.isfinite(boundary)) and np.any(np.isnan(boundary))
    else:  # the log gap is lost at every N, the smaller-variance subspace first
        assert np.all(np.isfinite(boundary))
        assert np.all(boundary[:, 1] > boundary[:, 0])
    for i in range(n_values.size):
        for k in range(2):
            lost_t = dense_t[pd.condensed[i, :, k]]
            if np.isnan(boundary[i, k]):
                assert lost_t.size == 0
            else:
                assert lost_t.size > 0
                # grid points above the boundary are kept, the largest lost point is just below
                assert lost_t.max() <= boundary[i, k] * (1 + 1e-9)
                assert lost_t.max() > boundary[i, k] / (dense_t[1] / dense_t[0]) ** 1.01


def _paper_sigma_by_hand(model, t, n):
    """The published spectrum (THEORY §5), a plain loop over directions written from the text:
    t_c,i(t) = sqrt((g S4/2 + t s_i^2)/(2 ln N)), phi_i = max(0, 1/t - 1/t_c,i(t)),
    phi_0 = max(0, 1/t - 1/t_c0) with t_c0 = sqrt(g S4/2/(2 ln N)) (0 when g = 0),
    F = sum_j s_j^2/(t^2 (t + s_j^2)), sigma_i = sqrt((1/(t + s_i^2))^2 + (F (phi_0 + phi_i))^2)."""
    s2 = [float(s) ** 2 for s in model.direction_stds]
    g = 0.0 if model.normalized else 1.0
    half_g_s4 = g * sum(x * x for x in s2) / 2.0
    log_n = math.log(n)
    fluct = sum(x / (t * t * (t + x)) for x in s2)
    t_c0 = math.sqrt(half_g_s4 / (2.0 * log_n))
    phi_0 = max(0.0, 1.0 / t - 1.0 / t_c0) if t_c0 > 0 else 0.0
    out = []
    for x in s2:
        t_ci = math.sqrt((half_g_s4 + t * x) / (2.0 * log_n))
        phi_i = max(0.0, 1.0 / t - 1.0 / t_ci) if t_ci > 0 else 0.0
        out.append(math.hypot(1.0 / (t + x), fluct * (phi_0 + phi_i)))
    return np.array(out)


def _paper_time_by_root(model, s, n):
    """The fixed point t = t_c(t) of the paper's rule for a direction of std s, by brentq
    (not the quadratic's closed-form root)."""
    s2 = np.asarray(model.direction_stds) ** 2
    half_g_s4 = (0.0 if model.normalized else 1.0) * float(np.sum(s2**2)) / 2.0
    log_n = math.log(n)
    return _brentq(lambda t: t - math.sqrt((half_g_s4 + t * s * s) / (2.0 * log_n)),
                   1e-300, 10.0 * (1.0 + s * s + half_g_s4))


@pytest.mark.parametrize("model", [FIG4, PAPER_UNNORM], ids=["fig4-normalised", "unnormalised"])
def test_paper_definitions_against_independent_routes(model):
    """"paper": the boundary t_c,k(N) by brentq on the fixed point t = t_c(t) (normalised g = 0:
    also s_k^2/(2 ln N) by hand), lost <=> t < t_c,k, globally lost <=> some subspace lost, and
    the retained fraction from the published spectrum by a hand-written loop, against
    sigma_inf = 1/(t + s_k^2). Kills s^2 -> s in sigma_inf, N ignored, max -> min for the global
    boundary, a factor 2 in the condensation time, and changes of the published spectrum."""
    n_values, t_values = np.array([3.0, 50.0, 1e4, 1e8]), np.geomspace(1e-3, 0.5, 9)
    pd = phase_diagram(model, n_values, t_values, VE(), "paper")
    log = phase_diagram(model, n_values, t_values, VE(), "paper", gap="log")
    assert pd.freezing_parameter is None
    boundary = np.array([[_paper_time_by_root(model, s, n) for s in model.stds]
                         for n in n_values])
    if model.normalized:
        np.testing.assert_allclose(boundary, np.square(model.stds)[None, :]
                                   / (2.0 * np.log(n_values))[:, None], rtol=ROOT_RTOL)
    np.testing.assert_allclose(pd.subspace_boundary, boundary, rtol=ROOT_RTOL)
    np.testing.assert_allclose(pd.global_boundary, boundary.max(axis=-1), rtol=ROOT_RTOL)
    lost = t_values[None, :, None] < boundary[:, None, :]
    assert lost.any() and not lost.all()
    np.testing.assert_array_equal(pd.condensed, lost)
    np.testing.assert_array_equal(pd.globally_condensed, lost.any(axis=-1))
    # retained fraction (THEORY §5c) from the hand-written published spectrum
    first = [_first_direction(model, k) for k in range(model.n_subspaces)]
    sigma = np.array([[_paper_sigma_by_hand(model, t, n)[first] for t in t_values]
                      for n in n_values])
    inv_t = (1.0 / t_values)[None, :, None]
    sigma_inf = 1.0 / (t_values[None, :, None] + np.square(model.stds))
    for diagram, want in ((pd, (inv_t - sigma) / (inv_t - sigma_inf)),
                          (log, np.log(inv_t / sigma) / np.log(inv_t / sigma_inf))):
        np.testing.assert_allclose(diagram.retained_fraction, np.clip(want, 0.0, 1.0),
                                   rtol=FRACTION_RTOL, atol=1e-15)
        # a subspace keeps its whole gap exactly when the paper does not count it lost
        np.testing.assert_array_equal(diagram.retained_fraction < 1.0 - 1e-12, lost)
    # just below each boundary the published values lie between sigma_inf and 1/t, so the
    # fraction is strictly inside (0, 1) and tests the spectrum itself (deeper it clips to 0)
    below = 1.0 - np.array([1e-4, 1e-3, 1e-2, 3e-2, 0.1])
    inside = 0
    for i, n in enumerate(n_values):
        for k in range(model.n_subspaces):
            ts = boundary[i, k] * below
            sigma = np.array([_paper_sigma_by_hand(model, t, n)[first[k]] for t in ts])
            sigma_inf = 1.0 / (ts + model.stds[k] ** 2)
            for gap, want in (("linear", (1 / ts - sigma) / (1 / ts - sigma_inf)),
                              ("log", np.log(1 / (ts * sigma)) / np.log(1 / (ts * sigma_inf)))):
                got = phase_diagram(model, [n], ts, VE(), "paper", gap=gap)
                want = np.clip(want, 0.0, 1.0)
                np.testing.assert_allclose(got.retained_fraction[0, :, k], want,
                                           rtol=FRACTION_RTOL, atol=1e-15)
                inside += int(np.sum((want > 0.01) & (want < 0.99)))
    assert inside >= 10
    # published theory: the higher-variance subspace is lost first
    assert np.all(pd.subspace_boundary[:, 0] > pd.subspace_boundary[:, 1])
    # N -> infinity: the paper's spectrum is 1/(t + s^2), so every gap is fully retained once
    # t is above the last condensation time (g = 1: t_c0 ~ (ln N)^-1/2 decays slowly)
    huge = phase_diagram(model, [1e300], t_values, VE(), "paper")
    above = t_values > max(_paper_time_by_root(model, s, 1e300) for s in model.stds)
    assert above.sum() >= 4
    np.testing.assert_allclose(huge.retained_fraction[:, above], 1.0, rtol=1e-12)


def test_round_trip_through_json():
    for method, gap in (("paper", "log"), ("rem", "linear")):
        pd = phase_diagram(FIG4, N_VALUES[:3], T_VALUES[::10], VE(), method, gap=gap)
        back = PhaseDiagram.from_dict(json.loads(json.dumps(to_jsonable(pd.to_dict()))))
        for name, value in pd.__dict__.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(getattr(back, name), value)
            else:
                assert getattr(back, name) == value


def test_bounded_schedule_nan_outside_domain():
    pd = phase_diagram(FIG4, [10.0, 1e12], [0.1, 0.5, 1.0], GeometricVE(), "rem")
    assert np.isnan(pd.collapse_time[1])  # t_C < 0 in the geometric-VE parametrisation
    assert np.isfinite(pd.collapse_time[0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="method"):
        phase_diagram(FIG4, N_VALUES, T_VALUES, VE(), "population")
    with pytest.raises(ValueError, match="gap"):
        phase_diagram(FIG4, N_VALUES, T_VALUES, VE(), "rem", gap="relative")
    with pytest.raises(ValueError, match="schedule must be VE"):
        phase_diagram(FIG4, N_VALUES, T_VALUES, VP(), "paper")
    with pytest.raises(ValueError, match="n_train"):
        phase_diagram(FIG4, [1.0, 10.0], T_VALUES, VE(), "rem")
    with pytest.raises(ValueError, match="t_values"):
        phase_diagram(FIG4, N_VALUES, [0.0, 1.0], VE(), "rem")
    with pytest.raises(ValueError, match="n_train_values"):
        phase_diagram(FIG4, [[10.0]], T_VALUES, VE(), "rem")
    with pytest.raises(ValueError, match="model"):
        phase_diagram(None, N_VALUES, T_VALUES, VE(), "rem")

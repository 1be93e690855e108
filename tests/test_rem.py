"""Large-deviation REM (theory/rem.py): closed forms, limits, monotonicity, independent routes."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

# H1a's theory/population.py and theory/published.py are prerequisites of the REM modules
pytest.importorskip("geomem.theory.population")
pytest.importorskip("geomem.theory.published")
from hypothesis import example, given, settings
from hypothesis import strategies as st

from geomem.theory import DDPM, VE, VP, GeometricVE, LinearManifold
from geomem.theory.population import effective_direction_variances
from geomem.theory.rem import (
    annealed_freezing_parameter,
    annealed_tilted_kl,
    collapse_log_snr,
    collapse_time,
    condensation_threshold,
    freezing_parameter,
    tilted_kl,
)

#: closed forms evaluated in float64 (expm1 form) agree with the solver to this relative error
CLOSED_FORM_RTOL = 1e-11
#: quadrature average of lam* vs a seeded 40k-sample Monte Carlo, in MC standard errors: the
#: 32-node rule agrees with 64 nodes to <= 3e-5 (~0.03 SE here), so the MC error dominates
QUADRATURE_Z_MAX = 4.0

FIG4 = LinearManifold.figure4(theory=True)


def _isotropic(d, s, m=None, **kw):
    return LinearManifold(d, (m or d,), stds=s, **kw)


# ----------------------------------------------------------------------------- collapse time
@settings(max_examples=40, deadline=None)
@given(s=st.floats(0.05, 20.0), log10_n=st.floats(0.302, 300.0), d=st.integers(1, 10**6))
@example(s=1.0, log10_n=155.0, d=1)  # N^{2/d} beyond float64 (found by CI)
def test_isotropic_vp_collapse_time_matches_published_closed_form(s, log10_n, d):
    n = 10.0**log10_n
    # the reference in mpmath: N^{2/d} overflows float64 for small d and large N
    exact = mpmath.log1p(s * s / mpmath.expm1(2 * mpmath.log(mpmath.mpf(n)) / d)) / 2
    got = collapse_time(_isotropic(d, s), n, VP())
    if isinstance(got, mpmath.mpf):  # underflows float64: compare in mpmath
        assert abs(got / exact - 1) < CLOSED_FORM_RTOL
    else:
        assert math.isfinite(got)
        assert got == pytest.approx(float(exact), rel=CLOSED_FORM_RTOL)


@settings(max_examples=30, deadline=None)
@given(s=st.floats(0.05, 20.0), log10_n=st.floats(0.302, 200.0), m=st.integers(1, 500),
       extra=st.integers(0, 50))
def test_ve_collapse_time_on_a_manifold_matches_closed_form(s, log10_n, m, extra):
    """VE, m tangent directions inside d = m + extra (exact manifold): t_C = s^2/(N^{2/m} - 1)."""
    n = 10.0**log10_n
    got = collapse_time(_isotropic(m + extra, s, m=m), n, VE())
    exact = mpmath.mpf(s) ** 2 / mpmath.expm1(2 * mpmath.log(mpmath.mpf(n)) / m)
    assert abs(mpmath.mpf(got) / exact - 1) < CLOSED_FORM_RTOL


def test_collapse_time_monotone_in_std_and_n():
    stds = np.array([0.1, 0.3, 1.0, 3.0])
    n = np.geomspace(2, 1e12, 7)
    for schedule in (VE(), VP()):
        times = np.array([collapse_time(_isotropic(5, s), n, schedule) for s in stds])
        assert np.all(np.diff(times, axis=0) > 0)  # increasing in s
        assert np.all(np.diff(times, axis=1) < 0)  # decreasing in N


@pytest.mark.parametrize("d", [1, 3, 30, 10**6])
@pytest.mark.parametrize("schedule", [VE(), VP()])
def test_collapse_time_extreme_range_no_nan(d, schedule):
    n = np.array([2.0, 1e3, 1e50, 1e300])
    model = LinearManifold(d, (max(1, d // 3), max(1, d // 3)) if d >= 3 else (d,),
                           stds=(1.0, 0.2) if d >= 3 else 1.0)
    times = collapse_time(model, n, schedule)
    values = [mpmath.mpf(t) for t in np.ravel(times)]
    assert all(mpmath.isfinite(t) and t > 0 for t in values)
    assert all(values[i] > values[i + 1] for i in range(len(values) - 1))


def test_collapse_time_agrees_with_mpmath_root():
    """Independent route: mpmath.findroot of the ungrouped threshold equation at 40 digits."""
    model = LinearManifold(12, (2, 5), stds=(1.0, 0.3), residual_std=0.01)
    v = [mpmath.mpf(x) for x in effective_direction_variances(model)]
    with mpmath.workdps(40):
        for n in (2, 1000, 10**40, 10**300):
            def threshold(level, n=n):
                return sum(mpmath.log1p(x * mpmath.exp(level)) for x in v) / 2 - mpmath.log(n)

            root = mpmath.findroot(threshold, collapse_log_snr(model, n))
            assert collapse_log_snr(model, n) == pytest.approx(float(root), rel=1e-13, abs=1e-13)
            t_ve = collapse_time(model, n, VE())
            assert abs(mpmath.mpf(t_ve) / mpmath.exp(-root) - 1) < 1e-12


def test_collapse_time_huge_n_returns_mpf_and_accepts_big_inputs():
    model = _isotropic(1, 1.0)
    t = collapse_time(model, 1e300, VE())  # t = 1/(N^2 - 1) ~ 1e-600: not a float64
    assert isinstance(t, mpmath.mpf)
    assert abs(t / mpmath.mpf(10) ** -600 - 1) < 1e-12
    assert isinstance(collapse_time(model, 10, VE()), float)
    big = collapse_time(model, 10**1000, VP())  # Python int beyond float range
    assert abs(big / (mpmath.mpf(10) ** -2000 / 2) - 1) < 1e-10
    via_log = collapse_time(model, None, VP(), log_n_train=1000 * math.log(10))
    assert abs(via_log / big - 1) < 1e-12
    assert collapse_time(model, mpmath.mpf(1000), VE()) == pytest.approx(1 / (1e6 - 1))
    arr = collapse_time(model, np.array([[10, 1e300]]), VE())
    assert arr.shape == (1, 2) and arr.dtype == object


def test_collapse_time_vectorised_and_consistent_with_threshold():
    n = np.array([[10.0, 1e3], [1e5, 1e8]])
    for schedule in (VE(), VP(), GeometricVE()):
        t = collapse_time(FIG4, n, schedule)
        assert t.shape == n.shape and t.dtype == np.float64
        # at t_C the average KL of q_1 equals ln N: d * alpha_c(t_C) = ln N
        alpha = condensation_threshold(FIG4, t, schedule)
        np.testing.assert_allclose(alpha * FIG4.d, np.log(n), rtol=1e-10)


def test_no_root_in_domain_raises():
    with pytest.raises(ValueError, match="n_train"):
        collapse_time(FIG4, 1e300, DDPM())  # needs a time below the DDPM resolution
    with pytest.raises(ValueError, match="n_train"):
        collapse_time(FIG4, 1e12, GeometricVE())  # t_C < 0 in the geometric VE domain
    with pytest.raises(ValueError, match="n_train"):
        collapse_time(_isotropic(3, 200.0), 2, DDPM())  # beyond the last DDPM step


@pytest.mark.parametrize("bad", [1, 1.5, 0, -3, float("nan"), float("inf"), [10, 1]])
def test_bad_n_train(bad):
    with pytest.raises(ValueError, match="n_train"):
        collapse_time(FIG4, bad, VE())
    with pytest.raises(ValueError, match="n_train"):
        annealed_freezing_parameter(FIG4, 0.1, bad, VE())


def test_bad_inputs_name_the_parameter():
    with pytest.raises(ValueError, match="t out of range"):
        condensation_threshold(FIG4, 0.0, VE())
    with pytest.raises(ValueError, match="t out of range"):
        freezing_parameter(FIG4, [-1.0], 10, VP())
    with pytest.raises(ValueError, match="lam"):
        tilted_kl(1.5, np.zeros(30), FIG4, 0.1, VE())
    with pytest.raises(ValueError, match="x"):
        tilted_kl(0.5, np.zeros(29), FIG4, 0.1, VE())
    with pytest.raises(ValueError, match="schedule"):
        collapse_time(FIG4, 10, "cosine")
    with pytest.raises(ValueError, match="model"):
        collapse_time("figure4", 10, VE())
    with pytest.raises(ValueError, match="log_n_train"):
        collapse_time(FIG4, None, VE(), log_n_train=0.1)
    with pytest.raises(ValueError, match="exactly one"):
        collapse_time(FIG4, 10, VE(), log_n_train=3.0)
    with pytest.raises(ValueError, match="stds"):
        LinearManifold(5, (2,), stds=0.0)
    with pytest.raises(ValueError, match="dims"):
        LinearManifold(5, (3, 3), stds=1.0)


# ----------------------------------------------------------------------------- KL and lam*
def _direct_kl(lam, x, model, t, schedule):
    """Per-direction formula in the model basis, summed in 40-digit mpmath (reference)."""
    with mpmath.workdps(40):
        a, delta = mpmath.mpf(float(schedule.a(t))), mpmath.mpf(float(schedule.delta(t)))
        coords = model.basis.T @ x
        total = mpmath.mpf(0)
        for v, xi in zip(effective_direction_variances(model), coords, strict=True):
            s = mpmath.sqrt(mpmath.mpf(v))
            p = 1 + lam * a * a * s * s / delta
            mu = lam * a * s * mpmath.mpf(xi) / (delta * p)
            total += (1 / p + mu * mu - 1 + mpmath.log(p)) / 2
        return float(total)


def test_tilted_kl_matches_direct_formula_in_random_basis():
    model = LinearManifold(9, (2, 3), stds=(1.0, 0.4), residual_std=0.05, basis="random", seed=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 9))
    for schedule, t in ((VE(), 0.05), (VP(), 0.3)):
        for lam in (0.01, 0.3, 1.0):
            got = tilted_kl(lam, x, model, t, schedule)
            want = [_direct_kl(lam, xi, model, t, schedule) for xi in x]
            np.testing.assert_allclose(got, want, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(log_t=st.floats(-9, 1), seed=st.integers(0, 10**6))
def test_kl_increasing_in_lam(log_t, seed):
    x = np.random.default_rng(seed).standard_normal(30) * 0.3
    lam = np.linspace(1e-4, 1.0, 400)
    kl = tilted_kl(lam, x, FIG4, math.exp(log_t), VE())
    assert np.all(np.diff(kl) > 0)
    kl_avg = annealed_tilted_kl(lam, FIG4, math.exp(log_t), VP())
    assert np.all(np.diff(kl_avg) > 0)


def test_annealed_kl_is_mutual_information_and_monte_carlo_mean():
    t = np.array([1e-3, 0.05, 1.0])
    v = effective_direction_variances(FIG4)
    np.testing.assert_allclose(annealed_tilted_kl(1.0, FIG4, t, VE()),
                               0.5 * np.log1p(v / t[:, None]).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(condensation_threshold(FIG4, t, VE()) * 30,
                               0.5 * np.log1p(v / t[:, None]).sum(-1), rtol=1e-12)
    # E_x over x ~ N(0, a^2 v + Delta) (KL is linear in x_i^2): exact with 2nd moments
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20000, 30)) * np.sqrt(v + 0.05)
    mc = tilted_kl(0.3, x, FIG4, 0.05, VE())
    assert mc.mean() == pytest.approx(float(annealed_tilted_kl(0.3, FIG4, 0.05, VE())),
                                      abs=5 * mc.std() / np.sqrt(mc.size))


def test_freezing_parameter_solves_kl_equation():
    rng = np.random.default_rng(2)
    t = np.geomspace(1e-5, 1, 9)[:, None]
    x = FIG4.sample(6, rng) + np.sqrt(t)[..., None] * rng.standard_normal((9, 6, 30))
    lam = freezing_parameter(FIG4, t, 1000, VE(), x=x)
    assert lam.shape == (9, 6)
    assert np.all((lam > 0) & (lam <= 1))
    kl = tilted_kl(lam, x, FIG4, t, VE())
    frozen = lam < 1
    assert np.any(frozen) and np.any(~frozen)
    np.testing.assert_allclose(kl[frozen], math.log(1000), rtol=1e-10)
    assert np.all(tilted_kl(1.0, x, FIG4, t, VE())[~frozen] <= math.log(1000) * (1 + 1e-12))


def test_lam_equals_one_below_threshold_and_continuous_across():
    x = np.random.default_rng(5).standard_normal(30) * 0.5
    t = 0.01
    kl_one = float(tilted_kl(1.0, x, FIG4, t, VE()))
    eps = np.array([-1e-3, -1e-6, 1e-6, 1e-3])  # ln N relative to the threshold
    lam = freezing_parameter(FIG4, t, np.exp(kl_one * (1 + eps)), VE(), x=x)
    assert lam[2] == 1.0 and lam[3] == 1.0  # ln N above KL(q_1): not condensed
    assert 1 - 1e-5 < lam[1] < 1.0  # just condensed: continuous at lam = 1
    assert lam[0] < lam[1]


def test_annealed_lam_is_one_exactly_above_collapse_time():
    for schedule in (VE(), VP()):
        t_c = collapse_time(FIG4, 1000, schedule)
        lam = annealed_freezing_parameter(FIG4, t_c * np.array([0.5, 0.999, 1.001, 2.0]), 1000,
                                          schedule)
        assert np.all(lam[2:] == 1.0) and np.all(lam[:2] < 1.0) and lam[1] > 0.99


def test_quenched_average_matches_monte_carlo():
    """Deterministic Gauss-Laguerre average of lam*(x) vs Monte Carlo over x ~ N(0, v + t)."""
    v = effective_direction_variances(FIG4)
    rng = np.random.default_rng(7)
    for t in (0.004, 0.015):
        x = rng.standard_normal((40000, 30)) * np.sqrt(v + t)
        mc = freezing_parameter(FIG4, t, 1000, VE(), x=x)
        quad = float(freezing_parameter(FIG4, t, 1000, VE()))
        se = mc.std(ddof=1) / np.sqrt(mc.size)
        assert abs(quad - mc.mean()) < QUADRATURE_Z_MAX * se, (quad, mc.mean(), se)
    # quenched and annealed differ but agree to leading order
    t = np.array([1e-4, 1e-3, 1e-2])
    quenched = freezing_parameter(FIG4, t, 1000, VE())
    annealed = annealed_freezing_parameter(FIG4, t, 1000, VE())
    np.testing.assert_allclose(quenched, annealed, rtol=0.25)


def test_quadrature_group_limit():
    model = LinearManifold(40, (5, 5, 5, 5, 5), stds=(1.0, 0.7, 0.5, 0.3, 0.2))
    with pytest.raises(ValueError, match="annealed_freezing_parameter"):
        freezing_parameter(model, 0.01, 100, VE())
    with pytest.raises(ValueError, match="n_nodes"):
        freezing_parameter(FIG4, 0.01, 100, VE(), n_nodes=100)
    assert np.all(np.isfinite(annealed_freezing_parameter(model, [0.01, 0.1], 100, VE())))


def test_large_d_is_cheap_and_finite():
    model = LinearManifold(10**6, (10**5, 2 * 10**5), stds=(1.0, 0.3), residual_std=1e-3)
    t = np.geomspace(1e-6, 10, 5)
    lam = freezing_parameter(model, t, 1e300, VP())
    assert np.all(np.isfinite(lam)) and np.all((lam > 0) & (lam <= 1))
    alpha = condensation_threshold(model, t, VP())
    assert np.all(np.diff(alpha) < 0)


# ----------------------------------------------------------------------------- issue 15, item 14
def test_named_test_points_agree_with_finite_n():
    """x="fresh" and x=None are the same fresh-point average in rem and finite_n (was "could not
    convert string to float"); x="origin" is the point x = 0 in both."""
    from geomem.theory import finite_n_expectations

    fresh = freezing_parameter(FIG4, 0.01, 1000, VE(), x="fresh")
    assert fresh == freezing_parameter(FIG4, 0.01, 1000, VE(), x=None)
    assert 0.0 < fresh < 1.0
    origin = freezing_parameter(FIG4, 0.01, 1000, VE(), x="origin")
    assert origin == freezing_parameter(FIG4, 0.01, 1000, VE(), x=np.zeros(30))
    gauss = LinearManifold(2, (2,), stds=1.0)  # one energy group, two nodes: fast
    by_name = finite_n_expectations(gauss, 0.1, 10, VP(), x=None, n_nodes=2)
    assert by_name.sum_w2 == finite_n_expectations(gauss, 0.1, 10, VP(), x="fresh",
                                                   n_nodes=2).sum_w2
    for fn in (lambda x: freezing_parameter(FIG4, 0.01, 1000, VE(), x=x),
               lambda x: finite_n_expectations(gauss, 0.1, 10, VP(), x=x)):
        with pytest.raises(ValueError, match="x must be one of 'fresh', 'origin'"):
            fn("centre")


def test_underflowing_collapse_time_is_an_mpf_never_zero():
    """log_n_train = 1e6 puts t_C near 3e-28963: far below float64, so it comes back as an mpf
    (a float would be 0.0), and its log matches the log-SNR root (VE: t = e^{-l})."""
    t = collapse_time(FIG4, None, VE(), log_n_train=1e6)
    assert isinstance(t, mpmath.mpf) and t > 0
    level = collapse_log_snr(FIG4, log_n_train=1e6)
    assert float(mpmath.log(t)) == pytest.approx(-level, rel=1e-12)
    assert "never" in collapse_time.__doc__ and "0.0" in collapse_time.__doc__


@pytest.mark.parametrize("call,message", [
    (lambda: freezing_parameter(FIG4, np.inf, 10, VE()),
     "allowed 0 < t < inf, got inf"),
    (lambda: freezing_parameter(FIG4, np.float64(-1.0), 10, VE()),
     "allowed 0 < t < inf, got -1.0"),
    (lambda: freezing_parameter(FIG4, [0.1, -2.0], 10, VE()),
     "got -2.0 (first offending element)"),
    (lambda: annealed_freezing_parameter(FIG4, 0.1, np.float64(1.0), VE()),
     "allowed 2 <= n_train < inf, got 1.0"),
    (lambda: freezing_parameter(FIG4, "soon", 10, VE()),
     "t must be a real number or array, got the string 'soon'"),
    (lambda: collapse_time(FIG4, None, GeometricVE(), log_n_train=1e6),
     "lies above the largest log-SNR the schedule reaches"),
])
def test_messages_read_naturally(call, message):
    """No 'np.float64(...)', no '<= inf', no numpy parse errors that omit the argument."""
    with pytest.raises(ValueError) as info:
        call()
    text = str(info.value)
    assert message in text
    assert "np.float64" not in text and "<= inf" not in text

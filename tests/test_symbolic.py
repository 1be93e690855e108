"""The sympy layer: derived closed forms equal the numeric implementations at random points."""

import functools
import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from geomem.theory import VE, VP, LinearManifold
from geomem.theory import symbolic as sym
from geomem.theory.population import population_singular_values
from geomem.theory.rem import (
    annealed_tilted_kl,
    collapse_time,
    condensation_threshold,
    tilted_kl,
)

# lambdified sympy vs the numeric modules: same formulas up to float64 rearrangement
SYM_RTOL = 1e-10
# collapse_time solves a root in log-SNR to ~1e-13; allow the exp/log map
COLLAPSE_RTOL = 1e-9

S = sym.SYMBOLS


def test_derived_expressions_have_the_stated_closed_forms():
    a, s, delta, lam, x = S["a"], S["s"], S["delta"], S["lam"], S["x"]
    precision, mean = sym.tilted_gaussian_parameters()
    assert sp.simplify(precision - (1 + lam * a**2 * s**2 / delta)) == 0
    assert sp.simplify(mean - lam * a * s * x / (delta * precision)) == 0
    stated = (1 / precision + mean**2 - 1 + sp.log(precision)) / 2
    assert sp.simplify(sym.tilted_kl_expression() - stated) == 0
    assert sp.simplify(sym.population_singular_value_expression() - 1 / (delta + a**2 * s**2)) == 0
    e1, e2 = sym.population_eigenvalue_expressions()
    assert not e1.has(S["theta"]) and not e2.has(S["theta"])
    mean_kl = sym.mean_tilted_kl_expression()
    assert sp.simplify(sp.expand_log(mean_kl - sp.log(1 + a**2 * s**2 / delta) / 2,
                                     force=True)) == 0
    n, d, m, t = S["N"], S["d"], S["m"], S["t"]
    vp = sp.log(1 + s**2 / (n ** (2 / d) - 1)) / 2
    assert sp.simplify(sym.collapse_time_expression("VP") - vp) == 0
    assert sp.simplify(sym.collapse_time_expression("VE") - s**2 / (n ** (2 / m) - 1)) == 0
    eq = sym.threshold_equation(3)
    assert eq.lhs == sp.log(n) and len(eq.rhs.args) == 3
    assert t not in eq.free_symbols


@given(lam=st.floats(0.01, 1.0), x=st.floats(-5.0, 5.0), s=st.floats(0.05, 3.0),
       t=st.floats(1e-3, 2.0), schedule=st.sampled_from([VE(), VP()]))
@settings(max_examples=40, deadline=None)
def test_tilted_kl_matches_rem_and_direct_formula(lam, x, s, t, schedule):
    a, delta = float(schedule.a(t)), float(schedule.delta(t))
    got = sym.tilted_kl_function()(lam, x, a, s, delta)
    precision = 1 + lam * a**2 * s**2 / delta
    mu = lam * a * s * x / (delta * precision)
    direct = (1 / precision + mu**2 - 1 + math.log(precision)) / 2
    assert got == pytest.approx(direct, rel=SYM_RTOL, abs=1e-15)
    model = LinearManifold(1, (1,), stds=s)
    assert got == pytest.approx(float(tilted_kl(lam, [x], model, t, schedule)),
                                rel=SYM_RTOL, abs=1e-13)


@given(lam=st.floats(0.1, 1.0), x=st.floats(-3.0, 3.0), s=st.floats(0.2, 2.0),
       delta=st.floats(0.05, 2.0))
@settings(max_examples=5, deadline=None)
def test_tilted_kl_by_numerical_quadrature(lam, x, s, delta):
    """KL(q_lam||p) from its definition, integrated numerically over z."""
    def log_q_unnorm(z):
        return -z**2 / 2 - lam * (x - s * z) ** 2 / (2 * delta)
    zs = np.linspace(-12, 12, 200001)
    log_w = log_q_unnorm(zs)
    w = np.exp(log_w - log_w.max())
    q = w / integrate.trapezoid(w, zs)
    log_p = -zs**2 / 2 - 0.5 * math.log(2 * math.pi)
    kl = integrate.trapezoid(q * (np.log(np.where(q > 0, q, 1.0)) - log_p), zs)
    assert sym.tilted_kl_function()(lam, x, 1.0, s, delta) == pytest.approx(kl, rel=1e-6,
                                                                             abs=1e-9)


@given(stds=st.lists(st.floats(0.05, 3.0), min_size=1, max_size=3), t=st.floats(1e-3, 2.0),
       schedule=st.sampled_from([VE(), VP()]))
@settings(max_examples=30, deadline=None)
def test_threshold_sum_matches_rem(stds, t, schedule):
    a, delta = float(schedule.a(t)), float(schedule.delta(t))
    model = LinearManifold(len(stds), [1] * len(stds), stds=stds)
    total = sum(sym.mean_tilted_kl_function()(a, s, delta) for s in stds)
    assert total == pytest.approx(float(annealed_tilted_kl(1.0, model, t, schedule)),
                                  rel=SYM_RTOL)
    assert total == pytest.approx(float(condensation_threshold(model, t, schedule)) * model.d,
                                  rel=SYM_RTOL)
    # the threshold equation's right side, evaluated at the same point
    eq = sym.threshold_equation(len(stds))
    subs = {S["a"]: a, S["delta"]: delta}
    subs.update({sp.Symbol(f"s_{i + 1}", positive=True): s for i, s in enumerate(stds)})
    assert float(eq.rhs.evalf(subs=subs)) == pytest.approx(total, rel=SYM_RTOL)


@given(d=st.integers(1, 30), s=st.floats(0.1, 3.0), log10_n=st.floats(0.5, 8.0))
@settings(max_examples=30, deadline=None)
def test_isotropic_collapse_time_vp_matches_rem(d, s, log10_n):
    n = 10.0**log10_n
    expected = sym.collapse_time_function("VP")(s, n, d)
    assert expected == pytest.approx(0.5 * math.log1p(s**2 / math.expm1(2 * math.log(n) / d)),
                                     rel=SYM_RTOL)
    model = LinearManifold(d, (d,), stds=s)
    assert float(collapse_time(model, n, VP())) == pytest.approx(expected, rel=COLLAPSE_RTOL)


@given(m=st.integers(1, 10), extra=st.integers(0, 5), s=st.floats(0.1, 3.0),
       log10_n=st.floats(0.5, 6.0))
@settings(max_examples=30, deadline=None)
def test_isotropic_collapse_time_ve_matches_rem(m, extra, s, log10_n):
    n = 10.0**log10_n
    expected = sym.collapse_time_function("VE")(s, n, m)
    model = LinearManifold(m + extra, (m,), stds=s)  # normal directions: zero variance
    assert float(collapse_time(model, n, VE())) == pytest.approx(expected, rel=COLLAPSE_RTOL)


@functools.lru_cache(maxsize=1)
def _eigenvalue_functions():
    args = (S["a"], S["s1"], S["s2"], S["delta"], S["theta"])
    return [sp.lambdify(args, e) for e in sym.population_eigenvalue_expressions()]


@given(s1=st.floats(0.05, 3.0), s2=st.floats(0.05, 3.0), theta=st.floats(0.0, 3.1),
       t=st.floats(1e-3, 2.0), schedule=st.sampled_from([VE(), VP()]))
@settings(max_examples=20, deadline=None)
def test_population_spectrum_matches_numeric(s1, s2, theta, t, schedule):
    a, delta = float(schedule.a(t)), float(schedule.delta(t))
    values = [abs(float(f(a, s1, s2, delta, theta))) for f in _eigenvalue_functions()]
    c, sn = math.cos(theta), math.sin(theta)
    basis = np.array([[c, -sn], [sn, c]])
    model = LinearManifold(2, (1, 1), stds=(s1, s2), basis=basis)
    np.testing.assert_allclose(sorted(values, reverse=True),
                               population_singular_values(model, t, schedule), rtol=SYM_RTOL)
    assert sym.population_singular_value_function()(a, s1, delta) == pytest.approx(values[0],
                                                                                   rel=SYM_RTOL)


def test_latex_summary_and_bad_input():
    text = sym.latex_summary()
    assert text.count("$$") == 2 * 7
    assert r"\log{\left(N \right)}" in text and "t_C^{\\mathrm{VP}}" in text
    with pytest.raises(ValueError, match="schedule"):
        sym.collapse_time_expression("DDPM")
    with pytest.raises(ValueError, match="n_directions"):
        sym.threshold_equation(0)

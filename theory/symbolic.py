"""Symbolic (sympy) derivations of the closed forms used by geomem, from their definitions.

Each ``*_expression`` function derives a result with sympy (matrix inversion, completion of the
square, Gaussian integrals, equation solving) rather than typing it in, and returns a sympy
expression in the module's symbols (:data:`SYMBOLS`). The ``*_function`` companions return
numpy-vectorised ``sympy.lambdify`` callables; tests compare both with the numeric modules
(:mod:`~geomem.theory.population`, :mod:`~geomem.theory.rem`). Derivations take ~0.1-1 s each
and are cached (``functools.lru_cache``); sympy expressions are immutable, so caching is safe.

(i)   population spectrum: ``J = -(Delta I + a^2 U diag(s1^2, s2^2) U^T)^{-1}`` for a rotation U
      by an arbitrary angle has eigenvalues ``-1/(Delta + a^2 s_i^2)`` (independent of the angle);
(ii)  tilted Gaussian ``q_lam(z) ∝ N(z; 0, 1) exp(-lam E(z))``, ``E = (x - a s z)^2/(2 Delta)``:
      completing the square gives ``q_lam = N(mu, 1/P)``, ``P = 1 + lam a^2 s^2/Delta``,
      ``mu = lam a s x/(Delta P)``, and integrating ``q ln(q/p)`` gives
      ``KL = (1/P + mu^2 - 1 + ln P)/2``;
(iii) averaging KL(q_1||p) over ``x ~ N(0, a^2 s^2 + Delta)`` gives ``ln(1 + a^2 s^2/Delta)/2``,
      hence the threshold ``ln N = sum_i ln(1 + a^2 s_i^2/Delta)/2``;
(iv)  isotropic collapse times solving that threshold: VP (d directions of std s)
      ``t_C = ln(1 + s^2/(N^{2/d} - 1))/2``; VE (m tangent directions)
      ``t_C = s^2/(N^{2/m} - 1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from types import MappingProxyType

import sympy as sp

from ._checks import check_choice, check_int

__all__ = [
    "SYMBOLS",
    "collapse_time_expression",
    "collapse_time_function",
    "latex_summary",
    "mean_tilted_kl_expression",
    "mean_tilted_kl_function",
    "population_eigenvalue_expressions",
    "population_singular_value_expression",
    "population_singular_value_function",
    "tilted_gaussian_parameters",
    "tilted_kl_expression",
    "tilted_kl_function",
    "threshold_equation",
]

_z, _x = sp.symbols("z x", real=True)
_theta = sp.Symbol("theta", real=True)
_lam, _a, _s, _s1, _s2, _delta = sp.symbols("lambda a s s_1 s_2 Delta", positive=True)
_t, _n, _d, _m = sp.symbols("t N d m", positive=True)

#: the symbols every expression is written in (read-only mapping name -> sympy Symbol)
SYMBOLS = MappingProxyType({
    "z": _z, "x": _x, "theta": _theta, "lam": _lam, "a": _a, "s": _s, "s1": _s1, "s2": _s2,
    "delta": _delta, "t": _t, "N": _n, "d": _d, "m": _m,
})

_SCHEDULES = ("VE", "VP")


# ----------------------------------------------------------------------------- (i) population
@lru_cache(maxsize=1)
def population_eigenvalue_expressions() -> tuple[sp.Expr, sp.Expr]:
    """Eigenvalues of ``-(Delta I + a^2 U diag(s1^2, s2^2) U^T)^{-1}``, U a rotation by theta.

    Derived by symbolic inversion and characteristic polynomial; the result is free of theta.
    Returned as ``(-1/(Delta + a^2 s1^2), -1/(Delta + a^2 s2^2))`` (order: s1, then s2).
    """
    rotation = sp.Matrix([[sp.cos(_theta), -sp.sin(_theta)], [sp.sin(_theta), sp.cos(_theta)]])
    noised_cov = _delta * sp.eye(2) + _a**2 * rotation * sp.diag(_s1**2, _s2**2) * rotation.T
    jacobian = -noised_cov.inv()
    eigen = [sp.simplify(e) for e in jacobian.eigenvals()]
    # order by which std each eigenvalue depends on (sympy's dict order is not guaranteed)
    first = next(e for e in eigen if e.has(_s1))
    second = next(e for e in eigen if e.has(_s2))
    return first, second


@lru_cache(maxsize=1)
def population_singular_value_expression() -> sp.Expr:
    """``1/(Delta + a^2 s^2)``: |eigenvalue| of the population Jacobian on a direction of std s."""
    return sp.simplify(-population_eigenvalue_expressions()[0].subs(_s1, _s))


@lru_cache(maxsize=1)
def population_singular_value_function() -> Callable:
    """Numeric ``f(a, s, delta) = 1/(delta + a^2 s^2)`` (numpy broadcasting)."""
    return sp.lambdify((_a, _s, _delta), population_singular_value_expression(), "numpy")


# ----------------------------------------------------------------------------- (ii) tilted KL
@lru_cache(maxsize=1)
def tilted_gaussian_parameters() -> tuple[sp.Expr, sp.Expr]:
    """``(P, mu)`` of ``q_lam = N(mu, 1/P)`` by completing the square in z.

    ``ln q_lam(z) = -z^2/2 - lam (x - a s z)^2/(2 Delta) + const = -P z^2/2 + P mu z + const``.
    """
    exponent = sp.expand(-_z**2 / 2 - _lam * (_x - _a * _s * _z) ** 2 / (2 * _delta))
    poly = sp.Poly(exponent, _z)
    precision = sp.simplify(-2 * poly.coeff_monomial(_z**2))
    mean = sp.simplify(poly.coeff_monomial(_z) / precision)
    return precision, mean


@lru_cache(maxsize=1)
def _gaussian_kl_in_p_mu() -> tuple[sp.Expr, sp.Symbol, sp.Symbol]:
    """KL(N(mu, 1/P) || N(0, 1)) by integrating ``q ln(q/p)`` over z, in free symbols P, mu."""
    precision = sp.Symbol("P", positive=True)
    mean = sp.Symbol("mu", real=True)
    q = sp.sqrt(precision / (2 * sp.pi)) * sp.exp(-precision * (_z - mean) ** 2 / 2)
    log_ratio = sp.log(precision) / 2 - precision * (_z - mean) ** 2 / 2 + _z**2 / 2
    kl = sp.integrate(sp.expand(q * log_ratio), (_z, -sp.oo, sp.oo))
    return sp.simplify(kl), precision, mean


@lru_cache(maxsize=1)
def tilted_kl_expression() -> sp.Expr:
    """``KL(q_lam || p)`` for one direction, in lam, a, s, x, Delta (nats).

    Equals ``(1/P + mu^2 - 1 + ln P)/2`` with P, mu from :func:`tilted_gaussian_parameters`.
    """
    kl, precision, mean = _gaussian_kl_in_p_mu()
    p_expr, mu_expr = tilted_gaussian_parameters()
    return kl.subs({precision: p_expr, mean: mu_expr})


@lru_cache(maxsize=1)
def tilted_kl_function() -> Callable:
    """Numeric ``f(lam, x, a, s, delta)`` of :func:`tilted_kl_expression` (numpy broadcasting)."""
    return sp.lambdify((_lam, _x, _a, _s, _delta), tilted_kl_expression(), "numpy")


# ----------------------------------------------------------------------------- (iii) average
@lru_cache(maxsize=1)
def mean_tilted_kl_expression() -> sp.Expr:
    """``E_x KL(q_1 || p)`` over ``x ~ N(0, a^2 s^2 + Delta)``: ``ln(1 + a^2 s^2/Delta)/2``.

    KL is a polynomial in x of degree 2, so the average is a sum of Gaussian moment integrals.
    """
    kl = sp.expand(tilted_kl_expression().subs(_lam, 1))
    variance = _a**2 * _s**2 + _delta
    density = sp.exp(-_x**2 / (2 * variance)) / sp.sqrt(2 * sp.pi * variance)
    mean = sum(coeff * sp.integrate(_x**k * density, (_x, -sp.oo, sp.oo))
               for (k,), coeff in sp.Poly(kl, _x).terms())
    # one logarithm: ln of exp(2 KL) = ln((Delta + a^2 s^2)/Delta) (all symbols positive)
    return sp.log(sp.simplify(sp.exp(2 * sp.simplify(mean)))) / 2


@lru_cache(maxsize=1)
def mean_tilted_kl_function() -> Callable:
    """Numeric ``f(a, s, delta)`` of :func:`mean_tilted_kl_expression`."""
    return sp.lambdify((_a, _s, _delta), mean_tilted_kl_expression(), "numpy")


@lru_cache(maxsize=8)
def threshold_equation(n_directions: int = 2) -> sp.Eq:
    """``ln N = sum_i ln(1 + a^2 s_i^2/Delta)/2`` over ``n_directions`` stds ``s_1, s_2, ...``:
    the fresh-test-point average of ``KL(q_1||p)`` (additive over independent directions)
    equated to ln N (the REM condensation threshold)."""
    n_directions = check_int("n_directions", n_directions, minimum=1)
    stds = sp.symbols(f"s_1:{n_directions + 1}", positive=True)
    per_direction = mean_tilted_kl_expression()
    return sp.Eq(sp.log(_n), sum(per_direction.subs(_s, s_i) for s_i in stds))


# ----------------------------------------------------------------------------- (iv) t_C
@lru_cache(maxsize=2)
def collapse_time_expression(schedule: str) -> sp.Expr:
    """Isotropic collapse time solving ``ln N = (n/2) ln(1 + a(t)^2 s^2/Delta(t))``.

    schedule "VP" (a = e^-t, Delta = 1 - e^-2t; n = d directions of std s) or "VE"
    (a = 1, Delta = t; n = m tangent directions; normal directions have zero variance).
    The per-direction term is :func:`mean_tilted_kl_expression`, so this is the threshold of (iii).
    """
    check_choice("schedule", schedule, _SCHEDULES)
    if schedule == "VP":
        a_t, delta_t, count = sp.exp(-_t), 1 - sp.exp(-2 * _t), _d
    else:
        a_t, delta_t, count = sp.Integer(1), _t, _m
    per_direction = mean_tilted_kl_expression().subs({_a: a_t, _delta: delta_t}, simultaneous=True)
    roots = sp.solve(sp.Eq(sp.log(_n), count * per_direction), _t)
    # keep the real positive branch (checked at one admissible point: s = 1, N = 10, d = m = 2)
    probe = {_s: 1, _n: 10, _d: 2, _m: 2}
    roots = [r for r in roots if sp.N(r.subs(probe)).is_positive]
    if len(roots) != 1:
        raise RuntimeError(f"expected one positive collapse time, sympy gave {roots}")
    return sp.simplify(roots[0])


@lru_cache(maxsize=2)
def collapse_time_function(schedule: str) -> Callable:
    """Numeric ``f(s, N, n)`` of :func:`collapse_time_expression` (n = d for VP, m for VE)."""
    count = _d if check_choice("schedule", schedule, _SCHEDULES) == "VP" else _m
    return sp.lambdify((_s, _n, count), collapse_time_expression(schedule), "numpy")


# ----------------------------------------------------------------------------- docs
def latex_summary() -> str:
    """LaTeX (display equations, one per line) of every derived result, for the docs."""
    precision, mean = tilted_gaussian_parameters()
    kl, p_sym, mu_sym = _gaussian_kl_in_p_mu()
    lines = [
        r"\sigma_i^{\mathrm{pop}} = " + sp.latex(population_singular_value_expression()),
        "P = " + sp.latex(precision) + r", \qquad \mu = " + sp.latex(mean),
        r"\mathrm{KL}(q_\lambda \| p) = " + sp.latex(kl),
        r"\mathbb{E}_x\,\mathrm{KL}(q_1 \| p) = " + sp.latex(mean_tilted_kl_expression()),
        sp.latex(threshold_equation(2)),
        r"t_C^{\mathrm{VP}} = " + sp.latex(collapse_time_expression("VP")),
        r"t_C^{\mathrm{VE}} = " + sp.latex(collapse_time_expression("VE")),
    ]
    return "\n".join(f"$$ {line} $$" for line in lines)

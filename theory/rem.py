"""Large-deviation random energy model (REM) of memorization (THEORY §5b) [derived].

The empirical-score weights ``w_mu(x) = softmax(-E_mu)`` with energies
``E_mu(x) = |x - a y_mu|^2 / (2 Delta)`` are a Gibbs measure over N training points drawn from
the data law p. In the Gaussian approximation of p (the model's *effective* per-direction
variances ``v_i``: exact second moments, so normalised models are covered) the large-deviation
theory of the REM reads:

- tilted law ``q_lam(y) ∝ p(y) exp(-lam E(y))``; per direction, in units of the std
  ``s = sqrt(v)``: ``q_lam = N(mu, 1/P)`` with ``P = 1 + lam a^2 s^2 / Delta`` and
  ``mu = lam a s x / (Delta P)``, so
  ``KL(q_lam || p) = sum_i (1/P_i + mu_i^2 - 1 + ln P_i) / 2`` (:func:`tilted_kl`);
- the REM is *condensed* at test point x iff ``KL(q_1 || p) > ln N``; the freezing parameter
  ``lam* in (0, 1]`` solves ``KL(q_lam* || p) = ln N`` (``lam* = 1`` when not condensed).

``KL`` is strictly increasing in ``lam`` (so ``lam*`` is unique): with
``psi(lam) = ln E_p e^{-lam E}``, ``KL(q_lam||p) = lam psi'(lam) - psi(lam)`` and
``dKL/dlam = lam psi''(lam) = lam Var_{q_lam}(E) > 0``;
for the Gaussian model explicitly ``dKL/dlam = (lam/2) sum_i (r_i^2/P_i^2 + 2 r_i u_i/P_i^3)``
with ``r_i = a^2 v_i / Delta`` (per-direction SNR) and ``u_i = x_i^2 / Delta``.

Averaged over fresh test points ``x ~ p_t`` (``E x_i^2 = a^2 v_i + Delta``)
``E_x KL(q_1||p) = sum_i ln(1 + r_i) / 2`` (the mutual information of y and x_t), which defines
the condensation threshold ``alpha_c(t)`` (with ``alpha = ln N / d``) and the collapse time t_C.

KL depends on x only through the squared norms ``|P_g x|^2`` of its projections on the groups g
of directions that share one effective variance (the tangent subspaces and the normal space),
so every computation runs over the G distinct variances with multiplicities ``m_g``: d = 1e6
costs the same as d = 3.

Conventions: ``t`` arrays broadcast against ``n_train`` (and the batch shape of a test point
``x``); ``schedule`` is a :class:`~geomem.theory.schedules.Schedule` or its name.
"""

from __future__ import annotations

import math
from typing import Any

import mpmath
import numpy as np
from scipy import special

from ._checks import as_real, check_choice, check_finite_array, check_int, show
from ._quadrature import chi2_product_rule
from ._rem_kernels import (
    _MAX_NEWTON,
    _RESIDUAL_RTOL,
    _STEP_ULPS,
    _group_kl,
    _log_n,
    _log_n_fast,
    _project_groups,
    _snr,
    _solve_lam,
    _variance_groups,
)
from .manifold import LinearManifold
from .schedules import Schedule, get_schedule

__all__ = [
    "MAX_QUADRATURE_POINTS",
    "TEST_POINTS",
    "annealed_freezing_parameter",
    "annealed_tilted_kl",
    "collapse_log_snr",
    "collapse_time",
    "condensation_threshold",
    "freezing_parameter",
    "tilted_kl",
]

#: a group whose mean KL contribution stays below this fraction of ln N is integrated at its mean
_NEGLIGIBLE_KL_FRACTION = 1e-8
#: tensor-product quadrature budget (nodes^groups); beyond it the averaged lam* is refused
MAX_QUADRATURE_POINTS = 4096
#: fewest Gauss-Laguerre nodes per non-negligible group for an accurate average of lam*(x)
_MIN_NODES = 6
#: default nodes per group (kink of lam*(x) at the threshold limits accuracy to ~1e-3 anyway)
_DEFAULT_NODES = 32
#: the named test points accepted by ``x`` (also by finite_n_expectations): the average over
#: fresh points x ~ p_t, or x = 0
TEST_POINTS = ("fresh", "origin")
#: elements of the (points x quadrature nodes) work array handled per chunk (memory cap)
_CHUNK_ELEMENTS = 1 << 20

# ----------------------------------------------------------------------------- public API
def tilted_kl(lam: Any, x: Any, model: LinearManifold, t: Any, schedule: Schedule | str
              ) -> np.ndarray:
    """``KL(q_lam || p)`` at test point(s) x (nats).

    lam : (...) in (0, 1]; x : (..., d) in the ambient basis; t : (...) times.
    Returns the broadcast shape of lam, t and ``x.shape[:-1]``.
    """
    schedule = get_schedule(schedule)
    v, m, groups = _variance_groups(model)
    x = check_finite_array("x", x, last_dim=model.d)
    lam = as_real("lam", lam)
    if lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam <= 0) or np.any(lam > 1):
        raise ValueError(f"lam out of range: allowed 0 < lam <= 1, got {show(lam)}")
    r, delta = _snr(v, t, schedule)
    u = _project_groups(x, model, groups, v.size) / delta[..., None]
    shape = np.broadcast_shapes(lam.shape, r.shape[:-1], u.shape[:-1])
    kl, _ = _group_kl(np.broadcast_to(lam, shape), r, m, u)
    return kl


def annealed_tilted_kl(lam: Any, model: LinearManifold, t: Any, schedule: Schedule | str
                       ) -> np.ndarray:
    """``E_x KL(q_lam || p)`` over fresh test points x ~ p_t (closed form; nats).

    ``E |P_g x|^2 / Delta = m_g (1 + r_g)``, so this is :func:`tilted_kl` at the mean squared
    norms; at lam = 1 it equals ``sum_i ln(1 + r_i) / 2``. Shape: broadcast of lam and t.
    """
    schedule = get_schedule(schedule)
    v, m, _ = _variance_groups(model)
    lam = as_real("lam", lam)
    if lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam <= 0) or np.any(lam > 1):
        raise ValueError(f"lam out of range: allowed 0 < lam <= 1, got {show(lam)}")
    r, _ = _snr(v, t, schedule)
    shape = np.broadcast_shapes(lam.shape, r.shape[:-1])
    kl, _ = _group_kl(np.broadcast_to(lam, shape), r, m, m * (1.0 + r))
    return kl


def condensation_threshold(model: LinearManifold, t: Any, schedule: Schedule | str
                           ) -> np.ndarray:
    """``alpha_c(t) = (1/d) sum_i ln(1 + a^2 v_i / Delta(t)) / 2`` (nats per dimension).

    The fresh-test-point average of ``KL(q_1||p)`` divided by d: the REM is condensed on
    average when ``alpha = ln N / d > alpha_c(t)``. Shape of t.
    """
    schedule = get_schedule(schedule)
    v, m, _ = _variance_groups(model)
    r, _ = _snr(v, t, schedule)
    return 0.5 * np.sum(m * np.log1p(r), axis=-1) / model.d


def collapse_log_snr(model: LinearManifold, n_train: Any = None, *, log_n_train: Any = None
                     ) -> np.ndarray | float:
    """Log-SNR ``l_C = ln(a^2/Delta)`` at which ``ln N = sum_i ln(1 + v_i e^l) / 2``.

    Schedule-free (the threshold depends on t only through the SNR). The left side is convex
    and increasing in l, so Newton started right of the root converges monotonically; bounds
    ``l in [ln(2 ln N / sum v), min_g (2 ln N / m_g - ln v_g)]``. Float64 for every
    N in [2, e^(1e300)); a float for scalar input, else an array of n_train's shape.
    """
    v, m, _ = _variance_groups(model)
    log_n, scalar = _log_n(n_train, log_n_train)
    log_v = np.log(v)
    ln = log_n.reshape(-1, 1)
    l_hi = np.min(2.0 * ln / m - log_v, axis=-1)
    level = l_hi.copy()
    for _ in range(_MAX_NEWTON):
        z = level[:, None] + log_v
        f = 0.5 * np.sum(m * np.logaddexp(0.0, z), axis=-1) - ln[:, 0]
        slope = 0.5 * np.sum(m * special.expit(z), axis=-1)
        step = f / slope
        tol = _STEP_ULPS * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(level))
        # convexity keeps iterates right of the root; rounding may give a tiny negative step
        level = level - np.maximum(step, 0.0)
        if np.all(np.abs(step) <= tol):
            break
    z = level[:, None] + log_v
    residual = 0.5 * np.sum(m * np.logaddexp(0.0, z), axis=-1) - ln[:, 0]
    if not np.all(np.abs(residual) <= _RESIDUAL_RTOL * ln[:, 0]):
        raise RuntimeError("collapse log-SNR solver did not converge (please report)")
    level = level.reshape(log_n.shape)
    return float(level) if scalar else level


def _time_from_log_snr(schedule: Schedule, level: float, name: str) -> Any:
    """t(l) as float when representable, else as mpmath.mpf; ValueError outside (0, t_max]."""
    try:
        t = float(schedule.time_at_log_snr(np.asarray(level)))
    except ValueError as err:
        raise ValueError(
            f"{name} out of range: no collapse time in the {schedule.name} domain 0 < t <= "
            f"{schedule.t_max} (threshold reached at log-SNR {level:.6g}); {err}") from None
    if not (math.isfinite(t) and t >= np.finfo(np.float64).tiny):
        t = schedule.time_at_log_snr(mpmath.mpf(level))
    if not (t > 0 and t <= schedule.t_max):
        side = ("above the largest log-SNR the schedule reaches (as t -> 0): N is too large"
                if t <= 0 else "below the smallest log-SNR the schedule reaches: N is too small")
        raise ValueError(
            f"{name} out of range: the threshold log-SNR {level:.6g} lies {side} for a "
            f"collapse inside the {schedule.name} domain 0 < t <= {schedule.t_max:g}")
    return t


def collapse_time(model: LinearManifold, n_train: Any, schedule: Schedule | str, *,
                  log_n_train: Any = None) -> Any:
    """Collapse time t_C(N): root of ``ln N = sum_i ln(1 + a^2 v_i / Delta(t)) / 2``.

    Fresh test points condense on average (annealed lam* < 1) exactly for t < t_C.
    ``n_train`` : N >= 2 as int (arbitrarily large), float, mpmath.mpf or array of them; or
    pass ``n_train=None, log_n_train=ln N``.

    Returns, for scalar input, a float — or an ``mpmath.mpf`` when t_C is outside the normal
    float64 range (e.g. d = 1, N = 1e300 under VE gives t_C ~ e^-1380; the figure-4 model with
    ``log_n_train=1e6`` gives t_C ~ 3e-28963): an answer that underflows float64 is never
    returned as 0.0 (``float()`` of the mpf would give 0.0: keep the mpf or take its log); for
    array input a float64 array of the input's shape, or an object array of ``mpf`` if any
    entry is not representable. ValueError (naming n_train) when the root lies outside the
    schedule's time domain (e.g. beyond a DDPM schedule's last step). Relative accuracy ~1e-13
    (the float64 log-SNR root; the time map itself is evaluated in mpmath when needed).
    """
    schedule = get_schedule(schedule)
    name = "n_train" if log_n_train is None else "log_n_train"
    level = collapse_log_snr(model, n_train, log_n_train=log_n_train)
    if np.ndim(level) == 0:
        return _time_from_log_snr(schedule, float(level), name)
    flat = np.ravel(level)
    times = [_time_from_log_snr(schedule, float(lv), name) for lv in flat]
    if all(isinstance(t, float) for t in times):
        return np.asarray(times, dtype=np.float64).reshape(level.shape)
    return np.asarray([mpmath.mpf(t) for t in times], dtype=object).reshape(level.shape)


def annealed_freezing_parameter(model: LinearManifold, t: Any, n_train: Any,
                                schedule: Schedule | str) -> np.ndarray:
    """lam solving ``E_x KL(q_lam||p) = ln N`` over fresh x ~ p_t (1 when E_x KL(q_1) <= ln N).

    The *annealed* freezing parameter: the average is taken inside the KL (closed form, one
    root per (t, N)), while :func:`freezing_parameter` with ``x=None`` averages the *quenched*
    lam*(x) over x. They agree to leading order when KL concentrates (many directions); the
    annealed one equals 1 exactly for t >= t_C (:func:`collapse_time`), whereas the quenched
    average is already < 1 slightly above t_C (a fraction of test points is condensed there)
    and generally differs by O(1/sqrt(d)). Fully vectorised: the fast default for phase
    diagrams. Shape: broadcast of t and n_train.
    """
    schedule = get_schedule(schedule)
    v, m, _ = _variance_groups(model)
    log_n = _log_n_fast(n_train)
    r, _ = _snr(v, t, schedule)
    return _solve_lam(r, m, m * (1.0 + r), log_n)


def freezing_parameter(model: LinearManifold, t: Any, n_train: Any, schedule: Schedule | str,
                       x: Any = "fresh", *, n_nodes: int | None = None) -> np.ndarray:
    """Freezing parameter lam* in (0, 1]: ``KL(q_lam*||p) = ln N`` at test point x.

    lam* = 1 where ``KL(q_1||p) <= ln N`` (not condensed); continuous across the threshold.

    x : (..., d) test points in the ambient basis -> lam* of shape broadcast(t, n_train,
        x.shape[:-1]); ``"origin"`` is the single point x = 0. Solved by a vectorised
        safeguarded Newton iteration in ln(lam) (relative accuracy ~1e-15).
    x = None or ``"fresh"`` (as in :func:`~geomem.theory.finite_n.finite_n_expectations`) :
        the *quenched* average ``E_x lam*(x)`` over fresh test points x ~ p_t (Gaussian
        with the effective variances: ``|P_g x|^2 = (a^2 v_g + Delta) chi^2_{m_g}``), computed by
        a deterministic tensor-product generalized Gauss-Laguerre rule (Golub-Welsch) over the
        groups of equal variance (``n_nodes`` per group, default 32, capped so that nodes^groups <=
        MAX_QUADRATURE_POINTS = 4096). Groups whose mean KL stays below 1e-8 ln N use their
        mean. At most 4 non-negligible groups (6 nodes each at least); beyond that a
        ValueError recommends :func:`annealed_freezing_parameter` or explicit x. lam*(x) has a
        kink at the threshold, so the rule is accurate to ~1e-3 (checked against Monte Carlo
        in the tests). Shape: broadcast(t, n_train).
    """
    schedule = get_schedule(schedule)
    v, m, groups = _variance_groups(model)
    if isinstance(x, str):
        check_choice("x", x, TEST_POINTS)
        x = None if x == "fresh" else np.zeros(model.d)
    log_n = _log_n_fast(n_train)
    r, delta = _snr(v, t, schedule)
    if x is not None:
        x = check_finite_array("x", x, last_dim=model.d)
        u = _project_groups(x, model, groups, v.size) / delta[..., None]
        return _solve_lam(r, m, u, log_n)
    shape = np.broadcast_shapes(r.shape[:-1], log_n.shape)
    r = np.broadcast_to(r, shape + (v.size,)).reshape(-1, v.size)
    log_n = np.broadcast_to(log_n, shape).reshape(-1)
    mean_kl = 0.5 * m * np.log1p(r)  # (S, G)
    active = np.any(mean_kl > _NEGLIGIBLE_KL_FRACTION * log_n[:, None], axis=0)
    n_active = int(np.sum(active))
    if n_nodes is not None:
        nodes = check_int("n_nodes", n_nodes, minimum=1)
        if nodes**n_active > MAX_QUADRATURE_POINTS:
            raise ValueError(f"n_nodes out of range: n_nodes^{n_active} (groups) must be <= "
                             f"{MAX_QUADRATURE_POINTS}, got n_nodes={nodes}")
    else:
        budget = int(math.floor(MAX_QUADRATURE_POINTS ** (1.0 / max(n_active, 1)) + 1e-9))
        nodes = min(_DEFAULT_NODES, budget)
        if nodes < _MIN_NODES:
            raise ValueError(
                f"model has {n_active} groups of distinct non-negligible variance: the "
                "tensor-product average over test points supports at most "
                f"{int(math.log(MAX_QUADRATURE_POINTS) / math.log(_MIN_NODES))}; use "
                "annealed_freezing_parameter(...) or pass explicit test points x")
    chi2, weights = chi2_product_rule(m, nodes, active)  # (Q, G), (Q,)
    out = np.empty(r.shape[0])
    chunk = max(1, _CHUNK_ELEMENTS // chi2.shape[0])
    for start in range(0, r.shape[0], chunk):
        sl = slice(start, start + chunk)
        u = (1.0 + r[sl, None, :]) * chi2  # (s, Q, G): |P_g x|^2 / Delta
        lam = _solve_lam(r[sl, None, :], m, u, log_n[sl, None])
        out[sl] = lam @ weights
    # weights sum to 1 only to rounding: keep an average of values in (0, 1] inside (0, 1]
    return np.minimum(out, 1.0).reshape(shape)


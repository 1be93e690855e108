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

from ._checks import check_finite_array, check_int
from ._quadrature import chi2_product_rule
from .manifold import LinearManifold
from .population import effective_direction_variances
from .schedules import Schedule, get_schedule

__all__ = [
    "MAX_QUADRATURE_POINTS",
    "annealed_freezing_parameter",
    "annealed_tilted_kl",
    "collapse_log_snr",
    "collapse_time",
    "condensation_threshold",
    "freezing_parameter",
    "tilted_kl",
]

#: below this, log1p(y) - y/(1+y) loses digits to cancellation; its 6-term series is exact to 1e-18
_SERIES_CUTOFF = 1e-3
#: Newton iterations stop when a step is below this many ulps of the iterate (float64 limit)
_STEP_ULPS = 8.0
#: relative residual |f| / ln N accepted after the iteration cap (never reached in practice)
_RESIDUAL_RTOL = 1e-9
#: safeguard on the number of vectorised Newton iterations (convergence takes 5-40)
_MAX_NEWTON = 400
#: a group whose mean KL contribution stays below this fraction of ln N is integrated at its mean
_NEGLIGIBLE_KL_FRACTION = 1e-8
#: tensor-product quadrature budget (nodes^groups); beyond it the averaged lam* is refused
MAX_QUADRATURE_POINTS = 4096
#: fewest Gauss-Laguerre nodes per non-negligible group for an accurate average of lam*(x)
_MIN_NODES = 6
#: default nodes per group (kink of lam*(x) at the threshold limits accuracy to ~1e-3 anyway)
_DEFAULT_NODES = 32
#: elements of the (points x quadrature nodes) work array handled per chunk (memory cap)
_CHUNK_ELEMENTS = 1 << 20


# ----------------------------------------------------------------------------- input helpers
def _check_model(model: Any) -> LinearManifold:
    if not isinstance(model, LinearManifold):
        raise ValueError(f"model must be a LinearManifold, got {type(model).__name__}")
    return model


def _variance_groups(model: LinearManifold) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct positive effective variances ``v`` (G,), multiplicities ``m`` (G,) and the group
    index of every direction (d,) (-1 for zero-variance directions, which never contribute)."""
    variances = effective_direction_variances(_check_model(model))
    distinct, inverse = np.unique(variances, return_inverse=True)
    counts = np.bincount(inverse, minlength=distinct.size).astype(np.float64)
    positive = distinct > 0
    if not np.any(positive):
        raise ValueError("model has no direction with positive variance (stds must be > 0)")
    new_index = np.cumsum(positive) - 1
    direction_group = np.where(positive[inverse], new_index[inverse], -1)
    return distinct[positive], counts[positive], direction_group


def _log_n(n_train: Any, log_n_train: Any) -> tuple[np.ndarray, bool]:
    """ln N as a float64 array (and whether the input was a scalar).

    Accepts N as int (any size: Python ints beyond float range work), float, ``mpmath.mpf``,
    arrays (float or object arrays of mpf/int), or ln N directly via ``log_n_train``.
    """
    if (n_train is None) == (log_n_train is None):
        raise ValueError("give exactly one of n_train (N >= 2) or log_n_train (ln N >= ln 2)")
    if log_n_train is not None:
        raw = log_n_train
        arr = np.asarray(
            [float(v) for v in np.ravel(raw)] if np.asarray(raw).dtype == object else raw,
            dtype=np.float64).reshape(np.shape(raw))
        too_small = arr < math.log(2.0) * (1 - 1e-15)  # tolerate ln 2 computed in float
        if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(too_small):
            raise ValueError(
                f"log_n_train out of range: allowed ln 2 <= log_n_train < inf, got {raw!r}")
        return arr, arr.ndim == 0
    if np.asarray(n_train).dtype.kind in "iuf":  # plain numbers: vectorised
        return _log_n_fast(n_train), np.ndim(n_train) == 0
    values = np.asarray(n_train, dtype=object) if not isinstance(n_train, np.ndarray) else n_train
    flat = np.ravel(values)
    if flat.size == 0:
        raise ValueError("n_train must be non-empty; allowed 2 <= n_train < inf")
    out = np.empty(flat.size)
    for i, n in enumerate(flat):  # per element only to accept huge ints / mpf; cheap
        try:
            if isinstance(n, mpmath.mpf):
                ok = mpmath.isfinite(n) and n >= 2
                log_value = float(mpmath.log(n)) if ok else np.nan
            elif isinstance(n, (int, np.integer)) and not isinstance(n, bool):
                ok = int(n) >= 2
                log_value = math.log(int(n)) if ok else np.nan
            else:
                f = float(n)
                ok = math.isfinite(f) and f >= 2
                log_value = math.log(f) if ok else np.nan
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"n_train out of range: allowed 2 <= n_train < inf, got {n!r}")
        out[i] = log_value
    return out.reshape(np.shape(values)), np.ndim(values) == 0


def _log_n_fast(n_train: Any) -> np.ndarray:
    """ln N for plain numeric input (vectorised); falls back to :func:`_log_n` otherwise."""
    arr = np.asarray(n_train)
    if arr.dtype.kind in "iuf":
        arr = arr.astype(np.float64)
        if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 2):
            raise ValueError(f"n_train out of range: allowed 2 <= n_train < inf, got {n_train!r}")
        return np.log(arr)
    return _log_n(n_train, None)[0]


def _snr(model_v: np.ndarray, t: Any, schedule: Schedule) -> tuple[np.ndarray, np.ndarray]:
    """Per-group SNR ``r = a^2 v / Delta`` (..., G) and Delta (...) for times t."""
    t = schedule.check_time(t)
    log_snr = schedule.log_snr(t)
    r = np.exp(log_snr[..., None] + np.log(model_v))
    if not np.all(np.isfinite(r)):
        raise ValueError("t too small: a^2 v / Delta overflows float64 at this time")
    return r, schedule.delta(t)


# ----------------------------------------------------------------------------- KL kernels
def _log1p_minus_ratio(y: np.ndarray) -> np.ndarray:
    """``ln(1+y) - y/(1+y) = 1/P - 1 + ln P`` with P = 1+y, accurate for y -> 0 (y >= 0)."""
    small = y < _SERIES_CUTOFF
    ys = np.where(small, y, 0.0)
    series = ys * ys * (0.5 - ys * (2 / 3 - ys * (0.75 - ys * (0.8 - ys * (5 / 6 - ys * 6 / 7)))))
    yl = np.where(small, 1.0, y)
    return np.where(small, series, np.log1p(yl) - yl / (1.0 + yl))


def _group_kl(lam: np.ndarray, r: np.ndarray, m: np.ndarray, u: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """KL(q_lam||p) and its derivative in ln(lam), summed over groups.

    lam (...), r (..., G) per-group SNR, m (G,) multiplicities, u (..., G) = |P_g x|^2 / Delta.
    Written with A = lam r / P in [0, 1) so that huge SNRs never overflow.
    """
    lam_ = lam[..., None]
    y = lam_ * r
    p = 1.0 + y
    a_frac = y / p
    mean_part = a_frac * (lam_ * u / p)  # = mu^2 summed over the group
    kl = 0.5 * np.sum(m * _log1p_minus_ratio(y) + mean_part, axis=-1)
    # d KL / d ln(lam) = (lam^2/2) sum (r^2/P^2 + 2 r u / P^3)
    slope = 0.5 * np.sum(m * a_frac**2 + 2.0 * mean_part / p, axis=-1)
    return kl, slope


def _solve_lam(r: np.ndarray, m: np.ndarray, u: np.ndarray, log_n: np.ndarray) -> np.ndarray:
    """lam* in (0, 1] with KL(q_lam*) = ln N, vectorised over the leading axes.

    Safeguarded Newton in theta = ln(lam) inside the bracket [theta_lo, 0], where
    theta_lo follows from KL <= lam^2 (sum m r^2/4 + sum r u/2) (since ln(1+y) - y/(1+y) <= y^2/2).
    """
    shape = np.broadcast_shapes(r.shape[:-1], u.shape[:-1], log_n.shape)
    r = np.broadcast_to(r, shape + r.shape[-1:])
    u = np.broadcast_to(u, shape + u.shape[-1:])
    log_n = np.broadcast_to(log_n, shape)
    kl_one, _ = _group_kl(np.ones(shape), r, m, u)
    lam = np.ones(shape)
    active = kl_one > log_n
    if not np.any(active):
        return lam
    r_a, u_a, target = r[active], u[active], log_n[active]
    with np.errstate(divide="ignore"):
        log_terms = np.concatenate(
            [np.log(m / 4.0) + 2.0 * np.log(r_a), np.log(0.5 * r_a) + np.log(u_a)], axis=-1)
    log_bound = special.logsumexp(log_terms, axis=-1)
    lo = np.minimum(0.5 * (np.log(target) - log_bound), 0.0)
    hi = np.zeros_like(lo)
    theta = hi.copy()  # KL is close to convex in theta: Newton from the right converges fast
    todo = np.arange(theta.size)  # indices still iterating (converged ones drop out)
    eps = _STEP_ULPS * np.finfo(np.float64).eps
    for _ in range(_MAX_NEWTON):
        th = theta[todo]
        kl, slope = _group_kl(np.exp(th), r_a[todo], m, u_a[todo])
        f = kl - target[todo]
        hi_t = np.where(f > 0, th, hi[todo])
        lo_t = np.where(f <= 0, th, lo[todo])
        hi[todo], lo[todo] = hi_t, lo_t
        with np.errstate(divide="ignore", invalid="ignore"):
            step = f / slope
        tol = eps * np.maximum(1.0, np.abs(th))
        # converged: Newton step at rounding level, or bracket collapsed
        done = (np.abs(step) <= tol) | (hi_t - lo_t <= tol)
        proposal = th - step
        bad = ~np.isfinite(proposal) | (proposal <= lo_t) | (proposal >= hi_t)
        proposal = np.where(bad, 0.5 * (lo_t + hi_t), proposal)
        theta[todo] = np.where(done, th, proposal)
        todo = todo[~done]
        if todo.size == 0:
            break
    kl, _ = _group_kl(np.exp(theta), r_a, m, u_a)
    if not np.all(np.abs(kl - target) <= _RESIDUAL_RTOL * target):
        raise RuntimeError("freezing-parameter solver did not converge (please report)")
    lam[active] = np.exp(theta)
    return lam


def _project_groups(x: np.ndarray, model: LinearManifold, direction_group: np.ndarray,
                    n_groups: int) -> np.ndarray:
    """Squared norms |P_g x|^2 (..., G) of x (..., d) on the variance groups."""
    coords = x @ model.basis
    sq = coords**2
    keep = direction_group >= 0
    onehot = np.zeros((model.d, n_groups))
    onehot[np.flatnonzero(keep), direction_group[keep]] = 1.0
    return sq @ onehot


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
    lam = np.asarray(lam, dtype=np.float64)
    if lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam <= 0) or np.any(lam > 1):
        raise ValueError(f"lam out of range: allowed 0 < lam <= 1, got {lam!r}")
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
    lam = np.asarray(lam, dtype=np.float64)
    if lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam <= 0) or np.any(lam > 1):
        raise ValueError(f"lam out of range: allowed 0 < lam <= 1, got {lam!r}")
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
        raise ValueError(
            f"{name} out of range: the collapse time {mpmath.nstr(t, 6)} lies outside the "
            f"{schedule.name} domain 0 < t <= {schedule.t_max}")
    return t


def collapse_time(model: LinearManifold, n_train: Any, schedule: Schedule | str, *,
                  log_n_train: Any = None) -> Any:
    """Collapse time t_C(N): root of ``ln N = sum_i ln(1 + a^2 v_i / Delta(t)) / 2``.

    Fresh test points condense on average (annealed lam* < 1) exactly for t < t_C.
    ``n_train`` : N >= 2 as int (arbitrarily large), float, mpmath.mpf or array of them; or
    pass ``n_train=None, log_n_train=ln N``.

    Returns, for scalar input, a float — or an ``mpmath.mpf`` when t_C is outside the normal
    float64 range (e.g. d = 1, N = 1e300 under VE gives t_C ~ e^-1380); for array input a
    float64 array of the input's shape, or an object array of ``mpf`` if any entry is not
    representable. ValueError (naming n_train) when the root lies outside the schedule's time
    domain (e.g. beyond a DDPM schedule's last step). Relative accuracy ~1e-13 (the float64
    log-SNR root; the time map itself is evaluated in mpmath when needed).
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
                       x: Any = None, *, n_nodes: int | None = None) -> np.ndarray:
    """Freezing parameter lam* in (0, 1]: ``KL(q_lam*||p) = ln N`` at test point x.

    lam* = 1 where ``KL(q_1||p) <= ln N`` (not condensed); continuous across the threshold.

    x : (..., d) test points in the ambient basis -> lam* of shape broadcast(t, n_train,
        x.shape[:-1]). Solved by a vectorised safeguarded Newton iteration in ln(lam)
        (relative accuracy ~1e-15).
    x = None : the *quenched* average ``E_x lam*(x)`` over fresh test points x ~ p_t (Gaussian
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

"""Kernels of the large-deviation REM (private to `geomem.theory.rem`; see its docstring).

Input helpers (variance groups, ln N from any numeric type, per-group SNR), the tilted KL
``KL(q_lam||p)`` summed over groups of equal variance with its derivative in ln(lam), the
vectorised safeguarded Newton solve for the freezing parameter lam*, and projections of test
points on the groups.  `geomem.theory.phase` uses these directly.
"""

from __future__ import annotations

import math
from typing import Any

import mpmath
import numpy as np
from scipy import special

from ._checks import show
from .manifold import LinearManifold
from .population import effective_direction_variances
from .schedules import Schedule

__all__ = ["_check_model", "_group_kl", "_log_n", "_log_n_fast", "_project_groups", "_snr",
           "_solve_lam", "_variance_groups"]

#: below this, log1p(y) - y/(1+y) loses digits to cancellation; its 6-term series is exact to 1e-18
_SERIES_CUTOFF = 1e-3
#: Newton iterations stop when a step is below this many ulps of the iterate (float64 limit)
_STEP_ULPS = 8.0
#: relative residual |f| / ln N accepted after the iteration cap (never reached in practice)
_RESIDUAL_RTOL = 1e-9
#: safeguard on the number of vectorised Newton iterations (convergence takes 5-40)
_MAX_NEWTON = 400


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
                f"log_n_train out of range: allowed ln 2 <= log_n_train < inf, got {show(raw)}")
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
            raise ValueError(f"n_train out of range: allowed 2 <= n_train < inf, got {show(n)}")
        out[i] = log_value
    return out.reshape(np.shape(values)), np.ndim(values) == 0


def _log_n_fast(n_train: Any) -> np.ndarray:
    """ln N for plain numeric input (vectorised); falls back to :func:`_log_n` otherwise."""
    arr = np.asarray(n_train)
    if arr.dtype.kind in "iuf":
        arr = arr.astype(np.float64)
        if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 2):
            raise ValueError(f"n_train out of range: allowed 2 <= n_train < inf, got "
                             f"{show(n_train)}")
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



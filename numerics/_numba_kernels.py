"""numba kernels for `geomem.numerics.empirical` (private; float64, parallel over queries).

Same mathematics as the numpy reference: per query the nearest training point ``c`` is the
reference, logits are centred energies, weights below ``exp(LOG_NEGLIGIBLE_WEIGHT)`` (relative to
the max) are skipped — so the covariance loop visits only the weight support, which makes the
memorisation regime fast even on the dense path.  The covariance (upper triangle) is
accumulated with plain loops: no BLAS call happens inside ``prange`` (OpenBLAS called from
numba's OpenMP threads warns "may hang" and oversubscribes the cores).  Exactly two kernels are
compiled, each for one signature (float64, C-contiguous), with ``cache=True``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._empirical_common import LOG_NEGLIGIBLE_WEIGHT, stats_from_moments

__all__ = ["covariances", "score", "weight_statistics"]


@njit(cache=True, inline="always")
def _dot(x, y):
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i] * y[i]
    return acc


@njit(cache=True)
def _row_sq_norms(Y):
    out = np.empty(Y.shape[0])
    for mu in range(Y.shape[0]):
        out[mu] = _dot(Y[mu], Y[mu])
    return out


@njit(cache=True, parallel=True)
def _centred_moments(X, Y, a, delta, with_cov, log_tiny):
    """Per query: stats (Z, S2, T), mean of (y - c) under w, x~ = x - a c, and C_w if asked."""
    B, d = X.shape
    N = Y.shape[0]
    y_sq = _row_sq_norms(Y)
    stats = np.empty((B, 3))
    mean = np.empty((B, d))
    x_rel = np.empty((B, d))
    cov = np.zeros((B if with_cov else 1, d, d))
    for b in prange(B):
        x = X[b]
        # reference: the training point with the largest shared logit (nearest a y to x)
        best = 0
        best_u = -np.inf
        for mu in range(N):
            u = a * _dot(x, Y[mu]) - 0.5 * a * a * y_sq[mu]
            if u > best_u:
                best_u = u
                best = mu
        c = Y[best]
        xr = x - a * c
        v = np.empty(N)
        vmax = 0.0
        for mu in range(N):
            acc_xy = 0.0
            acc_dd = 0.0
            for i in range(d):
                di = Y[mu, i] - c[i]
                acc_xy += xr[i] * di
                acc_dd += di * di
            v[mu] = (a * acc_xy - 0.5 * a * a * acc_dd) / delta
            if v[mu] > vmax:
                vmax = v[mu]
        Z = 0.0
        S2 = 0.0
        T = 0.0
        m = np.zeros(d)
        n_support = 0
        support = np.empty(N, dtype=np.int64)
        e_all = np.empty(N)
        for mu in range(N):
            r = v[mu] - vmax
            if r < log_tiny:
                continue
            e = np.exp(r)
            Z += e
            S2 += e * e
            T += e * r
            for i in range(d):
                m[i] += e * (Y[mu, i] - c[i])
            support[n_support] = mu
            e_all[n_support] = e
            n_support += 1
        m /= Z
        stats[b, 0] = Z
        stats[b, 1] = S2
        stats[b, 2] = T
        mean[b] = m
        x_rel[b] = xr
        if with_cov:
            z = np.empty(d)
            acc = cov[b]
            for j in range(n_support):
                mu = support[j]
                wj = e_all[j] / Z
                for i in range(d):
                    z[i] = Y[mu, i] - c[i] - m[i]            # exact two-pass centring on ybar
                for i in range(d):
                    coef = wj * z[i]
                    for k in range(i, d):
                        acc[i, k] += coef * z[k]
            for i in range(d):                               # mirror the upper triangle
                for k in range(i):
                    acc[i, k] = acc[k, i]
    return stats, mean, x_rel, cov


@njit(cache=True, parallel=True)
def _shared_weight_stats(X, Y, a, delta, proj_sq):
    """Per query: (sum w^2, entropy, max w), ybar (d) and sum w proj_sq (K) — one pass over N."""
    B, d = X.shape
    N = Y.shape[0]
    K = proj_sq.shape[1]
    y_sq = _row_sq_norms(Y)
    out = np.empty((B, 3))
    ybar = np.zeros((B, d))
    wsq = np.zeros((B, K))
    for b in prange(B):
        u = np.empty(N)
        umax = -np.inf
        for mu in range(N):
            u[mu] = a * _dot(X[b], Y[mu]) - 0.5 * a * a * y_sq[mu]
            umax = max(umax, u[mu])
        Z = 0.0
        S2 = 0.0
        T = 0.0
        for mu in range(N):
            r = (u[mu] - umax) / delta
            e = np.exp(r)
            if e == 0.0:
                continue
            Z += e
            S2 += e * e
            T += e * r
            for i in range(d):
                ybar[b, i] += e * Y[mu, i]
            for k in range(K):
                wsq[b, k] += e * proj_sq[mu, k]
        out[b, 0] = S2 / (Z * Z)
        out[b, 1] = np.log(Z) - T / Z
        out[b, 2] = 1.0 / Z
        for i in range(d):
            ybar[b, i] /= Z
        for k in range(K):
            wsq[b, k] /= Z
    return out, ybar, wsq


def _stats(raw: np.ndarray) -> dict[str, np.ndarray]:
    return stats_from_moments(raw[:, 0], raw[:, 1], raw[:, 2])


def _contig(A: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(A, dtype=np.float64)


def covariances(X, Y, a, delta):
    """(B, d, d) C_w and weight statistics (float64)."""
    raw, _, _, cov = _centred_moments(_contig(X), _contig(Y), float(a), float(delta), True,
                                      LOG_NEGLIGIBLE_WEIGHT)
    return cov, _stats(raw)


def score(X, Y, a, delta):
    """(B, d) empirical score (float64)."""
    _, mean, x_rel, _ = _centred_moments(_contig(X), _contig(Y), float(a), float(delta), False,
                                         LOG_NEGLIGIBLE_WEIGHT)
    with np.errstate(over="ignore"):  # overflow is reported by the caller
        return (a * mean - x_rel) / delta


def weight_statistics(X, Y, a, delta, bases):
    """Fields of `WeightStatistics` (float64), expanded-form logits as the numpy backend."""
    Y = _contig(Y)
    if bases:
        proj_sq = np.stack([np.einsum("nm,nm->n", Y @ P, Y @ P) for P in bases], axis=1)
    else:
        proj_sq = np.zeros((Y.shape[0], 0))
    out, ybar, wsq = _shared_weight_stats(_contig(X), Y, float(a), float(delta),
                                          _contig(proj_sq))
    fields = {"sum_w2": out[:, 0], "participation_ratio": 1.0 / out[:, 0],
              "entropy": out[:, 1], "max_weight": out[:, 2],
              "weighted_sq_norm": None, "mean_sq_norm": None}
    if bases:
        fields["weighted_sq_norm"] = wsq
        fields["mean_sq_norm"] = np.stack([np.sum((ybar @ P) ** 2, axis=1) for P in bases],
                                          axis=1)
    return fields

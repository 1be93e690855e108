"""numpy (float64 reference) kernels for `geomem.numerics.empirical` (private).

Centred energies, streaming online log-sum-exp over chunks of N, centred covariance and the
Gram path over the weight support, as described in `geomem.numerics.empirical` and
docs/numerics.md.  Inputs are validated float64 arrays (``_empirical_common.validate``).
"""

from __future__ import annotations

import numpy as np

from . import _empirical_common as common
from ._empirical_common import LOG_NEGLIGIBLE_WEIGHT, SUPPORT_MASS_TOL, pad_zeros, query_block

__all__ = ["covariances", "gram", "row_space", "score", "support_size", "weight_statistics"]


def _shared_logits(X: np.ndarray, Y: np.ndarray, a: float, delta: float,
                   y_sq: np.ndarray) -> np.ndarray:
    """(B, N) logits ``(a x.y - a^2 |y|^2/2) / delta`` shifted by their row max (<= 0).

    The row max is subtracted *before* dividing by delta so nothing overflows.
    """
    u = a * (X @ Y.T) - (0.5 * a * a) * y_sq
    u -= u.max(axis=1, keepdims=True)
    u /= delta
    return u


def _nearest_index(X: np.ndarray, Y: np.ndarray, a: float) -> np.ndarray:
    """(B,) index of the training point with the largest logit (nearest a y_mu to x)."""
    y_sq = np.einsum("nd,nd->n", Y, Y)
    block = query_block(Y.shape[0], 1)
    out = np.empty(X.shape[0], dtype=np.int64)
    for s in range(0, X.shape[0], block):
        u = a * (X[s:s + block] @ Y.T) - (0.5 * a * a) * y_sq
        out[s:s + block] = np.argmax(u, axis=1)
    return out


def _centred_pass(X: np.ndarray, Y: np.ndarray, a: float, delta: float, ref: np.ndarray,
                  scatter: bool) -> dict[str, np.ndarray]:
    """Streaming online-softmax pass with energies and moments centred at ``c = Y[ref]``.

    Returns per query: ``Z`` (sum e), ``S2`` (sum e^2), ``T`` (sum e * logit), ``m1`` (sum e
    (y - c)), and with ``scatter`` ``M2`` (sum e (y - c)(y - c)^T); all relative to the running
    max ``vmax`` (>= 0 because c itself has logit 0).
    """
    B, d = X.shape
    N = Y.shape[0]
    centre = Y[ref]                                   # (B, d)
    x_rel = X - a * centre                            # x~ = x - a c, small near c
    vmax = np.zeros(B)
    Z = np.zeros(B)
    S2 = np.zeros(B)
    T = np.zeros(B)
    m1 = np.zeros((B, d))
    M2 = np.zeros((B, d, d)) if scatter else None
    chunk = common.chunk_size(B, d)
    for s in range(0, N, chunk):
        D = Y[None, s:s + chunk, :] - centre[:, None, :]             # (B, c, d)
        with np.errstate(over="ignore"):  # logits below -1e308 are weight 0 anyway
            v = (a * np.einsum("bd,bcd->bc", x_rel, D)
                 - (0.5 * a * a) * np.einsum("bcd,bcd->bc", D, D)) / delta
        new_max = np.maximum(vmax, v.max(axis=1))
        shift = new_max - vmax                                       # >= 0
        scale = np.exp(-shift)
        r = v - new_max[:, None]
        e = np.exp(r)
        e[r < LOG_NEGLIGIBLE_WEIGHT] = 0.0                           # no denormals in BLAS
        r[e == 0.0] = 0.0                                            # avoid 0 * -inf
        T = scale * (T - shift * Z) + np.einsum("bc,bc->b", e, r)
        Z = scale * Z + e.sum(axis=1)
        S2 = scale * scale * S2 + np.einsum("bc,bc->b", e, e)
        m1 = scale[:, None] * m1 + np.einsum("bc,bcd->bd", e, D)
        if scatter:
            Dw = D * np.sqrt(e)[:, :, None]
            M2 *= scale[:, None, None]
            M2 += np.matmul(Dw.transpose(0, 2, 1), Dw)
        vmax = new_max
    out = {"Z": Z, "S2": S2, "T": T, "m1": m1, "centre": centre, "x_rel": x_rel}
    if scatter:
        out["M2"] = M2
    return out


def _covariance_from_pass(p: dict[str, np.ndarray]) -> np.ndarray:
    Z = p["Z"]
    mean = p["m1"] / Z[:, None]
    C = p["M2"] / Z[:, None, None] - mean[:, :, None] * mean[:, None, :]
    return 0.5 * (C + C.transpose(0, 2, 1))


def score(X: np.ndarray, Y: np.ndarray, a: float, delta: float) -> np.ndarray:
    """(B, d) empirical score ``(a ybar - x) / delta``, centred at the nearest point."""
    out = np.empty_like(X)
    block = query_block(Y.shape[0], Y.shape[1])
    ref = _nearest_index(X, Y, a)
    for s in range(0, X.shape[0], block):
        p = _centred_pass(X[s:s + block], Y, a, delta, ref[s:s + block], scatter=False)
        mean_rel = p["m1"] / p["Z"][:, None]
        with np.errstate(over="ignore"):  # overflow is reported by the caller
            out[s:s + block] = (a * mean_rel - p["x_rel"]) / delta
    return out


def covariances(X: np.ndarray, Y: np.ndarray, a: float, delta: float
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(B, d, d) weighted covariances C_w and (B,) weight statistics."""
    B, d = X.shape
    C = np.empty((B, d, d))
    stats = {k: np.empty(B) for k in ("sum_w2", "participation_ratio", "entropy", "max_weight")}
    ref = _nearest_index(X, Y, a)
    block = query_block(Y.shape[0], d)
    for s in range(0, B, block):
        p = _centred_pass(X[s:s + block], Y, a, delta, ref[s:s + block], scatter=True)
        C[s:s + block] = _covariance_from_pass(p)
        for k, v in common.stats_from_moments(p["Z"], p["S2"], p["T"]).items():
            stats[k][s:s + block] = v
    return C, stats


def weight_statistics(X: np.ndarray, Y: np.ndarray, a: float, delta: float,
                      bases: list | None) -> dict[str, np.ndarray]:
    """Fields of `WeightStatistics` with expanded-form logits (one shared matrix product)."""
    B = X.shape[0]
    y_sq = np.einsum("nd,nd->n", Y, Y)
    proj_sq = None
    if bases:
        proj_sq = np.stack([np.einsum("nm,nm->n", Y @ P, Y @ P) for P in bases], axis=1)
    sum_w2 = np.empty(B)
    entropy = np.empty(B)
    max_weight = np.empty(B)
    wsq = np.empty((B, len(bases))) if bases else None
    msq = np.empty((B, len(bases))) if bases else None
    block = query_block(Y.shape[0], 1)
    for s in range(0, B, block):
        sl = slice(s, s + block)
        logits = _shared_logits(X[sl], Y, a, delta, y_sq)
        e = np.exp(logits)
        Z = e.sum(axis=1)
        w = e / Z[:, None]
        sum_w2[sl] = np.einsum("bn,bn->b", w, w)
        entropy[sl] = np.log(Z) - np.einsum("bn,bn->b", w, np.where(e > 0, logits, 0.0))
        max_weight[sl] = 1.0 / Z                       # the row max has logit 0, e = 1
        if bases:
            wsq[sl] = w @ proj_sq
            ybar = w @ Y
            msq[sl] = np.stack([np.sum((ybar @ P) ** 2, axis=1) for P in bases], axis=1)
    return {"sum_w2": sum_w2, "participation_ratio": 1.0 / sum_w2, "entropy": entropy,
            "max_weight": max_weight, "weighted_sq_norm": wsq, "mean_sq_norm": msq}


def row_space(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis V (d, r) of Y's row space (rank by LOWRANK_RTOL) and coords Y V."""
    # SVD of the triangular factor: same row space, much cheaper than SVD of a tall Y
    R = np.linalg.qr(Y, mode="r") if Y.shape[0] > Y.shape[1] else Y
    _, s, Vt = np.linalg.svd(R, full_matrices=False)
    r = int(np.sum(s > common.LOWRANK_RTOL * s[0])) if s[0] > 0 else 0
    r = max(r, 1)
    V = Vt[:r].T
    return V, Y @ V


def support_size(X: np.ndarray, Y: np.ndarray, a: float, delta: float) -> np.ndarray:
    """(B,) number of training points with weight above SUPPORT_MASS_TOL / N (>= 1)."""
    N = Y.shape[0]
    y_sq = np.einsum("nd,nd->n", Y, Y)
    out = np.empty(X.shape[0], dtype=np.int64)
    block = query_block(N, 1)
    threshold = np.log(SUPPORT_MASS_TOL / N)
    for s in range(0, X.shape[0], block):
        logits = _shared_logits(X[s:s + block], Y, a, delta, y_sq)
        log_z = np.log(np.exp(logits).sum(axis=1))
        out[s:s + block] = np.sum(logits - log_z[:, None] > threshold, axis=1)
    return np.maximum(out, 1)


def gram(X: np.ndarray, Y: np.ndarray, a: float, delta: float, k_max: int, bases: list | None
         ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    """Gram path: eigenvalues (B, d) of C_w from the k_max x k_max matrix over the heaviest
    points, weight statistics (B,) and subspace traces (B, K) or None."""
    B, d = X.shape
    N = Y.shape[0]
    k_max = min(k_max, N)
    y_sq = np.einsum("nd,nd->n", Y, Y)
    lam = np.empty((B, d))
    stats = {k: np.empty(B) for k in ("sum_w2", "participation_ratio", "entropy", "max_weight")}
    traces = np.empty((B, len(bases))) if bases else None
    block = max(1, min(query_block(N, 1), common.BLOCK_ELEMENTS // max(k_max * d, 1)))
    for s in range(0, B, block):
        sl = slice(s, s + block)
        logits = _shared_logits(X[sl], Y, a, delta, y_sq)
        top = np.argpartition(-logits, k_max - 1, axis=1)[:, :k_max]      # (b, K)
        ref = np.argmax(logits, axis=1)
        # exact centred logits over the K candidates (same formula as the dense path)
        centre = Y[ref]
        D = Y[top] - centre[:, None, :]                                  # (b, K, d)
        x_rel = X[sl] - a * centre
        with np.errstate(over="ignore"):  # logits below -1e308 are weight 0 anyway
            v = (a * np.einsum("bd,bkd->bk", x_rel, D)
                 - (0.5 * a * a) * np.einsum("bkd,bkd->bk", D, D)) / delta
        v -= v.max(axis=1, keepdims=True)
        e = np.exp(v)
        Z = e.sum(axis=1)
        w = e / Z[:, None]
        mean = np.einsum("bk,bkd->bd", w, D)
        Zc = (D - mean[:, None, :]) * np.sqrt(w)[:, :, None]            # C_w = Zc^T Zc
        G = np.matmul(Zc, Zc.transpose(0, 2, 1))
        lam[sl] = pad_zeros(np.linalg.eigvalsh(G), d)
        sum_w2 = np.einsum("bk,bk->b", w, w)
        stats["sum_w2"][sl] = sum_w2
        stats["participation_ratio"][sl] = 1.0 / sum_w2
        stats["entropy"][sl] = np.log(Z) - np.einsum("bk,bk->b", w, np.where(e > 0, v, 0.0))
        stats["max_weight"][sl] = w.max(axis=1)
        if bases:
            traces[sl] = np.stack([np.einsum("bkm,bkm->b", Zc @ P, Zc @ P) for P in bases],
                                  axis=1)
    return lam, stats, traces

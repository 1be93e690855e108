"""numba kernel of `geomem.numerics.flipd` (private; float64, parallel over queries).

Per clean point x the energies ``E_mu = a^2 |x - y_mu|^2 / (2 delta)`` are formed from direct
differences (exact 0 at a training point), and ``2 sum_mu w_mu E_mu`` is accumulated with an
online minimum (log-space softmax weights ``w_mu = e^{-(E_mu - E_min)} / Z``): one O(N d) pass,
no BLAS call inside ``prange`` (see `_numba_kernels`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["flipd"]


@njit(cache=True, parallel=True)
def _flipd(X, Y, scale, log_tiny):
    B, d = X.shape
    N = Y.shape[0]
    out = np.empty(B)
    for b in prange(B):
        emin = np.inf
        Z = 0.0
        S = 0.0
        for mu in range(N):
            acc = 0.0
            for i in range(d):
                diff = X[b, i] - Y[mu, i]
                acc += diff * diff
            e = scale * acc
            if e < emin:                       # rescale the accumulators to the new minimum
                if Z > 0.0:
                    f = np.exp(e - emin)
                    Z *= f
                    S *= f
                emin = e
            r = emin - e                       # <= 0
            if r < log_tiny:
                continue
            u = np.exp(r)
            Z += u
            S += u * e
        out[b] = 2.0 * S / Z
    return out


def flipd(X: np.ndarray, Y: np.ndarray, a: float, delta: float, log_tiny: float) -> np.ndarray:
    """(B,) ``2 sum_mu w_mu E_mu`` at ``x_t = a x`` for float64 X (B, d), Y (N, d)."""
    with np.errstate(over="ignore"):
        scale = float(a) * float(a) / (2.0 * float(delta))
    return _flipd(np.ascontiguousarray(X, dtype=np.float64),
                  np.ascontiguousarray(Y, dtype=np.float64), scale, float(log_tiny))

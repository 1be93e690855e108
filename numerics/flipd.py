"""Exact FLIPD of the empirical score (docs/theory.md, "FLIPD"; Kamkari et al. 2024).

``FLIPD(x, t) = d + Delta(t) (tr grad s(x_t) + |s(x_t)|^2)`` at ``x_t = a(t) x`` (no added noise).
For the empirical score ``s = (a ybar - x_t)/Delta`` with Jacobian ``-I/Delta + (a/Delta)^2 C_w``
(THEORY section 4) the d's cancel and

    FLIPD = (a^2 tr C_w + |a ybar - x_t|^2) / Delta = (a^2/Delta) sum_mu w_mu |x - y_mu|^2
          = 2 sum_mu w_mu E_mu,        E_mu = a^2 |x - y_mu|^2 / (2 Delta),

the bias-variance identity ``sum w |y - x|^2 = tr C_w + |ybar - x|^2``.  The last form is a sum of
non-negative terms: evaluated with direct differences and log-space weights it has no
cancellation (at a training point the nearest term is exactly 0 and the rest are
``~ e^{-E} E``), so the result keeps full relative precision down to FLIPD ~ 1e-300.  Cost: one
O(N d) pass per point, memory O(block * chunk * d).

Backends match `empirical_score`: "numpy" (float64 reference), "numba" (float64, parallel over
points) and "torch" (``device``, ``dtype`` float64 or float32, ``return_tensor``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _empirical_common as common
from ._empirical_common import LOG_NEGLIGIBLE_WEIGHT, finite_or_raise, query_block, validate

__all__ = ["empirical_flipd"]


def _numpy_flipd(X: np.ndarray, Y: np.ndarray, a: float, delta: float) -> np.ndarray:
    """(B,) ``2 sum w E`` by a streaming online-softmax pass over chunks of Y (float64)."""
    B, d = X.shape
    with np.errstate(over="ignore"):
        scale = a * a / (2.0 * delta)
    out = np.empty(B)
    block = query_block(Y.shape[0], 1)
    for s in range(0, B, block):
        x = X[s:s + block]
        b = x.shape[0]
        emin = np.full(b, np.inf)
        Z = np.zeros(b)
        S = np.zeros(b)
        chunk = common.chunk_size(b, d)
        for c in range(0, Y.shape[0], chunk):
            diff = x[:, None, :] - Y[None, c:c + chunk, :]          # (b, c, d) direct differences
            with np.errstate(over="ignore", invalid="ignore"):
                E = scale * np.einsum("bcd,bcd->bc", diff, diff)
                new_min = np.minimum(emin, E.min(axis=1))
                f = np.where(np.isfinite(emin), np.exp(new_min - emin), 0.0)   # <= 1
                r = new_min[:, None] - E                            # <= 0
            u = np.where(r < LOG_NEGLIGIBLE_WEIGHT, 0.0, np.exp(np.maximum(r, -745.0)))
            E = np.where(u > 0, E, 0.0)                             # no 0 * inf
            Z = f * Z + u.sum(axis=1)
            S = f * S + np.einsum("bc,bc->b", u, E)
            emin = new_min
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s:s + block] = 2.0 * S / Z
    return out


def _torch_flipd(X: np.ndarray, Y: np.ndarray, a: float, delta: float, *, device: Any = None,
                 dtype: Any = "float64", return_tensor: bool = False):
    """(B,) ``2 sum w E`` on CPU or CUDA, float64 or float32; blocks as `_numpy_flipd`."""
    import torch

    from ._torch_kernels import _setup

    Xt, Yt = _setup(X, Y, device, dtype)
    B, d = Xt.shape
    scale = a * a / (2.0 * delta)
    out = []
    block = query_block(Yt.shape[0], 1)
    with torch.no_grad():
        for s in range(0, B, block):
            x = Xt[s:s + block]
            parts = []
            chunk = common.chunk_size(x.shape[0], d)
            for c in range(0, Yt.shape[0], chunk):
                diff = x[:, None, :] - Yt[None, c:c + chunk, :]
                parts.append(scale * (diff * diff).sum(-1))
            E = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]    # (b, N)
            w = torch.softmax(-E, dim=1)
            out.append(2.0 * (w * torch.where(w > 0, E, torch.zeros_like(E))).sum(1))
    res = torch.cat(out) if out else Xt.new_zeros(0)
    return res if return_tensor else res.detach().cpu().numpy().astype(np.float64)


def empirical_flipd(X: Any, Y: Any, *, a: float, delta: float, backend: str = "numpy",
                    **backend_opts: Any) -> np.ndarray:
    """Exact FLIPD of the empirical score at clean points X, evaluated at ``x_t = a X``.

    Args:
        X: (B, d) clean points x (B = 0 gives a (0,) result); the score is evaluated at
            ``a x`` (no added noise), as in FLIPD's definition.  Y: (N, d) training points.
        a: signal scale a(t) > 0.  delta: noise variance Delta(t) > 0.
        backend: "numpy" (float64 reference), "numba" (float64) or "torch" (opts ``device``,
            ``dtype`` "float64"/"float32", ``return_tensor``).

    Returns:
        (B,) ``FLIPD = d + Delta (tr grad s + |s|^2) = (a^2 tr C_w + |a ybar - a x|^2)/Delta``,
        dimensionless, in [0, inf): 0 when the weights sit on a training point equal to x.
        ValueError (naming the argument) for bad input, before any work; ValueError when the
        energies overflow the backend's float range (delta far too small).
    """
    X, Y, a, delta, _ = validate(X, Y, a, delta, backend)
    if backend != "torch" and backend_opts:
        raise ValueError(f"unknown options {sorted(backend_opts)}: only the torch backend "
                         "takes device, dtype, return_tensor")
    if X.shape[0] == 0:
        if backend == "torch" and backend_opts.get("return_tensor"):
            return _torch_flipd(X, Y, a, delta, **backend_opts)
        return np.empty(0)
    label = backend
    if backend == "torch":
        out = _torch_flipd(X, Y, a, delta, **backend_opts)
        label = f"torch {backend_opts.get('dtype', 'float64')}"
        check = out.detach().cpu().numpy() if hasattr(out, "detach") else out
    elif backend == "numba":
        from . import _flipd_numba
        out = check = _flipd_numba.flipd(X, Y, a, delta, LOG_NEGLIGIBLE_WEIGHT)
    else:
        out = check = _numpy_flipd(X, Y, a, delta)
    finite_or_raise({"FLIPD": check}, delta, label)
    return out

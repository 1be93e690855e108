"""FLIPD of a score network (or any torch score callable) by autodiff (docs/theory.md, "FLIPD").

``FLIPD(x, t) = d + Delta (tr grad s(x_t) + |s(x_t)|^2)`` at ``x_t = a x``.  The score is a torch
callable ``score_fn(x_t) -> s`` on (B, d) tensors (time fixed by the caller, e.g.
``lambda z: net.score(z, t)``), assumed row-wise: output row b depends on input row b only
(true of every per-sample network; a batch norm in training mode would break it).

- **exact** (d <= `EXACT_TRACE_MAX_DIM`): ``tr grad s`` from d forward-mode products
  ``J e_i`` (torch.func.jvp, vmapped over basis vectors in chunks): O(d) network passes.
- **hutchinson** (any d): ``tr J ~ mean_k v_k . J v_k`` over K Rademacher probes (one jvp each);
  unbiased, with standard error ``Delta * std_k(v_k . J v_k) / sqrt(K)`` per point (the
  |s|^2 term is exact, so it is FLIPD's standard error).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from geomem.theory._checks import check_choice, check_int, check_positive

from ._empirical_common import as_float64

__all__ = ["EXACT_TRACE_MAX_DIM", "FlipdEstimate", "network_flipd"]

#: "auto" uses the exact trace up to this dimension (d jvps; a few thousand is minutes at most
#: for the synthetic MLPs), Hutchinson above it
EXACT_TRACE_MAX_DIM = 4096
#: basis vectors per vmapped jvp batch of the exact trace (bounds memory at chunk * B * d)
_TRACE_CHUNK = 256


@dataclass(frozen=True)
class FlipdEstimate:
    """FLIPD per point.

    Attributes:
        flipd (B,): the estimate (dimensionless).
        standard_error (B,): its standard error (0 for the exact trace).
        trace (B,): ``tr grad s`` at ``a x`` (units 1/Delta) or its Hutchinson estimate.
        sq_norm (B,): ``|s(a x)|^2`` (units 1/Delta).
        method: "exact" or "hutchinson"; n_probes: probes used (0 for exact).
    """

    flipd: np.ndarray
    standard_error: np.ndarray
    trace: np.ndarray
    sq_norm: np.ndarray
    method: str
    n_probes: int


def _exact_trace(score_fn, x, d: int):
    import torch
    from torch.func import jvp, vmap

    eye = torch.eye(d, dtype=x.dtype, device=x.device)

    def column(e):                                   # e_i . J e_i for every point, (B,)
        return (jvp(score_fn, (x,), (e.expand_as(x),))[1] * e).sum(-1)

    diag = [vmap(column)(eye[s:s + _TRACE_CHUNK]) for s in range(0, d, _TRACE_CHUNK)]
    return torch.cat(diag, dim=0).sum(0)


def _hutchinson(score_fn, x, n_probes: int, generator):
    import torch
    from torch.func import jvp

    samples = []
    for _ in range(n_probes):
        v = torch.randint(0, 2, x.shape, generator=generator, dtype=torch.int64)
        v = (2 * v - 1).to(dtype=x.dtype, device=x.device)
        samples.append((jvp(score_fn, (x,), (v,))[1] * v).sum(-1))
    return torch.stack(samples)                       # (K, B)


def network_flipd(score_fn: Callable[[Any], Any], X: Any, *, a: float, delta: float,
                  method: str = "auto", n_probes: int = 64, seed: int = 0,
                  device: Any = None, dtype: Any = None) -> FlipdEstimate:
    """FLIPD of a torch score callable at clean points X, evaluated at ``x_t = a X``.

    Args:
        score_fn: maps a (B, d) tensor to the (B, d) score at the fixed time (row-wise).
        X: (B, d) clean points (numpy array or tensor).  a, delta > 0: a(t), Delta(t).
        method: "auto" (exact when d <= EXACT_TRACE_MAX_DIM), "exact" or "hutchinson".
        n_probes: Rademacher probes K >= 2 for Hutchinson.  seed: probe seed (torch CPU
            generator, so the probes do not depend on the device).
        device, dtype: where to evaluate (default: X's device/dtype if a tensor, else CPU
            float64).
    Returns:
        `FlipdEstimate` with (B,) fields.
    """
    import torch

    if not callable(score_fn):
        raise ValueError(f"score_fn must be a callable (B, d) -> (B, d), got "
                         f"{type(score_fn).__name__}")
    a = float(check_positive("a", a).reshape(-1)[0]) if np.ndim(a) == 0 else _bad("a", a)
    delta = (float(check_positive("delta", delta).reshape(-1)[0]) if np.ndim(delta) == 0
             else _bad("delta", delta))
    check_choice("method", method, ("auto", "exact", "hutchinson"))
    n_probes = check_int("n_probes", n_probes, minimum=2)
    seed = check_int("seed", seed, minimum=0)
    if isinstance(X, torch.Tensor):
        x = X.to(device=device or X.device, dtype=dtype or X.dtype)
    else:
        x = torch.as_tensor(as_float64("X", X), dtype=dtype or torch.float64,
                            device=device or "cpu")
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"X must have shape (B, d) with d >= 1, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("X must be finite (no NaN or inf)")
    B, d = x.shape
    used = ("exact" if d <= EXACT_TRACE_MAX_DIM else "hutchinson") if method == "auto" else method
    xt = (a * x).detach()
    with torch.no_grad():
        s = score_fn(xt)
    if tuple(s.shape) != (B, d):
        raise ValueError(f"score_fn must return shape (B, d) = ({B}, {d}), got {tuple(s.shape)}")
    sq = (s.double() ** 2).sum(-1)
    if used == "exact":
        tr = _exact_trace(score_fn, xt, d).double()
        se = torch.zeros_like(tr)
        k = 0
    else:
        gen = torch.Generator().manual_seed(seed)
        samples = _hutchinson(score_fn, xt, n_probes, gen).double()
        tr = samples.mean(0)
        se = delta * samples.std(0, unbiased=True) / math.sqrt(n_probes)
        k = n_probes
    flipd = d + delta * (tr + sq)

    def np64(v):
        return v.detach().cpu().numpy().astype(np.float64)

    return FlipdEstimate(flipd=np64(flipd), standard_error=np64(se), trace=np64(tr),
                         sq_norm=np64(sq), method=used, n_probes=k)


def _bad(name: str, value: Any) -> float:
    raise ValueError(f"{name} must be a real scalar with 0 < {name} < inf, got an array of "
                     f"shape {np.shape(value)}")

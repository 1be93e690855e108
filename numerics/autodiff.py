"""Exact Jacobians of torch score functions by automatic differentiation (THEORY section 6).

`score_jacobian`: dense per-query Jacobians via ``torch.func`` (vmap of jacrev or jacfwd,
chunked over queries).  `extreme_singular_values`: k largest or smallest singular values at one
point, matrix-free (Lanczos on ``v -> J^T J v``, one JVP and one VJP per product).  Both are
re-exported by `geomem.numerics.jacobians`, next to the finite-difference estimators that work
on any (numpy or torch) score callable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from geomem.theory._checks import as_generator, check_choice, check_int

__all__ = [
    "JACOBIAN_BLOCK_ELEMENTS",
    "LANCZOS_MIN_NCV",
    "LANCZOS_TOL_FLOAT32",
    "LANCZOS_TOL_FLOAT64",
    "extreme_singular_values",
    "score_jacobian",
]

#: Default chunk of queries in `score_jacobian`: chunk * d_out * d stays below this (~128 MB f64).
JACOBIAN_BLOCK_ELEMENTS = 2**24
#: Lanczos relative residual tolerance for float64 products: J^T J products carry rounding
#: ~eps * sv_max^2, so eps-level residuals on the smallest Ritz values are unreachable.
LANCZOS_TOL_FLOAT64 = 1e-10
#: Lanczos relative tolerance when products are float32 (their own rounding is ~1e-7).
LANCZOS_TOL_FLOAT32 = 1e-5
#: Default Lanczos basis size (at least 2k + 1): a wide basis is what makes the *smallest*
#: values converge (4e3-7e3 products for d = 100-784 at condition number 40 in tests).
LANCZOS_MIN_NCV = 64

ScoreFn = Callable[..., Any]


def _as_batch(x: Any) -> torch.Tensor:
    x = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    if not (x.is_floating_point()):
        raise ValueError(f"x must be a floating-point array, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (B, d) with B, d >= 1, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x must be finite (no NaN or inf)")
    return x.detach()


def _times(t: Any, x: torch.Tensor) -> torch.Tensor | None:
    """t as a (B, ...) tensor on x's device/dtype (a scalar is broadcast to (B,))."""
    if t is None:
        return None
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t.expand(x.shape[0]).clone()
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"t must be a scalar or have leading dimension B = {x.shape[0]}, "
                         f"got shape {tuple(t.shape)}")
    return t


def _single(fn: ScoreFn, with_t: bool) -> Callable:
    """fn on one point (d,) [and one time], through a batch of size 1."""
    if with_t:
        return lambda xi, ti: fn(xi.unsqueeze(0), ti.unsqueeze(0)).squeeze(0)
    return lambda xi: fn(xi.unsqueeze(0)).squeeze(0)


def _probe(fn: ScoreFn, x: torch.Tensor, t: torch.Tensor | None) -> int:
    """Call fn on the first query; check it returns a (1, d_out) tensor; return d_out."""
    with torch.no_grad():
        res = fn(x[:1]) if t is None else fn(x[:1], t[:1])
    if not isinstance(res, torch.Tensor):
        raise ValueError("fn must be torch-differentiable and return a torch.Tensor (got "
                         f"{type(res).__name__}); for numpy score functions use "
                         "orthogonal_group_singular_values / symmetric_difference_singular_values"
                         " or the closed form in geomem.numerics.empirical")
    if res.ndim != 2 or res.shape[0] != 1:
        raise ValueError(f"fn must map (B, d) to (B, d_out); got {tuple(res.shape)} for B = 1")
    return int(res.shape[1])


def score_jacobian(fn: ScoreFn, x: Any, t: Any = None, *, chunk_size: int | None = None,
                   mode: str = "rev") -> torch.Tensor:
    """Dense Jacobians ``J[b] = d fn(x)[b] / d x[b]`` of a torch score function, per query.

    Uses ``torch.func.vmap`` of ``jacrev`` (mode "rev", d_out backward passes per point) or
    ``jacfwd`` (mode "fwd", d forward-mode passes), over chunks of queries to bound memory.

    Args:
        fn: ``fn(x)`` or ``fn(x, t)`` mapping (B, d) [and (B,) times] to (B, d_out); must treat
            batch rows independently (no batch norm in training mode).
        x: (B, d) query points (tensor or array; arrays become tensors of their own dtype).
        t: optional time: scalar (broadcast to (B,)) or (B, ...) tensor, passed as fn's 2nd arg.
        chunk_size: queries per vmap call (default: chunk * d_out * d <= 2^24).
        mode: "rev" or "fwd".

    Returns:
        (B, d_out, d) tensor on x's device and dtype.
    """
    check_choice("mode", mode, ("rev", "fwd"))
    x = _as_batch(x)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    t = _times(t, x)
    B, d = x.shape
    d_out = _probe(fn, x, t)
    chunk = chunk_size or max(1, JACOBIAN_BLOCK_ELEMENTS // (d * d_out))
    jac = torch.func.jacrev if mode == "rev" else torch.func.jacfwd
    single = _single(fn, t is not None)
    batched = torch.func.vmap(jac(single, argnums=0))
    parts = []
    for s in range(0, B, chunk):
        args = (x[s:s + chunk],) if t is None else (x[s:s + chunk], t[s:s + chunk])
        parts.append(batched(*args).detach())
    return torch.cat(parts, dim=0)


def extreme_singular_values(fn: ScoreFn, x: Any, k: int, which: str = "largest", *,
                            t: Any = None, tol: float | None = None,
                            maxiter: int | None = None, ncv: int | None = None,
                            rng: np.random.Generator | int | None = None) -> np.ndarray:
    """k largest or smallest singular values of ``J = d fn / dx`` at one point, matrix-free.

    Lanczos (``scipy.sparse.linalg.eigsh``) on the symmetric PSD operator ``v -> J^T (J v)``,
    each product one ``torch.func.jvp`` and one VJP (the VJP closure is built once); J is
    never formed, so memory is O(d) per product.  Singular values are ``sqrt`` of the Ritz
    values, so the smallest are accurate only to ~``sqrt(eps) * sv_max`` absolute, and they
    converge slowly when J is ill conditioned (Lanczos on J^T J sees the squared condition
    number): the largest need ~d/10 products, the smallest thousands.

    Args:
        fn: torch ``fn(x)`` or ``fn(x, t)`` on (B, d) batches, as in `score_jacobian`.
        x: (d,) or (1, d) point.  k: 1 <= k < d.
        which: "largest" (returned descending) or "smallest" (returned ascending).
        t: optional time (scalar) passed as fn's second argument.
        tol: Lanczos relative tolerance (default `LANCZOS_TOL_FLOAT64` or
            `LANCZOS_TOL_FLOAT32` by x's dtype).  maxiter: restarts (scipy default 10 d).
        ncv: Lanczos basis size, 2k < ncv <= d (default min(d, max(2k + 1, LANCZOS_MIN_NCV))).
        rng: seed of the random start vector.

    Returns:
        (k,) float64 singular values.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    check_choice("which", which, ("largest", "smallest"))
    x = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    x = _as_batch(x.reshape(1, -1) if x.ndim == 1 else x)
    if x.shape[0] != 1:
        raise ValueError(f"x must be a single point of shape (d,) or (1, d), got {tuple(x.shape)}")
    d = x.shape[1]
    if d < 2:
        raise ValueError("extreme_singular_values needs d >= 2 (use score_jacobian for d = 1)")
    k = check_int("k", k, minimum=1, maximum=d - 1)
    tt = _times(t, x)
    if tt is not None and tt.numel() != 1:
        raise ValueError("t must be a scalar for a single point")
    _probe(fn, x, tt)
    point = x[0]
    if tt is None:
        def single(xi):
            return fn(xi.unsqueeze(0)).squeeze(0)
    else:
        def single(xi):
            return fn(xi.unsqueeze(0), tt).squeeze(0)
    _, vjp_fn = torch.func.vjp(single, point)
    dtype, device = x.dtype, x.device

    def gram_product(v: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.ascontiguousarray(v).reshape(-1), dtype=dtype, device=device)
        _, jv = torch.func.jvp(single, (point,), (v,))
        (jtjv,) = vjp_fn(jv)
        return jtjv.detach().cpu().numpy().astype(np.float64)

    operator = LinearOperator((d, d), matvec=gram_product, dtype=np.float64)
    if tol is None:
        tol = LANCZOS_TOL_FLOAT64 if dtype == torch.float64 else LANCZOS_TOL_FLOAT32
    ncv = min(d, max(2 * k + 1, LANCZOS_MIN_NCV)) if ncv is None else \
        check_int("ncv", ncv, minimum=min(2 * k + 1, d), maximum=d)
    v0 = as_generator("rng", rng).standard_normal(d)
    ritz = eigsh(operator, k=k, which="LA" if which == "largest" else "SA", tol=tol,
                 maxiter=maxiter, ncv=ncv, v0=v0, return_eigenvectors=False)
    sv = np.sqrt(np.clip(ritz, 0.0, None))
    return np.sort(sv)[::-1] if which == "largest" else np.sort(sv)

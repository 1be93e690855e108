"""Jacobians of arbitrary score functions and the spectral estimators of THEORY section 6.

Two kinds of tools:

- **Exact, autodiff** (torch score functions or modules): `score_jacobian` (dense (B, d, d) via
  ``torch.func`` jacrev/jacfwd + vmap, chunked over queries) and `extreme_singular_values`
  (matrix-free Lanczos on ``J^T J`` products built from one JVP and one VJP, for large d).
- **Black-box, finite differences** (any score callable, numpy or torch):
  `orthogonal_group_singular_values` (the paper's synthetic-experiment estimator) and
  `symmetric_difference_singular_values` (the paper's image estimator), plus the figure
  normalisation `normalize_spectrum` and the empirical-score-panel protocol
  `paper_protocol_spectra`.

What the finite-difference estimators measure, exactly.  With ``J`` the Jacobian of ``s`` at x0:

- Orthogonal group: rows ``S_k = s(x0 + sigma z_k) / sigma`` with ``Z`` Haar orthogonal, so for
  a *linear* score ``s(x) = -A x`` (any square A),
  ``S = -Z A - 1 (A x0)^T / sigma``.  Since ``Z`` is orthogonal, ``sv(Z A) = sv(A)``: the
  estimator returns the singular values of the Jacobian ``-A`` exactly (factor 1) whenever
  ``s(x0) = -A x0 = 0`` (e.g. x0 = origin, the paper's empirical-score panel), or for any x0
  with ``subtract_center=True`` (rows ``(s(x0 + sigma z_k) - s(x0)) / sigma``).  Otherwise the
  rank-one term ``1 s(x0)^T / sigma`` (singular value ``sqrt(d) |s(x0)| / sigma``) is added:
  it is why the paper drops the largest singular value, and by Weyl's inequalities for a
  rank-one update the remaining values interlace with the exact ones,
  ``sv_{i+1}(J) <= sv_i(S) <= sv_{i-1}(J)`` — not exact.  For a nonlinear score each row is
  ``s(x0)/sigma + J z_k + O(sigma)``.
- Symmetric differences: rows ``(s(x0 + sigma n_k) - s(x0 - sigma n_k)) / 2 = sigma J n_k`` plus
  third-order terms (the even part of s cancels), so the estimator is exact for linear *and*
  quadratic scores.  With K = q d directions made of q stacked Haar bases, ``N^T N = q I`` and
  the stack has singular values ``sigma sqrt(q) sv(J)``; with ``rescale=True`` (default) this
  factor is divided out so the result estimates ``sv(J)`` itself.

Score-function convention: ``score_fn`` maps a (B, d) batch to a (B, d) batch.  numpy callables
(e.g. ``lambda X: empirical_score(X, Y, a=1.0, delta=t)``) receive float64 numpy arrays; if
``x0`` is a torch tensor the callable receives tensors of x0's dtype and device instead.  The
autodiff functions need a torch-differentiable ``fn``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from geomem.theory._checks import check_choice, check_int, check_positive

__all__ = [
    "JACOBIAN_BLOCK_ELEMENTS",
    "LANCZOS_MIN_NCV",
    "LANCZOS_TOL_FLOAT32",
    "LANCZOS_TOL_FLOAT64",
    "PAPER_REPETITIONS",
    "PAPER_SIGMAS",
    "extreme_singular_values",
    "haar_orthogonal",
    "normalize_spectrum",
    "orthogonal_group_singular_values",
    "paper_protocol_spectra",
    "score_jacobian",
    "symmetric_difference_singular_values",
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
#: The empirical-score panel of the paper: probe scales sigma = linspace(1, 0.01, 100) [pub].
PAPER_SIGMAS = np.linspace(1.0, 0.01, 100)
#: ... averaged over this many independent orthogonal matrices [pub].
PAPER_REPETITIONS = 5
#: Queries per score call in the finite-difference estimators (bounds B x d temporaries).
_DEFAULT_BATCH = 4096

ScoreFn = Callable[..., Any]


# ----------------------------------------------------------------------------- helpers

def haar_orthogonal(d: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """(d, d) Haar-random orthogonal matrix: QR of a Gaussian matrix with the sign fix.

    Multiplying the columns of Q by sign(diag R) makes the factorisation unique, which is what
    makes Q exactly Haar distributed (Mezzadri 2007).
    """
    d = check_int("d", d, minimum=1)
    rng = np.random.default_rng(rng)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return q * signs


def _point(name: str, x0: Any) -> tuple[np.ndarray, torch.Tensor | None]:
    """x0 as a finite float64 (d,) numpy vector; also the tensor itself when x0 is a tensor."""
    tensor = x0 if isinstance(x0, torch.Tensor) else None
    arr = (x0.detach().cpu().numpy() if tensor is not None else np.asarray(x0))
    try:
        arr = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real vector of shape (d,)") from exc
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"{name} must have shape (d,) or (1, d) with d >= 1, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr, tensor


def _evaluate(score_fn: ScoreFn, X: np.ndarray, like: torch.Tensor | None,
              batch_size: int) -> np.ndarray:
    """score_fn on the rows of X (float64 numpy), in batches; returns float64 (B, d)."""
    out = []
    for s in range(0, X.shape[0], batch_size):
        block = X[s:s + batch_size]
        if like is not None:
            with torch.no_grad():
                res = score_fn(torch.as_tensor(block, dtype=like.dtype, device=like.device))
        else:
            res = score_fn(block)
        if isinstance(res, torch.Tensor):
            res = res.detach().cpu().numpy()
        res = np.asarray(res, dtype=np.float64)
        if res.shape != block.shape:
            raise ValueError(f"score_fn must map a (B, d) batch to (B, d); got {res.shape} "
                             f"for input {block.shape}")
        out.append(res)
    return np.concatenate(out, axis=0)


def _n_directions(n_directions: Any, default: int) -> int:
    return default if n_directions is None else check_int("n_directions", n_directions, minimum=1)


def _directions(K: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """(K, d) rows from ceil(K/d) independent Haar bases, stacked and truncated."""
    blocks = [haar_orthogonal(d, rng) for _ in range(-(-K // d))]
    return np.concatenate(blocks, axis=0)[:K]


def _svdvals(S: np.ndarray) -> np.ndarray:
    return np.linalg.svd(S, compute_uv=False)          # descending


# ----------------------------------------------------------------------------- estimators

def orthogonal_group_singular_values(score_fn: ScoreFn, x0: Any, sigma: float, *,
                                     rng: np.random.Generator | int | None = None,
                                     n_directions: int | None = None,
                                     subtract_center: bool = False,
                                     batch_size: int = _DEFAULT_BATCH) -> np.ndarray:
    """The paper's orthogonal-group estimator of the singular values of ``J = ds/dx`` at x0.

    Rows ``S_k = s(x0 + sigma z_k) / sigma`` for the rows z_k of a Haar orthogonal matrix Z
    (THEORY section 6).  Exact (factor 1) for a linear score ``s = -A x`` when ``s(x0) = 0`` or
    with ``subtract_center=True`` (rows ``(s(x0 + sigma z_k) - s(x0)) / sigma``, one extra
    evaluation); otherwise the largest value carries the rank-one term ``sqrt(d)|s(x0)|/sigma``
    (drop it with `normalize_spectrum`) — see the module docstring.

    Args:
        score_fn: (B, d) -> (B, d) callable (numpy or torch, see module docstring).
        x0: (d,) base point (numpy array or torch tensor).
        sigma: probe scale > 0 (same units as x).
        rng: seed or Generator for Z.
        n_directions: number K of rows of Z used, 1 <= K <= d (default d).
        subtract_center: subtract s(x0) from every row (not in the paper's protocol).
        batch_size: queries per score call.

    Returns:
        (K,) singular values of S (units of the score per unit x), descending.
    """
    x, like = _point("x0", x0)
    sigma = float(check_positive("sigma", sigma))
    d = x.size
    K = _n_directions(n_directions, d)
    if K > d:
        raise ValueError(f"n_directions out of range: allowed 1 <= n_directions <= d = {d}, "
                         f"got {K} (use symmetric_difference_singular_values for K > d)")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    Z = haar_orthogonal(d, np.random.default_rng(rng))[:K]
    queries = x[None, :] + sigma * Z
    if subtract_center:
        queries = np.concatenate([queries, x[None, :]], axis=0)
    values = _evaluate(score_fn, queries, like, batch_size)
    S = values[:K] - values[K] if subtract_center else values
    return _svdvals(S / sigma)


def symmetric_difference_singular_values(score_fn: ScoreFn, x0: Any, sigma: float, *,
                                         n_directions: int | None = None,
                                         rng: np.random.Generator | int | None = None,
                                         rescale: bool = True,
                                         batch_size: int = _DEFAULT_BATCH) -> np.ndarray:
    """Symmetrised-difference estimator (the paper's image protocol, THEORY section 6).

    Rows ``(s(x0 + sigma n_k) - s(x0 - sigma n_k)) / 2`` over K unit noise directions n_k taken
    from ceil(K/d) stacked independent Haar bases; singular values of the (K, d) stack.  For the
    image protocol pass ``x0 = sqrt(abar) * image``.

    Args:
        score_fn: (B, d) -> (B, d) callable (numpy or torch).
        x0: (d,) base point.  sigma: probe scale > 0.
        n_directions: K >= 1 (default 4 d, the paper's choice).
        rng: seed or Generator.
        rescale: divide by ``sigma sqrt(K/d)`` so the values estimate ``sv(J)``; exact for
            linear and quadratic scores when K is a multiple of d (then ``N^T N = (K/d) I``).
            False returns the raw stack singular values (the paper's, scale-free read-off).
        batch_size: queries per score call (2K queries in all).

    Returns:
        (min(K, d),) singular values, descending.
    """
    x, like = _point("x0", x0)
    sigma = float(check_positive("sigma", sigma))
    d = x.size
    K = _n_directions(n_directions, 4 * d)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    noise = _directions(K, d, np.random.default_rng(rng))
    queries = np.concatenate([x + sigma * noise, x - sigma * noise], axis=0)
    values = _evaluate(score_fn, queries, like, batch_size)
    stack = 0.5 * (values[:K] - values[K:])
    sv = _svdvals(stack)
    return sv / (sigma * np.sqrt(K / d)) if rescale else sv


def normalize_spectrum(sv: Any, drop_largest: int = 1) -> np.ndarray:
    """The paper's figure normalisation: sort descending, drop the largest, divide by the max.

    Args:
        sv: (..., d) singular values (any order, >= 0).
        drop_largest: how many of the largest values to drop, 0 <= drop_largest < d (the
            orthogonal-group figure drops 1, the published theory curve drops 7).

    Returns:
        (..., d - drop_largest) values in [0, 1], descending, the first equal to 1.
    """
    arr = np.asarray(sv, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[-1] < 1 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("sv must be a finite, non-negative array of shape (..., d) with d >= 1")
    drop = check_int("drop_largest", drop_largest, minimum=0, maximum=arr.shape[-1] - 1)
    kept = -np.sort(-arr, axis=-1)[..., drop:]
    top = kept[..., :1]
    if np.any(top <= 0):
        raise ValueError("sv has no positive value left after dropping the largest: "
                         "cannot normalise by the max")
    return kept / top


def paper_protocol_spectra(score_fn_at_sigma: Callable[[float], ScoreFn], x0: Any,
                           sigmas: Any = None, repetitions: int = PAPER_REPETITIONS,
                           rng: np.random.Generator | int | None = None) -> np.ndarray:
    """The paper's empirical-score panel: orthogonal-group spectra per sigma, averaged.

    For each sigma (default ``PAPER_SIGMAS`` = linspace(1, 0.01, 100)) the score
    ``score_fn_at_sigma(sigma)`` is probed with `orthogonal_group_singular_values` at scale
    sigma, ``repetitions`` times with independent Z, and the raw singular values are averaged
    (descending order kept per repetition).  The caller decides how sigma maps to diffusion time
    (VE noise variance t = sigma^2, or t = sigma); the paper uses x0 = origin.  Apply
    `normalize_spectrum` for the figure.

    Returns:
        (len(sigmas), d) mean singular values, descending along the last axis.
    """
    x, like = _point("x0", x0)
    sig = PAPER_SIGMAS if sigmas is None else check_positive("sigmas", sigmas).reshape(-1)
    reps = check_int("repetitions", repetitions, minimum=1)
    if not callable(score_fn_at_sigma):
        raise ValueError("score_fn_at_sigma must be a callable sigma -> score_fn")
    gen = np.random.default_rng(rng)
    point = x if like is None else like
    out = np.empty((sig.size, x.size))
    for i, s in enumerate(sig):
        fn = score_fn_at_sigma(float(s))
        out[i] = np.mean([orthogonal_group_singular_values(fn, point, float(s), rng=gen)
                          for _ in range(reps)], axis=0)
    return out


# ----------------------------------------------------------------------------- autodiff

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
    v0 = np.random.default_rng(rng).standard_normal(d)
    ritz = eigsh(operator, k=k, which="LA" if which == "largest" else "SA", tol=tol,
                 maxiter=maxiter, ncv=ncv, v0=v0, return_eigenvectors=False)
    sv = np.sqrt(np.clip(ritz, 0.0, None))
    return np.sort(sv)[::-1] if which == "largest" else np.sort(sv)

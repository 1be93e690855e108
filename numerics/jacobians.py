"""Jacobians of arbitrary score functions and the spectral estimators of THEORY section 6.

Two kinds of tools:

- **Exact, autodiff** (torch score functions or modules), implemented in
  `geomem.numerics.autodiff` and re-exported here: `score_jacobian` (dense (B, d, d) via
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
  ``S = -Z A^T - 1 (A x0)^T / sigma`` (row k is ``-(A z_k)^T``).  Since ``Z`` is orthogonal,
  ``sv(Z A^T) = sv(A)``: the
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

from geomem.theory._checks import as_generator, as_real, check_int, check_positive

from .autodiff import (
    JACOBIAN_BLOCK_ELEMENTS,
    LANCZOS_MIN_NCV,
    LANCZOS_TOL_FLOAT32,
    LANCZOS_TOL_FLOAT64,
    extreme_singular_values,
    score_jacobian,
)

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

#: The empirical-score panel of the paper: probe scales sigma = linspace(1, 0.01, 100) [pub].
PAPER_SIGMAS = np.linspace(1.0, 0.01, 100)
#: ... averaged over this many independent orthogonal matrices [pub].
PAPER_REPETITIONS = 5
#: most repetitions `paper_protocol_spectra` accepts (the paper uses 5; more is a typo)
MAX_REPETITIONS = 10**6
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
    rng = as_generator("rng", rng)
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
    except (TypeError, ValueError, OverflowError) as exc:
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
    Z = haar_orthogonal(d, as_generator("rng", rng))[:K]
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
    noise = _directions(K, d, as_generator("rng", rng))
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
    arr = as_real("sv", sv)
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
    reps = check_int("repetitions", repetitions, minimum=1, maximum=MAX_REPETITIONS)
    if not callable(score_fn_at_sigma):
        raise ValueError("score_fn_at_sigma must be a callable sigma -> score_fn")
    gen = as_generator("rng", rng)
    point = x if like is None else like
    out = np.empty((sig.size, x.size))
    for i, s in enumerate(sig):
        fn = score_fn_at_sigma(float(s))
        out[i] = np.mean([orthogonal_group_singular_values(fn, point, float(s), rng=gen)
                          for _ in range(reps)], axis=0)
    return out

"""Exact score, Jacobian and weight statistics of the empirical (kernel) density.

For a training set ``Y`` (N, d) and a noising step ``x = a y + sqrt(delta) xi`` the empirical
density is ``p(x) = (1/N) sum_mu N(x; a y_mu, delta I)`` (THEORY section 4).  With softmax weights
``w_mu(x) ∝ exp(-|x - a y_mu|^2 / (2 delta))`` and ``ybar = sum_mu w_mu y_mu``:

- score     ``s(x) = (a ybar - x) / delta``                                  (B, d)
- Jacobian  ``J(x) = -I/delta + (a^2/delta^2) C_w``, ``C_w = sum w (y - ybar)(y - ybar)^T``

J is symmetric; its eigenvalues are ``-1/delta + (a/delta)^2 lambda_i(C_w)`` (ascending), and the
singular values are their absolute values.

Numerical choices (documented in docs/numerics.md):

- **Centred energies.**  Per query we pick a reference training point ``c`` (the nearest one,
  found with a cheap shared matrix product) and evaluate logits as
  ``(a x~.(y - c) - a^2 |y - c|^2 / 2) / delta`` with ``x~ = x - a c``.  The constant ``|x|^2``
  term cancels in the softmax and is dropped; working relative to ``c`` keeps the logits accurate
  when ``delta`` is tiny (1e-12) and finite when ``|x|`` is huge (1e100).
- **Streaming over N** in chunks with an online log-sum-exp: running max, accumulators of
  ``sum e``, ``sum e (y - c)``, ``sum e (y - c)(y - c)^T`` rescaled whenever the max grows.
  Memory is O(B * chunk * d + B * d^2), never O(B * N * d).
- **Centred covariance.**  ``C_w = S/Z - m m^T`` with ``m = ybar - c``: when the weights
  condense on ``c`` the correction ``m m^T`` is tiny, so no catastrophic cancellation.
- **Paths.**  ``dense`` (d x d matrix per query), ``gram`` (K x K matrix over the K points that
  carry all but ``SUPPORT_MASS_TOL`` of the mass: memorisation regime) and ``lowrank`` (data of
  numerical rank r << d: every quantity lives in the r-dimensional row space of Y).  ``auto``
  picks gram (cheapest test, O(B N d)), then lowrank (one SVD of Y), then dense.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _numpy_kernels
from ._empirical_common import (
    BLOCK_ELEMENTS,
    GRAM_MAX_SUPPORT_FRACTION,
    LOG_NEGLIGIBLE_WEIGHT,
    LOWRANK_MAX_RANK_FRACTION,
    LOWRANK_MIN_DIM,
    LOWRANK_RTOL,
    MAX_NORM,
    SUPPORT_MASS_TOL,
    JacobianSpectrum,
    WeightStatistics,
    finite_or_raise,
    pad_zeros,
    validate,
)

__all__ = [
    "BLOCK_ELEMENTS",
    "GRAM_MAX_SUPPORT_FRACTION",
    "LOG_NEGLIGIBLE_WEIGHT",
    "LOWRANK_MAX_RANK_FRACTION",
    "LOWRANK_MIN_DIM",
    "LOWRANK_RTOL",
    "MAX_NORM",
    "SUPPORT_MASS_TOL",
    "JacobianSpectrum",
    "WeightStatistics",
    "empirical_jacobian",
    "empirical_score",
    "jacobian_eigenvalues",
    "jacobian_spectrum",
    "weight_statistics",
]

_STAT_FIELDS = ("sum_w2", "participation_ratio", "entropy", "max_weight")


# ----------------------------------------------------------------------------- helpers

def _no_opts(opts: dict) -> None:
    if opts:
        raise ValueError(f"unknown options {sorted(opts)}: only the torch backend takes "
                         "device, dtype, return_tensor")


def _torch_opts(opts: dict) -> tuple[dict, str]:
    """Backend options without ``return_tensor`` and a label of the float type (messages)."""
    return ({k: v for k, v in opts.items() if k != "return_tensor"},
            f"torch {opts.get('dtype', 'float64')}")


def _jacobian_from_cov(lam: np.ndarray, a: float, delta: float) -> np.ndarray:
    """``-1/delta + (a/delta)^2 lam`` written as ``(a^2 lam / delta - 1) / delta`` so that
    delta ~ 1e-300 gives -1/delta exactly for condensed weights instead of overflowing."""
    with np.errstate(over="ignore", invalid="ignore"):
        return (a * a * lam / delta - 1.0) / delta


def _empty_spectrum(d: int, path: str, bases: list | None) -> JacobianSpectrum:
    """Result for B = 0 queries: (0, d) eigenvalues, (0,) statistics, (0, K) traces."""
    return JacobianSpectrum(eigenvalues=np.empty((0, d)), subspace_traces=(
        None if bases is None else np.empty((0, len(bases)))),
        path="dense" if path == "auto" else path,
        **{f: np.empty(0) for f in _STAT_FIELDS})


# ----------------------------------------------------------------------------- public API

def empirical_score(X: Any, Y: Any, *, a: float, delta: float, backend: str = "numpy",
                    **backend_opts: Any) -> np.ndarray:
    """Score ``grad log p(x)`` of the empirical density at queries X.

    Args:
        X: (B, d) query points (B = 0 gives a (0, d) result).  Y: (N, d) training points.
        a: signal scale a(t) > 0.  delta: noise variance Delta(t) > 0.
        backend: "numpy" (float64 reference), "numba" or "torch" (opts ``device``, ``dtype``,
            ``return_tensor``).

    Returns:
        (B, d) score ``(a ybar - x) / delta``.  ValueError (naming the argument) when
        ``|x|`` or ``a |y|`` exceeds `MAX_NORM` or the score overflows float64.
    """
    X, Y, a, delta, _ = validate(X, Y, a, delta, backend)
    if backend == "torch":
        from . import _torch_kernels
        out = _torch_kernels.score(X, Y, a, delta, **backend_opts)
        finite_or_raise({"the score": out.detach().cpu().numpy() if hasattr(out, "detach")
                         else out}, delta, _torch_opts(backend_opts)[1])
        return out
    _no_opts(backend_opts)
    if X.shape[0] == 0:
        return np.empty((0, Y.shape[1]))
    if backend == "numba":
        from . import _numba_kernels
        out = _numba_kernels.score(X, Y, a, delta)
    else:
        out = _numpy_kernels.score(X, Y, a, delta)
    finite_or_raise({"the score": out}, delta, backend)
    return out


def weight_statistics(X: Any, Y: Any, *, a: float, delta: float,
                      subspaces: Sequence[Any] | None = None,
                      backend: str = "numpy", **backend_opts: Any) -> WeightStatistics:
    """Softmax-weight statistics per query, O(B N d), no eigendecomposition.

    Logits use the expanded form ``(a x.y - a^2|y|^2/2)/delta`` with one shared matrix product
    (fast: B = 1e4, N = 1000, d = 30 takes ~0.1 s); its absolute logit error is about
    ``eps * a |x| |y| / delta`` — use `jacobian_spectrum` (centred energies) when delta is below
    ~1e-10 |x||y|.

    Args:
        X (B, d), Y (N, d), a > 0, delta > 0 as in `empirical_score` (B = 0 allowed).
        subspaces: optional list of (d, m_k) orthonormal bases P_k.

    Returns:
        `WeightStatistics` with (B,) fields and, with subspaces, (B, K)
        ``weighted_sq_norm = sum w |P_k^T y|^2`` and ``mean_sq_norm = |P_k^T ybar|^2``.
    """
    X, Y, a, delta, bases = validate(X, Y, a, delta, backend, subspaces)
    label = backend
    if X.shape[0] == 0:
        if backend != "torch":
            _no_opts(backend_opts)
        empty_k = None if not bases else np.empty((0, len(bases)))
        return WeightStatistics(**{f: np.empty(0) for f in _STAT_FIELDS},
                                weighted_sq_norm=empty_k, mean_sq_norm=empty_k)
    if backend == "torch":
        from . import _torch_kernels
        fields = _torch_kernels.weight_statistics(X, Y, a, delta, bases, **backend_opts)
        label = _torch_opts(backend_opts)[1]
        if backend_opts.get("return_tensor"):
            return WeightStatistics(**fields)
    elif backend == "numba":
        from . import _numba_kernels
        _no_opts(backend_opts)
        fields = _numba_kernels.weight_statistics(X, Y, a, delta, bases)
    else:
        _no_opts(backend_opts)
        fields = _numpy_kernels.weight_statistics(X, Y, a, delta, bases)
    finite_or_raise(fields, delta, label)
    return WeightStatistics(**fields)


def empirical_jacobian(X: Any, Y: Any, *, a: float, delta: float, backend: str = "numpy",
                       **backend_opts: Any) -> np.ndarray:
    """(B, d, d) Jacobian ``-I/delta + (a/delta)^2 C_w`` of the empirical score (small d).

    Same arguments as `empirical_score`; B = 0 gives a (0, d, d) array.
    """
    X, Y, a, delta, _ = validate(X, Y, a, delta, backend)
    d = Y.shape[1]
    if X.shape[0] == 0:
        return np.empty((0, d, d))
    C = _covariances(X, Y, a, delta, backend, backend_opts)[0]
    with np.errstate(over="ignore", invalid="ignore"):
        J = (a * a * C / delta - np.eye(d)) / delta
    finite_or_raise({"the Jacobian": J}, delta, backend)
    return J


def _covariances(X, Y, a, delta, backend, opts, on_device=False):
    """(B, d, d) weighted covariances C_w plus weight statistics, for any backend.

    With ``on_device`` the torch backend returns C_w as a tensor (eigenvalues on its device).
    """
    if backend == "torch":
        from . import _torch_kernels
        return _torch_kernels.covariances(X, Y, a, delta, return_tensor=on_device,
                                          **_torch_opts(opts)[0])
    _no_opts(opts)
    if backend == "numba":
        from . import _numba_kernels
        return _numba_kernels.covariances(X, Y, a, delta)
    return _numpy_kernels.covariances(X, Y, a, delta)


def jacobian_eigenvalues(X: Any, Y: Any, *, a: float, delta: float, backend: str = "numpy",
                         path: str = "auto", **opts: Any) -> np.ndarray:
    """(B, d) exact eigenvalues of the empirical-score Jacobian, ascending.

    Singular values are their absolute values.  See `jacobian_spectrum` for paths and options.
    """
    return jacobian_spectrum(X, Y, a=a, delta=delta, backend=backend, path=path,
                             **opts).eigenvalues


def jacobian_spectrum(X: Any, Y: Any, *, a: float, delta: float, backend: str = "numpy",
                      path: str = "auto", subspaces: Sequence[Any] | None = None,
                      **opts: Any) -> JacobianSpectrum:
    """Exact Jacobian eigenvalues and weight statistics of the empirical score, in one call.

    Args:
        X: (B, d) queries (B = 0: empty fields, path "dense" under auto).  Y: (N, d) training
            set.  a, delta > 0: a(t), Delta(t).
        backend: "numpy" (float64 reference), "numba" (float64) or "torch" (``device``,
            ``dtype``).
        path: "auto" | "dense" (d x d per query) | "gram" (K x K over the weight support;
            memorisation) | "lowrank" (r x r in the row space of Y, rank by ``LOWRANK_RTOL``).
        subspaces: optional list of (d, m_k) orthonormal bases; fills ``subspace_traces``.

    Returns:
        `JacobianSpectrum` (eigenvalues (B, d) ascending, weight statistics, path used).
        ValueError (naming the argument) when ``|x|`` or ``a |y|`` exceeds `MAX_NORM`, or when
        an eigenvalue ``~ a^2 lambda(C_w) / delta^2`` overflows float64 (delta too small).
    """
    X, Y, a, delta, bases = validate(X, Y, a, delta, backend, subspaces, path)
    d = X.shape[1]
    if X.shape[0] == 0:
        if backend != "torch":
            _no_opts(opts)
        return _empty_spectrum(d, path, bases)
    label = _torch_opts(opts)[1] if backend == "torch" else backend
    if path == "gram":
        out = _gram_by_support(X, Y, a, delta, _numpy_kernels.support_size(X, Y, a, delta),
                               bases, backend, opts)
    elif path != "auto":
        out = _spectrum_on(X, Y, a, delta, path, bases, backend, opts)
    else:
        out = _auto(X, Y, a, delta, bases, backend, opts)
    finite_or_raise({"the Jacobian eigenvalues": out.eigenvalues,
                     "the weight statistics": out.sum_w2,
                     "the subspace traces": out.subspace_traces}, delta, label)
    return out


def _auto(X, Y, a, delta, bases, backend, opts) -> JacobianSpectrum:
    """auto: route each query by its own weight support (cheapest test first: O(B N d)), so a
    few uncondensed queries do not force the whole batch onto the d x d path."""
    d = X.shape[1]
    support = _numpy_kernels.support_size(X, Y, a, delta)
    small = support < GRAM_MAX_SUPPORT_FRACTION * d
    parts = []
    if small.any():
        parts.append((small, _gram_by_support(X[small], Y, a, delta, support[small], bases,
                                              backend, opts)))
    if not small.all():
        other, row_space = _dense_or_lowrank(Y, d)
        parts.append((~small, _spectrum_on(X[~small], Y, a, delta, other, bases, backend,
                                           opts, row_space=row_space)))
    if len(parts) == 1:
        return parts[0][1]
    return _merge(parts, X.shape[0])


def _gram_by_support(X, Y, a, delta, support, bases, backend, opts) -> JacobianSpectrum:
    """Gram path with queries grouped by support size (powers of two): each group's K x K
    matrices are padded only to that group's largest K, not the batch's."""
    octave = np.ceil(np.log2(np.maximum(support, 1))).astype(int)
    parts = [(octave == o, _spectrum_on(X[octave == o], Y, a, delta, "gram", bases, backend,
                                        opts, int(support[octave == o].max())))
             for o in np.unique(octave)]
    return parts[0][1] if len(parts) == 1 else _merge(parts, X.shape[0])


def _dense_or_lowrank(Y: np.ndarray, d: int) -> tuple[str, tuple | None]:
    """The auto choice for uncondensed queries, lowrank when rank(Y) <= d/2, and the row
    space (one SVD of Y, reused by the lowrank path)."""
    if d >= LOWRANK_MIN_DIM and Y.shape[0] > 1:
        # cheap sound rejection first: a row subset's singular values are <= Y's (interlacing)
        # and ||Y||_F >= s_max(Y), so the subset's count above LOWRANK_RTOL ||Y||_F is a lower
        # bound on rank(Y); O(d^3) instead of the O(N d^2) QR when the data are full rank
        probe = np.linalg.svd(Y[:d + 16], compute_uv=False)
        if np.sum(probe > LOWRANK_RTOL * np.linalg.norm(Y)) > LOWRANK_MAX_RANK_FRACTION * d:
            return "dense", None
        row_space = _numpy_kernels.row_space(Y)
        if row_space[0].shape[1] <= LOWRANK_MAX_RANK_FRACTION * d:
            return "lowrank", row_space
    return "dense", None


def _merge(parts: list, B: int) -> JacobianSpectrum:
    """Reassemble per-query results of several paths into one batch (B queries)."""
    first = parts[0][1]
    fields = ("eigenvalues",) + _STAT_FIELDS
    out = {f: np.empty((B,) + getattr(first, f).shape[1:]) for f in fields}
    traces = None if first.subspace_traces is None else np.empty(
        (B, first.subspace_traces.shape[1]))
    for mask, res in parts:
        for f in fields:
            out[f][mask] = getattr(res, f)
        if traces is not None:
            traces[mask] = res.subspace_traces
    names = dict.fromkeys(p for _, r in parts for p in r.path.split("+"))  # ordered, unique
    return JacobianSpectrum(subspace_traces=traces, path="+".join(names), **out)


def _spectrum_on(X, Y, a, delta, used, bases, backend, opts, k_max=None,
                 row_space=None) -> JacobianSpectrum:
    """`jacobian_spectrum` on one fixed path (validated inputs)."""
    d = X.shape[1]
    traces = None
    if used == "gram":
        lam, stats, traces = _gram(X, Y, a, delta, k_max, bases, backend, opts)
    elif used == "lowrank":
        V, coords = row_space or _numpy_kernels.row_space(Y)   # Y ~= coords @ V.T
        C_r, stats = _covariances(X @ V, coords, a, delta, backend, opts, on_device=True)
        lam, C_r = _eigvalsh(C_r)
        if bases:
            traces = np.stack([np.einsum("bij,ij->b", C_r, (V.T @ P) @ (V.T @ P).T)
                               for P in bases], axis=1)
        lam = pad_zeros(lam, d)
    else:
        C, stats = _covariances(X, Y, a, delta, backend, opts, on_device=True)
        lam, C = _eigvalsh(C)
        if bases:
            traces = np.stack([np.einsum("bij,ij->b", C, P @ P.T) for P in bases], axis=1)
    eig = np.sort(_jacobian_from_cov(lam, a, delta), axis=-1)
    return JacobianSpectrum(eigenvalues=eig, subspace_traces=traces, path=used, **stats)


def _eigvalsh(C) -> tuple[np.ndarray, np.ndarray]:
    """Ascending eigenvalues (float64 numpy) of a batch of symmetric matrices, on C's device."""
    if isinstance(C, np.ndarray):
        if not np.all(np.isfinite(C)):  # overflowed (float32): reported by the caller
            return np.full(C.shape[:-1], np.nan), C
        return np.linalg.eigvalsh(C), C
    import torch
    if not bool(torch.isfinite(C).all()):
        return np.full(tuple(C.shape[:-1]), np.nan), C.cpu().numpy().astype(np.float64)
    lam = torch.linalg.eigvalsh(C).cpu().numpy().astype(np.float64)
    return lam, C.cpu().numpy().astype(np.float64)


def _gram(X, Y, a, delta, k_max, bases, backend, opts):
    """Gram path: eigenvalues of C_w from the k_max x k_max matrix over the heaviest points."""
    if backend == "torch":
        from . import _torch_kernels
        return _torch_kernels.gram(X, Y, a, delta, k_max, bases, **_torch_opts(opts)[0])
    _no_opts(opts)
    return _numpy_kernels.gram(X, Y, a, delta, k_max, bases)

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from geomem.theory._checks import check_choice, check_positive

__all__ = [
    "GRAM_MAX_SUPPORT_FRACTION",
    "LOG_NEGLIGIBLE_WEIGHT",
    "LOWRANK_MAX_RANK_FRACTION",
    "LOWRANK_MIN_DIM",
    "LOWRANK_RTOL",
    "SUPPORT_MASS_TOL",
    "JacobianSpectrum",
    "WeightStatistics",
    "empirical_jacobian",
    "empirical_score",
    "jacobian_eigenvalues",
    "jacobian_spectrum",
    "weight_statistics",
]

#: Points whose total weight is below this are dropped by the Gram path (below float64 eps).
SUPPORT_MASS_TOL = 1e-16
#: Singular values of Y below LOWRANK_RTOL * s_max count as zero (well above SVD round-off 1e-16).
LOWRANK_RTOL = 1e-12
#: ``auto`` takes the lowrank path only when rank <= this fraction of d (else no real saving).
LOWRANK_MAX_RANK_FRACTION = 0.5
#: ``auto`` sends a query to the Gram path when its support K is below this fraction of d:
#: K x K work (K^2 d + K^3) is then below the dense path's N d^2 + d^3 since K <= N.
GRAM_MAX_SUPPORT_FRACTION = 1.0
#: Relative weights below exp(-745 + 45) ~ 1e-304 are flushed to 0 (denormals slow BLAS 10x).
LOG_NEGLIGIBLE_WEIGHT = -700.0
#: ``auto`` tries the lowrank path (one SVD of Y) only from this dimension up.
LOWRANK_MIN_DIM = 64
#: Elements (float64) allowed in one temporary block; ~128 MB, keeps peak memory bounded.
BLOCK_ELEMENTS = 2**24

BACKENDS = ("numpy", "numba", "torch")
PATHS = ("auto", "dense", "gram", "lowrank")


@dataclass(frozen=True)
class WeightStatistics:
    """Softmax-weight statistics per query (no eigendecomposition).

    Attributes (B queries, K subspaces):
        sum_w2 (B,): ``sum_mu w_mu^2``.
        participation_ratio (B,): ``1 / sum_w2`` (effective number of training points).
        entropy (B,): ``-sum_mu w_mu ln w_mu`` in nats.
        max_weight (B,): ``max_mu w_mu``.
        weighted_sq_norm (B, K): ``sum_mu w_mu |P_k y_mu|^2`` (None without subspaces).
        mean_sq_norm (B, K): ``|P_k ybar|^2`` (None without subspaces).
    """

    sum_w2: np.ndarray
    participation_ratio: np.ndarray
    entropy: np.ndarray
    max_weight: np.ndarray
    weighted_sq_norm: np.ndarray | None = None
    mean_sq_norm: np.ndarray | None = None

    @property
    def subspace_trace(self) -> np.ndarray | None:
        """(B, K) ``tr(P_k C_w P_k) = sum_mu w_mu |P_k y_mu|^2 - |P_k ybar|^2`` (None without
        subspaces)."""
        if self.weighted_sq_norm is None:
            return None
        return np.asarray(self.weighted_sq_norm) - np.asarray(self.mean_sq_norm)


@dataclass(frozen=True)
class JacobianSpectrum:
    """Exact Jacobian spectrum of the empirical score plus weight statistics, from one pass.

    Attributes:
        eigenvalues (B, d): eigenvalues of J, ascending (units 1/delta).
        participation_ratio, sum_w2, entropy, max_weight (B,): as in `WeightStatistics`.
        subspace_traces (B, K): ``tr(P_k C_w P_k)`` per subspace basis (None without subspaces).
        path: the path used ("dense", "gram" or "lowrank"; under ``auto`` a batch whose
            queries differ in weight support is split, e.g. "gram+dense").
    """

    eigenvalues: np.ndarray
    participation_ratio: np.ndarray
    sum_w2: np.ndarray
    entropy: np.ndarray
    max_weight: np.ndarray
    subspace_traces: np.ndarray | None
    path: str

    @property
    def singular_values(self) -> np.ndarray:
        """(B, d) singular values of J, descending."""
        return np.sort(np.abs(self.eigenvalues), axis=-1)[:, ::-1]


# ----------------------------------------------------------------------------- validation

def _validate(X: Any, Y: Any, a: Any, delta: Any, backend: str, subspaces: Any = None,
              path: str = "auto") -> tuple[np.ndarray, np.ndarray, float, float, list | None]:
    """Check every argument before any work; return float64 arrays and python floats."""
    check_choice("backend", backend, BACKENDS)
    check_choice("path", path, PATHS)
    a = float(check_positive("a", a).reshape(-1)[0]) if np.ndim(a) == 0 else _scalar_error("a")
    delta = (float(check_positive("delta", delta).reshape(-1)[0]) if np.ndim(delta) == 0
             else _scalar_error("delta"))
    if not hasattr(Y, "shape"):
        Y = np.asarray(Y)
    Y = _as_float64("Y", Y)
    if Y.ndim != 2 or Y.shape[0] < 1 or Y.shape[1] < 1:
        raise ValueError(f"Y must have shape (N, d) with N >= 1 and d >= 1, got {Y.shape}")
    X = _as_float64("X", X)
    if X.ndim != 2 or X.shape[1] != Y.shape[1]:
        raise ValueError(f"X must have shape (B, d) with d = {Y.shape[1]} (Y's), got {X.shape}")
    for name, arr in (("X", X), ("Y", Y)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite (no NaN or inf)")
    bases = None
    if subspaces is not None:
        bases = []
        for k, basis in enumerate(subspaces):
            basis = _as_float64(f"subspaces[{k}]", basis)
            if basis.ndim != 2 or basis.shape[0] != Y.shape[1] or not np.all(np.isfinite(basis)):
                raise ValueError(f"subspaces[{k}] must be a finite (d, m_k) array with "
                                 f"d = {Y.shape[1]}, got shape {basis.shape}")
            bases.append(basis)
    return X, Y, a, delta, bases


def _scalar_error(name: str):
    raise ValueError(f"{name} must be a scalar with 0 < {name} < inf")


def _as_float64(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real array, got {type(value).__name__}") from exc


def _query_block(n_train: int, d: int) -> int:
    """Queries per block so that (block, N) logits and (block, d, d) matrices fit BLOCK_ELEMENTS."""
    return max(1, BLOCK_ELEMENTS // max(n_train, d * d, 1))


def _chunk(block: int, d: int) -> int:
    """Training points per chunk so that a (block, chunk, d) temporary fits BLOCK_ELEMENTS."""
    return max(1, BLOCK_ELEMENTS // max(block * d, 1))


# ----------------------------------------------------------------------------- numpy kernels

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
    block = _query_block(Y.shape[0], 1)
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
    chunk = _chunk(B, d)
    for s in range(0, N, chunk):
        D = Y[None, s:s + chunk, :] - centre[:, None, :]             # (B, c, d)
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


def _stats_from_pass(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    Z = p["Z"]
    sum_w2 = p["S2"] / (Z * Z)
    return {"sum_w2": sum_w2, "participation_ratio": 1.0 / sum_w2,
            "entropy": np.log(Z) - p["T"] / Z, "max_weight": 1.0 / Z}


def _covariance_from_pass(p: dict[str, np.ndarray]) -> np.ndarray:
    Z = p["Z"]
    mean = p["m1"] / Z[:, None]
    C = p["M2"] / Z[:, None, None] - mean[:, :, None] * mean[:, None, :]
    return 0.5 * (C + C.transpose(0, 2, 1))


# ----------------------------------------------------------------------------- public API

def empirical_score(X: Any, Y: Any, *, a: float, delta: float, backend: str = "numpy",
                    **backend_opts: Any) -> np.ndarray:
    """Score ``grad log p(x)`` of the empirical density at queries X.

    Args:
        X: (B, d) query points.  Y: (N, d) training points.
        a: signal scale a(t) > 0.  delta: noise variance Delta(t) > 0.
        backend: "numpy" (float64 reference), "numba" or "torch" (opts ``device``, ``dtype``,
            ``return_tensor``).

    Returns:
        (B, d) score ``(a ybar - x) / delta``.
    """
    X, Y, a, delta, _ = _validate(X, Y, a, delta, backend)
    if backend == "torch":
        from . import _torch_kernels
        return _torch_kernels.score(X, Y, a, delta, **backend_opts)
    if backend == "numba":
        from . import _numba_kernels
        _no_opts(backend_opts)
        return _numba_kernels.score(X, Y, a, delta)
    _no_opts(backend_opts)
    out = np.empty_like(X)
    block = _query_block(Y.shape[0], Y.shape[1])
    ref = _nearest_index(X, Y, a)
    for s in range(0, X.shape[0], block):
        p = _centred_pass(X[s:s + block], Y, a, delta, ref[s:s + block], scatter=False)
        mean_rel = p["m1"] / p["Z"][:, None]
        out[s:s + block] = (a * mean_rel - p["x_rel"]) / delta
    return out


def _no_opts(opts: dict) -> None:
    if opts:
        raise ValueError(f"unknown options {sorted(opts)}: only the torch backend takes "
                         "device, dtype, return_tensor")


def weight_statistics(X: Any, Y: Any, *, a: float, delta: float,
                      subspaces: Sequence[Any] | None = None,
                      backend: str = "numpy", **backend_opts: Any) -> WeightStatistics:
    """Softmax-weight statistics per query, O(B N d), no eigendecomposition.

    Logits use the expanded form ``(a x.y - a^2|y|^2/2)/delta`` with one shared matrix product
    (fast: B = 1e4, N = 1000, d = 30 takes ~0.1 s); its absolute logit error is about
    ``eps * a |x| |y| / delta`` — use `jacobian_spectrum` (centred energies) when delta is below
    ~1e-10 |x||y|.

    Args:
        X (B, d), Y (N, d), a > 0, delta > 0 as in `empirical_score`.
        subspaces: optional list of (d, m_k) orthonormal bases P_k.

    Returns:
        `WeightStatistics` with (B,) fields and, with subspaces, (B, K)
        ``weighted_sq_norm = sum w |P_k^T y|^2`` and ``mean_sq_norm = |P_k^T ybar|^2``.
    """
    X, Y, a, delta, bases = _validate(X, Y, a, delta, backend, subspaces)
    if backend == "torch":
        from . import _torch_kernels
        fields = _torch_kernels.weight_statistics(X, Y, a, delta, bases, **backend_opts)
        return WeightStatistics(**fields)
    if backend == "numba":
        from . import _numba_kernels
        _no_opts(backend_opts)
        fields = _numba_kernels.weight_statistics(X, Y, a, delta, bases)
        return WeightStatistics(**fields)
    _no_opts(backend_opts)
    return WeightStatistics(**_numpy_weight_statistics(X, Y, a, delta, bases))


def _numpy_weight_statistics(X: np.ndarray, Y: np.ndarray, a: float, delta: float,
                             bases: list | None) -> dict[str, np.ndarray]:
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
    block = _query_block(Y.shape[0], 1)
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


def empirical_jacobian(X: Any, Y: Any, *, a: float, delta: float, backend: str = "numpy",
                       **backend_opts: Any) -> np.ndarray:
    """(B, d, d) Jacobian ``-I/delta + (a/delta)^2 C_w`` of the empirical score (small d)."""
    X, Y, a, delta, _ = _validate(X, Y, a, delta, backend)
    C = _covariances(X, Y, a, delta, backend, backend_opts)[0]
    d = Y.shape[1]
    return (a / delta) ** 2 * C - np.eye(d) / delta


def _covariances(X, Y, a, delta, backend, opts, on_device=False):
    """(B, d, d) weighted covariances C_w plus weight statistics, for any backend.

    With ``on_device`` the torch backend returns C_w as a tensor (eigenvalues on its device).
    """
    if backend == "torch":
        from . import _torch_kernels
        opts = {k: v for k, v in opts.items() if k != "return_tensor"}
        return _torch_kernels.covariances(X, Y, a, delta, return_tensor=on_device, **opts)
    if backend == "numba":
        from . import _numba_kernels
        _no_opts(opts)
        return _numba_kernels.covariances(X, Y, a, delta)
    _no_opts(opts)
    B, d = X.shape
    C = np.empty((B, d, d))
    stats = {k: np.empty(B) for k in ("sum_w2", "participation_ratio", "entropy", "max_weight")}
    ref = _nearest_index(X, Y, a)
    block = _query_block(Y.shape[0], d)
    for s in range(0, B, block):
        p = _centred_pass(X[s:s + block], Y, a, delta, ref[s:s + block], scatter=True)
        C[s:s + block] = _covariance_from_pass(p)
        for k, v in _stats_from_pass(p).items():
            stats[k][s:s + block] = v
    return C, stats


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
        X: (B, d) queries.  Y: (N, d) training set.  a, delta > 0: a(t), Delta(t).
        backend: "numpy" (float64 reference), "numba" (float64) or "torch" (``device``,
            ``dtype``).
        path: "auto" | "dense" (d x d per query) | "gram" (K x K over the weight support;
            memorisation) | "lowrank" (r x r in the row space of Y, rank by ``LOWRANK_RTOL``).
        subspaces: optional list of (d, m_k) orthonormal bases; fills ``subspace_traces``.

    Returns:
        `JacobianSpectrum` (eigenvalues (B, d) ascending, weight statistics, path used).
    """
    X, Y, a, delta, bases = _validate(X, Y, a, delta, backend, subspaces, path)
    d = X.shape[1]
    if path == "gram":
        return _gram_by_support(X, Y, a, delta, _support_size(X, Y, a, delta), bases, backend,
                                opts)
    if path != "auto":
        return _spectrum_on(X, Y, a, delta, path, bases, backend, opts)
    # auto: route each query by its own weight support (cheapest test first: O(B N d)), so a
    # few uncondensed queries do not force the whole batch onto the d x d path
    support = _support_size(X, Y, a, delta)
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
        row_space = _row_space(Y)
        if row_space[0].shape[1] <= LOWRANK_MAX_RANK_FRACTION * d:
            return "lowrank", row_space
    return "dense", None


def _merge(parts: list, B: int) -> JacobianSpectrum:
    """Reassemble per-query results of several paths into one batch (B queries)."""
    first = parts[0][1]
    fields = ("eigenvalues", "participation_ratio", "sum_w2", "entropy", "max_weight")
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
        V, coords = row_space or _row_space(Y)   # Y ~= coords @ V.T
        C_r, stats = _covariances(X @ V, coords, a, delta, backend, opts, on_device=True)
        lam, C_r = _eigvalsh(C_r)
        if bases:
            traces = np.stack([np.einsum("bij,ij->b", C_r, (V.T @ P) @ (V.T @ P).T)
                               for P in bases], axis=1)
        lam = _pad_zeros(lam, d)
    else:
        C, stats = _covariances(X, Y, a, delta, backend, opts, on_device=True)
        lam, C = _eigvalsh(C)
        if bases:
            traces = np.stack([np.einsum("bij,ij->b", C, P @ P.T) for P in bases], axis=1)
    eig = np.sort((a / delta) ** 2 * lam - 1.0 / delta, axis=-1)
    return JacobianSpectrum(eigenvalues=eig, subspace_traces=traces, path=used, **stats)


def _eigvalsh(C) -> tuple[np.ndarray, np.ndarray]:
    """Ascending eigenvalues (float64 numpy) of a batch of symmetric matrices, on C's device."""
    if isinstance(C, np.ndarray):
        return np.linalg.eigvalsh(C), C
    import torch
    lam = torch.linalg.eigvalsh(C).cpu().numpy().astype(np.float64)
    return lam, C.cpu().numpy().astype(np.float64)


def _pad_zeros(lam: np.ndarray, d: int) -> np.ndarray:
    """Append d - r exact zeros (the directions C_w does not reach), keep ascending order."""
    B, r = lam.shape
    if r >= d:
        return lam[:, :d] if r == d else np.sort(lam, axis=-1)[:, r - d:]
    return np.sort(np.concatenate([lam, np.zeros((B, d - r))], axis=1), axis=1)


def _row_space(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis V (d, r) of Y's row space (rank by LOWRANK_RTOL) and coords Y V."""
    # SVD of the triangular factor: same row space, much cheaper than SVD of a tall Y
    R = np.linalg.qr(Y, mode="r") if Y.shape[0] > Y.shape[1] else Y
    _, s, Vt = np.linalg.svd(R, full_matrices=False)
    r = int(np.sum(s > LOWRANK_RTOL * s[0])) if s[0] > 0 else 0
    r = max(r, 1)
    V = Vt[:r].T
    return V, Y @ V


def _support_size(X: np.ndarray, Y: np.ndarray, a: float, delta: float) -> np.ndarray:
    """(B,) number of training points with weight above SUPPORT_MASS_TOL / N."""
    N = Y.shape[0]
    y_sq = np.einsum("nd,nd->n", Y, Y)
    out = np.empty(X.shape[0], dtype=np.int64)
    block = _query_block(N, 1)
    threshold = np.log(SUPPORT_MASS_TOL / N)
    for s in range(0, X.shape[0], block):
        logits = _shared_logits(X[s:s + block], Y, a, delta, y_sq)
        log_z = np.log(np.exp(logits).sum(axis=1))
        out[s:s + block] = np.sum(logits - log_z[:, None] > threshold, axis=1)
    return out


def _gram(X, Y, a, delta, k_max, bases, backend, opts):
    """Gram path: eigenvalues of C_w from the k_max x k_max matrix over the heaviest points."""
    if backend == "torch":
        from . import _torch_kernels
        opts = {k: v for k, v in opts.items() if k != "return_tensor"}
        return _torch_kernels.gram(X, Y, a, delta, k_max, bases, **opts)
    _no_opts(opts)
    B, d = X.shape
    N = Y.shape[0]
    k_max = min(k_max, N)
    y_sq = np.einsum("nd,nd->n", Y, Y)
    lam = np.empty((B, d))
    stats = {k: np.empty(B) for k in ("sum_w2", "participation_ratio", "entropy", "max_weight")}
    traces = np.empty((B, len(bases))) if bases else None
    block = max(1, min(_query_block(N, 1), BLOCK_ELEMENTS // max(k_max * d, 1)))
    for s in range(0, B, block):
        sl = slice(s, s + block)
        logits = _shared_logits(X[sl], Y, a, delta, y_sq)
        top = np.argpartition(-logits, k_max - 1, axis=1)[:, :k_max]      # (b, K)
        ref = np.argmax(logits, axis=1)
        # exact centred logits over the K candidates (same formula as the dense path)
        centre = Y[ref]
        D = Y[top] - centre[:, None, :]                                  # (b, K, d)
        x_rel = X[sl] - a * centre
        v = (a * np.einsum("bd,bkd->bk", x_rel, D)
             - (0.5 * a * a) * np.einsum("bkd,bkd->bk", D, D)) / delta
        v -= v.max(axis=1, keepdims=True)
        e = np.exp(v)
        Z = e.sum(axis=1)
        w = e / Z[:, None]
        mean = np.einsum("bk,bkd->bd", w, D)
        Zc = (D - mean[:, None, :]) * np.sqrt(w)[:, :, None]            # C_w = Zc^T Zc
        G = np.matmul(Zc, Zc.transpose(0, 2, 1))
        lam[sl] = _pad_zeros(np.linalg.eigvalsh(G), d)
        sum_w2 = np.einsum("bk,bk->b", w, w)
        stats["sum_w2"][sl] = sum_w2
        stats["participation_ratio"][sl] = 1.0 / sum_w2
        stats["entropy"][sl] = np.log(Z) - np.einsum("bk,bk->b", w, np.where(e > 0, v, 0.0))
        stats["max_weight"][sl] = w.max(axis=1)
        if bases:
            traces[sl] = np.stack([np.einsum("bkm,bkm->b", Zc @ P, Zc @ P) for P in bases],
                                  axis=1)
    return lam, stats, traces

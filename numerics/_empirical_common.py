"""Constants, result types and helpers shared by the empirical-score modules (no torch).

`geomem.numerics.empirical` (public API and path routing), `_numpy_kernels`, `_numba_kernels`
and `_torch_kernels` all import from here and from nowhere else in the package, so the import
graph has no cycle: ``empirical -> {_numpy_kernels, _numba_kernels, _torch_kernels} ->
_empirical_common``.  ``BLOCK_ELEMENTS`` is read at call time (tests shrink it to force many
chunks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from geomem.theory._checks import check_choice, check_positive, show

__all__ = [
    "BACKENDS",
    "BLOCK_ELEMENTS",
    "GRAM_MAX_SUPPORT_FRACTION",
    "LOG_NEGLIGIBLE_WEIGHT",
    "LOWRANK_MAX_RANK_FRACTION",
    "LOWRANK_MIN_DIM",
    "LOWRANK_RTOL",
    "MAX_NORM",
    "PATHS",
    "SUPPORT_MASS_TOL",
    "JacobianSpectrum",
    "WeightStatistics",
    "chunk_size",
    "finite_or_raise",
    "pad_zeros",
    "query_block",
    "stats_from_moments",
    "validate",
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
#: Largest supported |x| and a |y| (Euclidean norms): squared distances |x - a y|^2 <= 4e300
#: then stay below the float64 maximum 1.8e308.
MAX_NORM = 1e150

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


def validate(X: Any, Y: Any, a: Any, delta: Any, backend: str, subspaces: Any = None,
             path: str = "auto") -> tuple[np.ndarray, np.ndarray, float, float, list | None]:
    """Check every argument before any work; return float64 X (B, d), Y (N, d), a, delta and
    the (d, m_k) bases.  B = 0 is allowed (empty in, empty out); N, d >= 1 are required."""
    check_choice("backend", backend, BACKENDS)
    check_choice("path", path, PATHS)
    a = _scalar("a", a)
    delta = _scalar("delta", delta)
    Y = as_float64("Y", Y)
    if Y.ndim != 2 or Y.shape[0] < 1 or Y.shape[1] < 1:
        raise ValueError(f"Y must have shape (N, d) with N >= 1 and d >= 1, got {Y.shape}")
    X = as_float64("X", X)
    if X.ndim != 2 or X.shape[1] != Y.shape[1]:
        raise ValueError(f"X must have shape (B, d) with d = {Y.shape[1]} (Y's), got {X.shape}")
    for name, arr, scale in (("X", X, 1.0), ("Y", Y, a)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite (no NaN or inf)")
        if arr.size:
            # max |entry| * sqrt(d) bounds the norm without squaring (no overflow)
            bound = scale * float(np.max(np.abs(arr))) * math.sqrt(arr.shape[1])
            if bound > MAX_NORM:
                label = "|x|" if name == "X" else "a |y|"
                raise ValueError(f"{name} out of range: allowed {label} <= {MAX_NORM:g} per row "
                                 f"(squared distances must fit float64), got up to {bound:.3g}")
    bases = None
    if subspaces is not None:
        if not isinstance(subspaces, (list, tuple)):
            raise ValueError("subspaces must be a list of (d, m_k) orthonormal bases, got "
                             f"{show(subspaces)}")
        bases = []
        for k, basis in enumerate(subspaces):
            basis = as_float64(f"subspaces[{k}]", basis)
            if basis.ndim != 2 or basis.shape[0] != Y.shape[1] or not np.all(np.isfinite(basis)):
                raise ValueError(f"subspaces[{k}] must be a finite (d, m_k) array with "
                                 f"d = {Y.shape[1]}, got shape {basis.shape}")
            bases.append(basis)
    return X, Y, a, delta, bases


def _scalar(name: str, value: Any) -> float:
    if isinstance(value, (str, bytes)) or np.ndim(value) != 0:
        raise ValueError(f"{name} must be a real scalar with 0 < {name} < inf, got "
                         f"{show(value)}")
    try:
        return float(check_positive(name, value).reshape(-1)[0])
    except TypeError as exc:
        raise ValueError(f"{name} must be a real scalar with 0 < {name} < inf, got "
                         f"{type(value).__name__}") from exc


def as_float64(name: str, value: Any) -> np.ndarray:
    """value (numpy array, list or torch tensor) as a float64 numpy array."""
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a real array, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError
        return arr.astype(np.float64, copy=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real array, got {type(value).__name__}") from exc


def finite_or_raise(values: dict[str, Any], delta: float, backend: str) -> None:
    """ValueError when a result overflowed: the true values exceed the backend's float range.

    Happens only at extreme scales (e.g. ``delta`` ~ 1e-300 with uncondensed weights, or float32
    torch with |x|, a |y| beyond ~1e19); never returns a silent NaN or inf.
    """
    for field, value in values.items():
        if value is None:
            continue
        arr = np.asarray(value)
        if arr.size and not np.all(np.isfinite(arr)):
            raise ValueError(f"delta = {delta:g} is out of the supported range for these data: "
                             f"{field} overflows the {backend} backend's floating-point range "
                             "(use a larger delta, smaller |x| and a |y|, or float64)")


def query_block(n_train: int, d: int) -> int:
    """Queries per block so that (block, N) logits and (block, d, d) matrices fit BLOCK_ELEMENTS."""
    return max(1, BLOCK_ELEMENTS // max(n_train, d * d, 1))


def chunk_size(block: int, d: int) -> int:
    """Training points per chunk so that a (block, chunk, d) temporary fits BLOCK_ELEMENTS."""
    return max(1, BLOCK_ELEMENTS // max(block * d, 1))


def stats_from_moments(Z: np.ndarray, S2: np.ndarray, T: np.ndarray) -> dict[str, np.ndarray]:
    """Weight statistics (B,) from ``Z = sum e``, ``S2 = sum e^2``, ``T = sum e * logit`` with
    logits relative to the row max (so the heaviest point has e = 1)."""
    sum_w2 = S2 / (Z * Z)
    return {"sum_w2": sum_w2, "participation_ratio": 1.0 / sum_w2,
            "entropy": np.log(Z) - T / Z, "max_weight": 1.0 / Z}


def pad_zeros(lam: np.ndarray, d: int) -> np.ndarray:
    """(B, d): append d - r exact zeros to (B, r) eigenvalues (the directions C_w does not
    reach), keep ascending order."""
    B, r = lam.shape
    if r >= d:
        return lam[:, :d] if r == d else np.sort(lam, axis=-1)[:, r - d:]
    return np.sort(np.concatenate([lam, np.zeros((B, d - r))], axis=1), axis=1)

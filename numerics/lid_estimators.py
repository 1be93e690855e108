"""Score-based local intrinsic dimension (LID) estimators with one skdim-style API (issue 12).

Clean points X (B, d) are read through a score at one time t of ``x_t = a x0 + sqrt(delta) z``
(docs/numerics.md, "Local intrinsic dimension estimators"): the exact empirical score of a
training set Y (N, d), or a callable (M, d) float64 -> (M, d) (``torch_fn=True``: torch).

- `closed_form_lid` — the closed-form-diffusion estimator of layer6ai-labs/dgm_geometry
  (``CFDM_LID``): ``2 sum_mu w_mu |x - y_mu|^2 / tau`` with ``w = softmax(-|x - y|^2 / tau)``.
  With ``tau = 2 delta / a^2`` (their VP ``tau = 2 (e^{B(t)} - 1)``) the weights are those of the
  empirical score at ``a x`` and the value equals the exact empirical FLIPD
  ``d + delta (tr grad s + |s|^2) = (a^2/delta) sum w |x - y|^2`` (`empirical_flipd`).
- `normal_bundle_dimension` — Stanczuk et al. (2023): K scores at ``a x + radius z_k``, SVD of
  the (K, d) stack, LID = d - (number of singular values above the largest gap).
- `FlipdEstimator`, `NormalBundleEstimator`, `SpectralGapEstimator`, `ClosedFormEstimator`:
  ``fit(X)`` sets ``dimension_pw_`` (B,) and ``dimension_`` (their median or mean, NaN entries
  left out); constructor arguments are stored unchanged and checked in ``fit`` (sklearn).

Derivatives of a callable: central differences, step ``FD_REL_STEP * sqrt(delta)`` (2 d calls
per point, exact up to rounding for linear scores), or torch.func when ``torch_fn=True``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from geomem.theory._checks import check_choice, check_int

from . import _empirical_common as common
from ._empirical_common import LOG_NEGLIGIBLE_WEIGHT, as_float64, finite_or_raise, validate
from .dimension import DEFAULT_MIN_GAP_RATIO, METHODS, estimate_dimension
from .empirical import empirical_score, jacobian_spectrum
from .flipd import empirical_flipd

__all__ = ["AGGREGATES", "FD_REL_STEP", "GAP_RULES", "ClosedFormEstimator", "FlipdEstimator",
           "NormalBundleEstimate", "NormalBundleEstimator", "SpectralGapEstimator",
           "closed_form_lid", "empirical_score_callable", "normal_bundle_dimension"]

#: finite-difference step in units of the score's length scale sqrt(delta): truncation error
#: ~ FD_REL_STEP^2 = 1e-8 relative, rounding ~ eps / FD_REL_STEP ~ 1e-12 relative
FD_REL_STEP = 1e-4
#: "difference": largest consecutive difference (dgm_geometry's NormalBundleEstimator);
#: "ratio": largest consecutive ratio (`estimate_dimension(method="gap")`, with min_ratio)
GAP_RULES = ("difference", "ratio")
AGGREGATES = ("median", "mean")
#: float64 elements per batch of score evaluations (bounds the (rows, d) temporaries, ~32 MB)
_EVAL_ELEMENTS = 2**22

ScoreFn = Callable[[np.ndarray], Any]


def _scalar(name: str, value: Any) -> float:
    """A real scalar 0 < value < inf (ValueError naming it); unlike the shared check, a bool
    is refused (``a=True`` is a mistake, not 1.0)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a real scalar with 0 < {name} < inf, got {value!r}")
    return common._scalar(name, value)


def _points(X: Any, d: int | None = None, min_rows: int = 0) -> np.ndarray:
    """X as a finite float64 (B, d) array with B >= min_rows (ValueError naming X)."""
    X = as_float64("X", X)
    if X.ndim != 2 or X.shape[1] < 1 or X.shape[0] < min_rows:
        raise ValueError(f"X must be a 2-D array (B, d) with B >= {min_rows} and d >= 1, got "
                         f"shape {X.shape}")
    if d is not None and X.shape[1] != d:
        raise ValueError(f"X must have d = {d} columns (the training set's), got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X must be finite (no NaN or inf)")
    return X


def _callable(score_fn: Any, torch_fn: bool) -> ScoreFn:
    """A numpy view of the score: float64 (M, d) in, whatever the callable returns out."""
    if not isinstance(torch_fn, (bool, np.bool_)):
        raise ValueError(f"torch_fn must be True or False, got {type(torch_fn).__name__}")
    if not callable(score_fn):
        raise ValueError(f"score_fn must be a callable (M, d) -> (M, d), got "
                         f"{type(score_fn).__name__}")
    if not torch_fn:
        return score_fn
    import torch

    def wrapped(Z: np.ndarray):
        with torch.no_grad():
            return score_fn(torch.as_tensor(Z, dtype=torch.float64))
    return wrapped


def _evaluate(fn: ScoreFn, Z: np.ndarray) -> np.ndarray:
    """fn on the rows of Z in batches; float64 (M, d), checked for shape and finiteness."""
    rows, out = max(1, _EVAL_ELEMENTS // Z.shape[1]), []
    for s in range(0, Z.shape[0], rows):
        block = Z[s:s + rows]
        res = fn(block)
        res = np.asarray(res.detach().cpu().numpy() if hasattr(res, "detach") else res, float)
        if res.shape != block.shape:
            raise ValueError(f"score_fn must map (M, d) to (M, d); got {res.shape} for "
                             f"{block.shape}")
        if not np.all(np.isfinite(res)):
            raise ValueError("score_fn returned non-finite values")
        out.append(res)
    return np.concatenate(out) if out else np.empty(Z.shape)


def _fd_jacobian(fn: ScoreFn, Z: np.ndarray, h: float) -> np.ndarray:
    """(B, d, d) central-difference Jacobians ``J[b, j, i] = d s_j / d z_i`` at the rows of Z."""
    B, d = Z.shape
    J, step, per = np.empty((B, d, d)), h * np.eye(d), max(1, _EVAL_ELEMENTS // (2 * d * d))
    for s in range(0, B, per):
        z = Z[s:s + per]
        b = z.shape[0]
        both = np.concatenate([(z[:, None, :] + step).reshape(-1, d),
                               (z[:, None, :] - step).reshape(-1, d)])
        vals = _evaluate(fn, both).reshape(2, b, d, d)             # [+/-, b, i, j]
        J[s:s + b] = np.swapaxes(vals[0] - vals[1], 1, 2) / (2.0 * h)
    return J


def empirical_score_callable(Y: Any, a: float, delta: float, backend: str = "numpy") -> ScoreFn:
    """The exact empirical score of Y (N, d) at (a, delta) as a float64 callable (M, d) -> (M, d);
    the arguments are checked now (ValueError naming them)."""
    d = np.shape(Y)[1] if np.ndim(Y) == 2 else 1
    _, Y, a, delta, _ = validate(np.empty((0, d)), Y, a, delta, backend)

    def score(Z: np.ndarray) -> np.ndarray:
        return np.asarray(empirical_score(Z, Y, a=a, delta=delta, backend=backend))
    return score


def closed_form_lid(X: Any, Y: Any, *, a: float, delta: float,
                    knn_k: int | None = None) -> np.ndarray:
    """Closed-form-diffusion LID (dgm_geometry ``CFDM_LID``) at clean points X.

    ``LID(x) = 2 sum_mu w_mu E_mu``, ``E_mu = a^2 |x - y_mu|^2 / (2 delta) = |x - y_mu|^2 / tau``,
    ``w = softmax(-E)`` (log-space, direct differences), ``tau = 2 delta / a^2``.  These are the
    weights of the empirical score at ``a x``, and by ``sum w |x - y|^2 = tr C_w + |ybar - x|^2``
    the value is the exact empirical FLIPD ``d + delta (tr grad s + |s|^2)``; dgm_geometry's VP
    ``tau = 2 (e^{B(t)} - 1)``, ``B = int_0^t beta``, is ``2 delta / a^2`` for ``a = e^{-B/2}``,
    ``delta = 1 - e^{-B}``.

    Args:
        X: (B, d) clean points (B = 0 gives (0,)).  Y: (N, d) training points.
        a, delta > 0: a(t) and Delta(t).
        knn_k: keep only the knn_k nearest training points per query (dgm_geometry's option;
            1 <= knn_k <= N; None: all).  Then it is no longer FLIPD.

    Returns:
        (B,) dimensionless estimates in [0, inf); ValueError naming the argument for bad input
        and when the energies overflow float64 (delta far too small).
    """
    X, Y, a, delta, _ = validate(X, Y, a, delta, "numpy")
    N = Y.shape[0]
    if knn_k is not None:
        knn_k = check_int("knn_k", knn_k, minimum=1, maximum=N)
    B, d = X.shape
    with np.errstate(over="ignore"):
        scale = a * a / (2.0 * delta)
    out, block = np.empty(B), common.query_block(N, 1)
    for s in range(0, B, block):
        x = X[s:s + block]
        chunk = common.chunk_size(x.shape[0], d)
        D2 = np.concatenate([np.einsum("bcd,bcd->bc", diff, diff) for diff in (
            x[:, None, :] - Y[None, c:c + chunk, :] for c in range(0, N, chunk))], axis=1)
        if knn_k is not None and knn_k < N:
            D2 = np.partition(D2, knn_k - 1, axis=1)[:, :knn_k]
        with np.errstate(over="ignore", invalid="ignore"):
            E = scale * D2
            r = E.min(axis=1, keepdims=True) - E                   # log relative weights <= 0
            u = np.where(r < LOG_NEGLIGIBLE_WEIGHT, 0.0, np.exp(np.maximum(r, -745.0)))
            out[s:s + block] = 2.0 * (u * np.where(u > 0, E, 0.0)).sum(1) / u.sum(1)
    finite_or_raise({"the closed-form LID": out}, delta, "numpy")
    return out


@dataclass(frozen=True)
class NormalBundleEstimate:
    """Result of `normal_bundle_dimension` (B points, m = min(K, d) singular values).

    dimension (B,): ``d - normal_dimension`` (NaN where not ``found``); normal_dimension (B,):
    values above the gap (-1 where not found); singular_values (B, m): of the (K, d) stack,
    descending (units of the score); found (B,): "ratio": ratio >= min_ratio, "difference":
    largest difference > 0; gap_rule: the rule; n_scores: K.
    """

    dimension: np.ndarray
    normal_dimension: np.ndarray
    singular_values: np.ndarray
    found: np.ndarray
    gap_rule: str
    n_scores: int


def normal_bundle_dimension(score_fn: ScoreFn, X: Any, *, a: float = 1.0, delta: float,
                            n_scores: int | None = None, radius: float | None = None,
                            gap: str = "difference", min_ratio: float = DEFAULT_MIN_GAP_RATIO,
                            seed: int = 0, torch_fn: bool = False) -> NormalBundleEstimate:
    """Stanczuk et al. normal-bundle LID at clean points X.

    For each x: ``z_k = a x + radius xi_k`` (k = 1..K, xi standard normal; radius defaults to
    sqrt(delta), i.e. the forward process at time t), rows ``s(z_k)`` stacked into (K, d), SVD.
    The leading singular vectors span the normal space; LID = d - (number of singular values
    before the largest gap).  Gap rules: "difference" (dgm_geometry's, default) or "ratio"
    (largest log gap >= min_ratio > 1, `estimate_dimension(method="gap")`); the ratio rule reads
    k - 1 off the origin, since the mean term ``s(a x)`` adds a tangent value ~ sqrt(K) a |x_T|
    far above the tangent noise (docs/numerics.md, failure modes of both rules).

    Args: score_fn (M, d) float64 -> (M, d), the score at time t
    (`empirical_score_callable` for data; ``torch_fn``: torch tensors in and out, evaluated
    in float64 without grad); X (B, d) clean points (B = 0 allowed); a, delta > 0;
    n_scores K >= 2 (default 4 d, the paper's); radius > 0 (perturbation std); seed >= 0
    (same seed, same result).
    """
    fn = _callable(score_fn, torch_fn)
    a, delta = _scalar("a", a), _scalar("delta", delta)
    X = _points(X)
    B, d = X.shape
    K = 4 * d if n_scores is None else check_int("n_scores", n_scores, minimum=2)
    radius = float(np.sqrt(delta)) if radius is None else _scalar("radius", radius)
    check_choice("gap", gap, GAP_RULES)
    if not (isinstance(min_ratio, (int, float, np.floating)) and 1.0 < min_ratio < np.inf):
        raise ValueError(f"min_ratio out of range: allowed 1 < min_ratio < inf, got {min_ratio}")
    seed = check_int("seed", seed, minimum=0)
    if (m := min(K, d)) < 2:
        raise ValueError(f"X and n_scores: needs min(n_scores, d) >= 2, got K = {K}, d = {d}")
    rng, sv = np.random.default_rng(seed), np.empty((B, m))
    per = max(1, _EVAL_ELEMENTS // (K * d))
    for s in range(0, B, per):
        x = X[s:s + per]
        Z = a * x[:, None, :] + radius * rng.standard_normal((x.shape[0], K, d))
        S = _evaluate(fn, Z.reshape(-1, d)).reshape(x.shape[0], K, d)
        sv[s:s + per] = np.linalg.svd(S, compute_uv=False)
    if gap == "ratio":
        res = estimate_dimension(sv, "gap", min_ratio=float(min_ratio))
        found, normal = res.found, res.position
    else:
        diffs = sv[:, :-1] - sv[:, 1:]
        found = diffs.max(axis=1, initial=0.0) > 0
        normal = np.where(found, np.argmax(diffs, axis=1) + 1, -1)
    dimension = np.where(found, d - normal, np.nan).astype(np.float64)
    return NormalBundleEstimate(dimension=dimension, normal_dimension=normal, singular_values=sv,
                                found=found, gap_rule=gap, n_scores=K)


class _ScoreLIDEstimator:
    """skdim-style base: ``fit`` / ``fit_pw`` set ``dimension_`` and ``dimension_pw_``.

    ``dimension_`` is the ``aggregate`` ("median" or "mean") of the pointwise estimates with
    NaN entries (no gap) left out, NaN when all are NaN; ``n_undetermined_`` counts them.
    Subclasses define ``_pointwise(X) -> (B,)``, validating everything before any work.
    """

    @classmethod
    def _param_names(cls) -> list[str]:
        params = inspect.signature(cls.__init__).parameters
        return [n for n in params if n != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor arguments as stored (sklearn convention)."""
        return {n: getattr(self, n) for n in self._param_names()}

    def set_params(self, **params: Any) -> _ScoreLIDEstimator:
        for name, value in params.items():
            if name not in self._param_names():
                raise ValueError(f"unknown parameter {name!r}; allowed {self._param_names()}")
            setattr(self, name, value)
        return self

    def _source(self) -> tuple[ScoreFn | None, np.ndarray | None]:
        """(callable, None) or (None, training set Y) from the ``score`` argument."""
        a, delta = _scalar("a", self.a), _scalar("delta", self.delta)
        if callable(self.score):
            return _callable(self.score, self.torch_fn), None
        d = np.shape(self.score)[1] if np.ndim(self.score) == 2 else 1
        try:
            return None, validate(np.empty((0, d)), self.score, a, delta, "numpy")[1]
        except ValueError as exc:
            raise ValueError(f"score must be a callable or training data (N, d): {exc}") from exc

    def fit(self, X: Any, y: Any = None) -> _ScoreLIDEstimator:
        """Estimate at the clean points X (B >= 1, d); sets dimension_ and dimension_pw_."""
        check_choice("aggregate", self.aggregate, AGGREGATES)
        pw = np.asarray(self._pointwise(X), dtype=np.float64)
        ok = pw[np.isfinite(pw)]
        self.dimension_pw_, self.n_undetermined_ = pw, int(pw.size - ok.size)
        self.dimension_ = (float("nan") if ok.size == 0 else
                           float(np.median(ok) if self.aggregate == "median" else np.mean(ok)))
        return self

    def fit_pw(self, X: Any, y: Any = None) -> _ScoreLIDEstimator:
        """Pointwise estimates (the computation of `fit`, skdim's name)."""
        return self.fit(X, y)


class FlipdEstimator(_ScoreLIDEstimator):
    """FLIPD ``d + delta (tr grad s + |s|^2)`` at ``a x``: exact for data (`empirical_flipd`),
    by `network_flipd` for a torch callable (``torch_fn``), else central differences."""

    def __init__(self, score: Any, a: float, delta: float, *, torch_fn: bool = False,
                 fd_step: float | None = None, backend: str = "numpy",
                 aggregate: str = "median") -> None:
        self.score, self.a, self.delta, self.torch_fn = score, a, delta, torch_fn
        self.fd_step, self.backend, self.aggregate = fd_step, backend, aggregate

    def _pointwise(self, X: Any) -> np.ndarray:
        fn, Y = self._source()
        a, delta = _scalar("a", self.a), _scalar("delta", self.delta)
        if Y is not None:
            return empirical_flipd(_points(X, Y.shape[1], 1), Y, a=a, delta=delta,
                                   backend=self.backend)
        X = _points(X, None, 1)
        if self.torch_fn:
            from .flipd_network import network_flipd
            return network_flipd(self.score, X, a=a, delta=delta).flipd
        h, s = _fd_step(self.fd_step, delta), _evaluate(fn, a * X)
        tr = np.trace(_fd_jacobian(fn, a * X, h), axis1=1, axis2=2)
        return X.shape[1] + delta * (tr + np.einsum("bd,bd->b", s, s))


class NormalBundleEstimator(_ScoreLIDEstimator):
    """`normal_bundle_dimension` per point (data: the exact empirical score of ``score``)."""

    def __init__(self, score: Any, a: float, delta: float, *, n_scores: int | None = None,
                 radius: float | None = None, gap: str = "difference",
                 min_ratio: float = DEFAULT_MIN_GAP_RATIO, seed: int = 0,
                 torch_fn: bool = False, aggregate: str = "median") -> None:
        self.score, self.a, self.delta, self.n_scores = score, a, delta, n_scores
        self.radius, self.gap, self.min_ratio, self.seed = radius, gap, min_ratio, seed
        self.torch_fn, self.aggregate = torch_fn, aggregate

    def _pointwise(self, X: Any) -> np.ndarray:
        fn, Y = self._source()
        if Y is not None:
            fn = empirical_score_callable(Y, self.a, self.delta)
        X = _points(X, None if Y is None else Y.shape[1], 1)
        return normal_bundle_dimension(fn, X, a=self.a, delta=self.delta,
                                       n_scores=self.n_scores, radius=self.radius, gap=self.gap,
                                       min_ratio=self.min_ratio, seed=self.seed).dimension


class SpectralGapEstimator(_ScoreLIDEstimator):
    """`estimate_dimension` of the score-Jacobian singular values at ``a x``: exact for data
    (`jacobian_spectrum`), torch.func for ``torch_fn``, else central differences.

    Default method "ratio" (values below half the largest): on the empirical score the tangent
    eigenvalues ``-1/delta + a^2 lambda(C_w)/delta^2`` can cross 0, and "gap" then reads the
    deepest gap inside the tangent block (docs/numerics.md)."""

    def __init__(self, score: Any, a: float, delta: float, *, method: str = "ratio",
                 drop: int | None = None, torch_fn: bool = False, fd_step: float | None = None,
                 backend: str = "numpy", aggregate: str = "median") -> None:
        self.score, self.a, self.delta, self.method, self.drop = score, a, delta, method, drop
        self.torch_fn, self.fd_step, self.backend = torch_fn, fd_step, backend
        self.aggregate = aggregate

    def _pointwise(self, X: Any) -> np.ndarray:
        check_choice("method", self.method, METHODS)
        drop = None if self.drop is None else check_int("drop", self.drop, minimum=0)
        fn, Y = self._source()
        a, delta = _scalar("a", self.a), _scalar("delta", self.delta)
        if Y is not None:
            X = _points(X, Y.shape[1], 1)
            sv = jacobian_spectrum(a * X, Y, a=a, delta=delta,
                                   backend=self.backend).singular_values
        else:
            X = _points(X, None, 1)
            if self.torch_fn:
                import torch

                from .autodiff import score_jacobian
                J = score_jacobian(self.score, torch.as_tensor(a * X, dtype=torch.float64)
                                   ).detach().cpu().numpy()
            else:
                J = _fd_jacobian(fn, a * X, _fd_step(self.fd_step, delta))
            sv = np.linalg.svd(J, compute_uv=False)
        return estimate_dimension(sv, self.method, drop=drop).dimension


class ClosedFormEstimator(_ScoreLIDEstimator):
    """`closed_form_lid` per point (dgm_geometry's CFDM; equals empirical FLIPD at knn_k=None)."""

    def __init__(self, Y: Any, a: float, delta: float, *, knn_k: int | None = None,
                 aggregate: str = "median") -> None:
        self.Y, self.a, self.delta, self.knn_k, self.aggregate = Y, a, delta, knn_k, aggregate

    def _pointwise(self, X: Any) -> np.ndarray:
        d = np.shape(self.Y)[1] if np.ndim(self.Y) == 2 else 1
        Y = validate(np.empty((0, d)), self.Y, self.a, self.delta, "numpy")[1]
        return closed_form_lid(_points(X, Y.shape[1], 1), Y, a=self.a, delta=self.delta,
                               knn_k=self.knn_k)


def _fd_step(fd_step: float | None, delta: float) -> float:
    return FD_REL_STEP * float(np.sqrt(delta)) if fd_step is None else _scalar("fd_step", fd_step)

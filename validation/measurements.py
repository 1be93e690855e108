"""Monte-Carlo measurements of empirical-score Jacobian spectra, shared by the validation commands.

Two protocols (THEORY §5c, §6):

- ``origin``: the losing-dimensions authors' empirical-score panel -- the orthogonal-group
  estimator at x0 = 0 with Z Haar orthogonal and sigma = sqrt(Delta(t)), *centred*: rows
  ``S_i = (s(x0 + sigma z_i) - s(x0)) / sigma`` (``centring="subtract"``, default) or the
  symmetric differences ``(s(x0 + sigma z_i) - s(x0 - sigma z_i)) / (2 sigma)``. Uncentred rows
  carry the rank-one mean-score term ``z_i . s(x0)/sigma`` (s(0) = a ybar(0)/Delta is not 0 for
  an empirical score) in every subspace block; THEORY §6 drops the largest singular value of the
  full S for it. Centring removes it from the full spectrum *and* from every block, so the
  full-spectrum panel (singular values of the centred S, nothing dropped) and the per-subspace
  counts see the same matrix. For a linear score with an offset, ``S = Z J`` exactly;
- ``fresh``: the exact Jacobian (THEORY §4) at fresh test points x = a y + sqrt(Delta) xi,
  y drawn from the data model, xi ~ N(0, I); ``fresh_mean``: the gap of the Jacobian *averaged*
  over those points (what the REM's E[J] describes).

Per-subspace *retained dimension*: :func:`geomem.numerics.retained.subspace_retained_dimension`
(re-exported here) for every protocol -- the origin estimator through ``Z^T S`` (= J for a
linear score, :func:`estimator_retained_dimension`), so all protocols and the trained-network
measurements use one definition (default ``DEFAULT_DEFINITION`` = "projection") and the theory's
gap criterion (:func:`geomem.theory.phase.gap_fraction`, :func:`~geomem.theory.phase.gap_retained`:
a value is retained while it keeps at least ``LOSS_FRACTION`` = 1/2 of the population gap,
``(1 - Delta sigma) / (1 - Delta/(Delta + a^2 v_k)) >= 1/2``). :func:`retained_grid` evaluates
every definition at every threshold of :data:`ROBUSTNESS_THRESHOLDS` at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats

from ..numerics.retained import (
    DEFAULT_DEFINITION,
    RETAINED_DEFINITIONS,
    effective_subspace_variances,
    estimator_retained_dimension,
    subspace_retained_dimension,
)
from ..theory.manifold import LinearManifold
from ..theory.phase import LOSS_FRACTION, gap_fraction, gap_retained

__all__ = [
    "CENTRINGS",
    "DEFAULT_DEFINITION",
    "RETAINED_DEFINITIONS",
    "ROBUSTNESS_THRESHOLDS",
    "effective_subspace_variances",
    "estimator_retained_dimension",
    "fresh_protocol",
    "fresh_test_points",
    "mean_jacobian_retained",
    "orthogonal_group_estimate",
    "orthogonal_group_matrix",
    "origin_protocol",
    "rem_retained_dimension",
    "retained_counts",
    "retained_grid",
    "subspace_retained_dimension",
]

#: gap thresholds of the robustness table (the default criterion is the middle one)
ROBUSTNESS_THRESHOLDS = (1 / 3, LOSS_FRACTION, 2 / 3)
#: how the origin estimator removes the mean score s(x0) (module docstring)
CENTRINGS = ("subtract", "symmetric", "none")


def fresh_test_points(model: LinearManifold, n: int, a: float, delta: float,
                      rng: np.random.Generator) -> np.ndarray:
    """``n`` test points (n, d) from the population noised law p_t = law(a y + sqrt(Delta) xi)."""
    y = model.sample(n, rng)
    return a * y + np.sqrt(delta) * rng.standard_normal(y.shape)


def retained_counts(values: np.ndarray, a: float, delta: float, variance: float,
                    threshold: float = LOSS_FRACTION) -> np.ndarray:
    """Number of retained values per row of ``values`` (..., m) -> (...,): the theory's gap
    criterion (:func:`~geomem.theory.phase.gap_fraction` >= ``threshold``) applied to singular
    values or absolute eigenvalues (1/units^2) of directions of variance ``variance``."""
    return np.sum(gap_retained(gap_fraction(values, a, delta, variance), threshold), axis=-1)


def retained_grid(J: np.ndarray, model: LinearManifold, a: float, delta: float) -> np.ndarray:
    """Counts (..., D, L, K) of J (..., d, d) under every definition (D =
    len(RETAINED_DEFINITIONS), in that order) and every threshold (L =
    len(ROBUSTNESS_THRESHOLDS))."""
    return np.stack([subspace_retained_dimension(J, model, a, delta, definition=name,
                                                 threshold=ROBUSTNESS_THRESHOLDS)
                     for name in RETAINED_DEFINITIONS], axis=-3)


def orthogonal_group_estimate(score_fn: Callable[[np.ndarray], np.ndarray], x0: np.ndarray,
                              sigma: float, rng: np.random.Generator, *,
                              centring: str = "subtract") -> tuple[np.ndarray, np.ndarray]:
    """The orthogonal-group estimator ``(S, Z)``, both (d, d): Z Haar orthogonal (rows z_i),
    S row i = ``(s(x0 + sigma z_i) - s(x0)) / sigma`` ("subtract"), the symmetric difference
    ``(s(x0 + sigma z_i) - s(x0 - sigma z_i)) / (2 sigma)`` ("symmetric") or the authors'
    uncentred ``s(x0 + sigma z_i) / sigma`` ("none"). ``score_fn`` maps (n, d) -> (n, d).
    For ``s(x) = J x + b``, S = Z J under "subtract" and "symmetric" (and under "none" iff b = 0).
    """
    if centring not in CENTRINGS:
        raise ValueError(f"centring must be one of {CENTRINGS}, got {centring!r}")
    d = x0.shape[0]
    Z = stats.ortho_group.rvs(d, random_state=rng) if d > 1 else np.ones((1, 1))
    if centring == "symmetric":
        S = (score_fn(x0 + sigma * Z) - score_fn(x0 - sigma * Z)) / (2.0 * sigma)
    else:
        S = score_fn(x0 + sigma * Z) / sigma
        if centring == "subtract":
            S = S - score_fn(x0[None, :]) / sigma
    return np.asarray(S, dtype=np.float64), Z


def orthogonal_group_matrix(score_fn: Callable[[np.ndarray], np.ndarray], x0: np.ndarray,
                            sigma: float, rng: np.random.Generator, *,
                            centring: str = "subtract") -> np.ndarray:
    """The estimator matrix S (d, d) of :func:`orthogonal_group_estimate` (Z discarded)."""
    return orthogonal_group_estimate(score_fn, x0, sigma, rng, centring=centring)[0]


def origin_protocol(Y: np.ndarray, model: LinearManifold, a: float, delta: float,
                    rng: np.random.Generator, repetitions: int = 5, *,
                    centring: str = "subtract") -> dict:
    """The authors' origin protocol (centred): full spectrum and per-subspace retained dimension.

    Returns ``sv`` (d,) descending, the mean over ``repetitions`` draws of Z of the singular
    values of the centred S (:func:`orthogonal_group_estimate`; the full spectrum and the
    subspace counts come from the same S), ``jacobians`` (repetitions, d, d) the estimates
    ``Z^T S`` (= J for a linear score), and ``retained`` (repetitions, K) their counts under
    the default definition and threshold.
    """
    from ..numerics.empirical import empirical_score

    def score_fn(X):
        return empirical_score(np.asarray(X, dtype=np.float64), Y, a=a, delta=delta)

    x0 = np.zeros(model.d)
    sigma = float(np.sqrt(delta))
    svs, jacobians = [], []
    for _ in range(repetitions):
        S, Z = orthogonal_group_estimate(score_fn, x0, sigma, rng, centring=centring)
        svs.append(np.linalg.svd(S, compute_uv=False))
        jacobians.append(Z.T @ S)
    jacobians = np.asarray(jacobians)
    return {"sv": np.mean(np.asarray(svs), axis=0), "jacobians": jacobians,
            "retained": subspace_retained_dimension(jacobians, model, a, delta)}


def fresh_protocol(Y: np.ndarray, X: np.ndarray, model: LinearManifold, a: float, delta: float
                   ) -> dict:
    """Exact Jacobians at test points ``X`` (B, d).

    Returns ``sv`` (B, d) singular values descending (absolute eigenvalues of the symmetric
    Jacobian), ``jacobians`` (B, d, d), ``retained`` (B, K) per-subspace counts under the
    default definition and threshold, and ``mean_jacobian`` (d, d): the Jacobian averaged over
    the test points (the REM predicts this *mean*; a single point's Jacobian is low-rank once
    the weights condense on a few training points).
    """
    from ..numerics.empirical import empirical_jacobian

    J = np.asarray(empirical_jacobian(X, Y, a=a, delta=delta))  # (B, d, d)
    sv = np.sort(np.abs(np.linalg.eigvalsh(J)), axis=1)[:, ::-1]
    return {"sv": sv, "jacobians": J, "retained": subspace_retained_dimension(J, model, a, delta),
            "mean_jacobian": J.mean(axis=0)}


def mean_jacobian_retained(mean_jacobian: np.ndarray, model: LinearManifold, a: float,
                           delta: float, *, definition: str = DEFAULT_DEFINITION) -> np.ndarray:
    """Retained dimension per subspace (K,) of an averaged Jacobian (d, d)."""
    return subspace_retained_dimension(np.asarray(mean_jacobian), model, a, delta,
                                       definition=definition)


def rem_retained_dimension(lam: np.ndarray, a: np.ndarray, delta: np.ndarray,
                           variance: float, m: int) -> np.ndarray:
    """Retained dimension of a subspace (dim ``m``, variance ``v``) predicted by the REM (§5b).

    The expected tangent eigenvalue is ``-1/(Delta + lam* a^2 v)``, whose gap fraction is
    ``lam* (1 + r) / (1 + lam* r)``, ``r = a^2 v / Delta``; by the gap criterion the whole
    subspace is retained iff that is >= 1/2, i.e. ``lam* >= 1/(2 + r)``.
    ``lam`` of any shape (broadcast with a, delta); returns m or 0 per entry (float).
    """
    r = np.asarray(a) ** 2 * variance / np.asarray(delta)
    lam = np.asarray(lam)
    return np.where(gap_retained(lam * (1 + r) / (1 + lam * r)), float(m), 0.0)

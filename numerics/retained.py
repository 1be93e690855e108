"""Per-subspace retained dimension of a score Jacobian: one definition for every protocol.

Every measurement of "how many directions of tangent subspace k keep their spectral gap" --
the origin estimator, exact Jacobians at fresh points, the mean Jacobian, trained networks --
calls :func:`subspace_retained_dimension`. The *gap criterion* itself (which value counts as
retained) is the theory's: :func:`geomem.theory.phase.gap_fraction` and
:func:`geomem.theory.phase.gap_retained`, so the phase diagram and the measurements cannot
drift apart.

Shapes and units. ``J`` (..., d, d): score Jacobians in 1/(data units)^2 (eigenvalues near
``-1/Delta`` on normal directions); ``model`` a :class:`~geomem.theory.LinearManifold` with K
tangent subspaces of dimensions ``m_k`` and orthonormal bases ``U_k`` (d, m_k); ``a``, ``Delta``
the schedule's scale and noise variance at t. A value ``sigma`` (a singular value or an absolute
eigenvalue, 1/units^2) keeps the gap fraction
``f_k(sigma) = (1 - Delta sigma) / (1 - Delta/(Delta + a^2 v_k))`` of the population gap
(``v_k`` the subspace's effective variance), and is retained iff ``f_k >= threshold``
(default ``LOSS_FRACTION`` = 1/2). Returns counts (..., K) in [0, m_k].

Definitions (``definition=``; docs/theory.md, "Retained dimension of a subspace"):

- ``"restriction"``: the m_k singular values of ``J U_k`` (d x m_k); the count is the number
  retained. Keeps the leakage of subspace-k inputs into other output directions.
- ``"compression"``: the m_k absolute eigenvalues of the compressed block ``U_k^T J U_k``
  (m_k x m_k), symmetrised ``(B + B^T)/2`` first (a trained network's J is not exactly
  symmetric; for an exact empirical-score J the block is symmetric already). Drops leakage.
- ``"projection"`` (default): the retained singular subspace of J itself, projected on
  subspace k. With ``J = P diag(sigma) Q^T`` (right singular vectors ``q_i``, the input
  directions), ``count_k = sum_i [f_k(sigma_i) >= threshold] |U_k^T q_i|^2`` -- each retained
  direction of J is assigned to the subspaces in proportion to its energy in them (a soft
  assignment). It is basis-free (it depends on J only through the projectors on its singular
  subspaces, so the degenerate -1/Delta bulk cannot make it arbitrary), sums over subspaces
  to the full-spectrum count of retained directions when the subspaces share a threshold, and
  is a real number, not an integer.

For a block-diagonal J (the population score) all three agree exactly. For the orthogonal-group
estimator ``S = Z J`` (``Z`` orthogonal), :func:`estimator_retained_dimension` applies the same
definitions to ``Z^T S = J``, so the origin path gives the same counts as the exact Jacobian.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ..theory import phase as _phase
from ..theory.manifold import LinearManifold

__all__ = [
    "DEFAULT_DEFINITION",
    "RETAINED_DEFINITIONS",
    "effective_subspace_variances",
    "estimator_retained_dimension",
    "projected_retained_dimension",
    "subspace_retained_dimension",
]

#: the per-subspace retained-dimension definitions (module docstring)
RETAINED_DEFINITIONS = ("restriction", "compression", "projection")
#: the definition every figure, table and network measurement uses unless told otherwise
DEFAULT_DEFINITION = "projection"


@lru_cache(maxsize=64)
def _variances(d: int, dims: tuple, stds: tuple, residual_std: float, normalized: bool
               ) -> tuple[float, ...]:
    from ..theory.population import effective_direction_variances

    model = LinearManifold(d, dims, stds=stds, residual_std=residual_std, normalized=normalized)
    v = np.asarray(effective_direction_variances(model), dtype=np.float64)
    return tuple(float(v[model.direction_subspace == k].mean()) for k in range(len(dims)))


def effective_subspace_variances(model: LinearManifold) -> np.ndarray:
    """Per-subspace variance (K,) of the data as the score sees it (data units^2): the exact
    second moments of the normalised generator when ``model.normalized`` (the theory's
    Gaussian approximation), else the model variances. Rotation-invariant, hence cached on
    (d, dims, stds, residual_std, normalized)."""
    return np.array(_variances(model.d, tuple(model.dims), tuple(model.stds),
                               float(model.residual_std), bool(model.normalized)))


def _retained_indicator(values: np.ndarray, a: float, delta: float, variance: float,
                        thresholds: np.ndarray) -> np.ndarray:
    """``gap_retained(gap_fraction(values))`` for every threshold: (L, ...) float 0/1."""
    fraction = _phase.gap_fraction(values, a, delta, variance)
    return np.stack([_phase.gap_retained(fraction, float(th)) for th in thresholds]
                    ).astype(np.float64)


def projected_retained_dimension(values: np.ndarray, energy: np.ndarray,
                                 variances: np.ndarray, a: float, delta: float,
                                 threshold: float | Sequence[float] = _phase.LOSS_FRACTION
                                 ) -> np.ndarray:
    """The "projection" count from a singular system already computed.

    values (..., n): singular values (or absolute eigenvalues of a symmetric J), 1/units^2;
    energy (..., n, K): ``|U_k^T q_i|^2``, the energy of direction i in subspace k;
    variances (K,): per-subspace variances (:func:`effective_subspace_variances`).
    Returns ``count_k = sum_i [f_k(sigma_i) >= threshold] energy_ik``, (..., K) for a scalar
    threshold, (..., L, K) for L thresholds. Used where J is known only in a reduced frame
    (:func:`geomem.numerics.sample_empirical_jacobians`).
    """
    values, energy = np.asarray(values, np.float64), np.asarray(energy, np.float64)
    variances = np.atleast_1d(np.asarray(variances, np.float64))
    if energy.shape != values.shape + variances.shape:
        raise ValueError(f"energy must have shape values.shape + (K,) = "
                         f"{values.shape + variances.shape}, got {energy.shape}")
    scalar = np.ndim(threshold) == 0
    thresholds = np.atleast_1d(np.asarray(threshold, dtype=np.float64))
    out = np.stack([np.sum(_retained_indicator(values, a, delta, float(v), thresholds)
                           * energy[..., k], axis=-1) for k, v in enumerate(variances)], -1)
    out = np.moveaxis(out, 0, -2)  # (..., L, K)
    return out[..., 0, :] if scalar else out


def subspace_retained_dimension(J: np.ndarray, model: LinearManifold, a: float, delta: float,
                                *, definition: str = DEFAULT_DEFINITION,
                                threshold: float | Sequence[float] = _phase.LOSS_FRACTION
                                ) -> np.ndarray:
    """Retained dimension of each tangent subspace of ``model`` for Jacobians ``J``.

    J : (..., d, d) array (not necessarily symmetric). a, delta : floats at the time of J.
    definition : one of :data:`RETAINED_DEFINITIONS` (module docstring).
    threshold : the gap fraction a value must keep to count as retained; a scalar gives
        counts (..., K), a 1-D sequence of L thresholds gives (..., L, K).

    Returns float counts in [0, m_k] (integers except under "projection").
    """
    if definition not in RETAINED_DEFINITIONS:
        raise ValueError(f"definition must be one of {RETAINED_DEFINITIONS}, got {definition!r}")
    J = np.asarray(J, dtype=np.float64)
    if J.ndim < 2 or J.shape[-2:] != (model.d, model.d):
        raise ValueError(f"J must have shape (..., {model.d}, {model.d}), got {J.shape}")
    scalar = np.ndim(threshold) == 0
    thresholds = np.atleast_1d(np.asarray(threshold, dtype=np.float64))
    variances = effective_subspace_variances(model)
    K = model.n_subspaces
    out = np.empty((len(thresholds),) + J.shape[:-2] + (K,))
    if definition == "projection":
        _, sv, vh = np.linalg.svd(J)  # vh[..., i, :] = q_i^T
        energy = np.stack([np.sum((vh @ model.subspace_basis(k)) ** 2, axis=-1)
                           for k in range(K)], axis=-1)  # (..., d, K): |U_k^T q_i|^2
        counts = projected_retained_dimension(sv, energy, variances, a, delta, thresholds)
        return counts[..., 0, :] if scalar else counts
    for k in range(K):
        U = model.subspace_basis(k)
        if definition == "restriction":
            values = np.linalg.svd(J @ U, compute_uv=False)  # (..., m_k)
            out[..., k] = _retained_indicator(values, a, delta, variances[k], thresholds
                                              ).sum(axis=-1)
        else:  # compression
            block = np.swapaxes(U, 0, 1) @ J @ U
            values = np.abs(np.linalg.eigvalsh(0.5 * (block + np.swapaxes(block, -1, -2))))
            out[..., k] = _retained_indicator(values, a, delta, variances[k], thresholds
                                              ).sum(axis=-1)
    out = np.moveaxis(out, 0, -2)  # (..., L, K)
    return out[..., 0, :] if scalar else out


def estimator_retained_dimension(S: np.ndarray, Z: np.ndarray, model: LinearManifold, a: float,
                                 delta: float, *, definition: str = DEFAULT_DEFINITION,
                                 threshold: float | Sequence[float] = _phase.LOSS_FRACTION
                                 ) -> np.ndarray:
    """:func:`subspace_retained_dimension` of the orthogonal-group estimator.

    S : (..., d, d) estimator matrix, row i = ``(s(x0 + sigma z_i) - s(x0)) / sigma`` (or the
    symmetric difference); Z : (..., d, d) the orthogonal matrix whose rows are the ``z_i``.
    For a linear score ``s(x) = J x + b``, ``S = Z J`` and ``Z^T S = J`` exactly, so every
    definition gives the exact Jacobian's counts (for "restriction" the singular values of
    ``Z^T S U_k`` are those of ``S U_k``; "compression" needs ``Z^T S``).
    """
    J = np.swapaxes(np.asarray(Z, dtype=np.float64), -1, -2) @ np.asarray(S, dtype=np.float64)
    return subspace_retained_dimension(J, model, a, delta, definition=definition,
                                       threshold=threshold)

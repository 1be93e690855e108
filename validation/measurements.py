"""Monte-Carlo measurements of empirical-score Jacobian spectra, shared by the validation commands.

Two protocols (THEORY §5c, §6):

- ``origin``: the losing-dimensions authors' empirical-score panel -- the orthogonal-group
  estimator at x0 = 0: rows ``S_k = s(x0 + sigma z_k) / sigma`` with Z Haar orthogonal and
  sigma = sqrt(Delta(t)); singular values of S, averaged over repetitions;
- ``fresh``: the exact Jacobian (THEORY §4) at fresh test points x = a y + sqrt(Delta) xi,
  y drawn from the data model, xi ~ N(0, I).

Per-subspace *retained dimension* (the gap criterion used by every figure and table; the same
definition as :mod:`geomem.theory.phase`): the singular values of the Jacobian restricted to
subspace k (``J U_k``; for the origin protocol ``S U_k``, which equals ``Z J U_k`` for a linear
score) are compared, in units of the normal-direction value ``1/Delta``, with the population
tangent value ``Delta/(Delta + a^2 v_k)`` (``v_k`` the subspace's effective variance). A
direction is retained while it keeps at least ``LOSS_FRACTION`` (1/2) of the population gap:
``(1 - Delta sigma) / (1 - Delta/(Delta + a^2 v_k)) >= 1/2``. The retained dimension of
subspace k is the count (0..m_k).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..theory.manifold import LinearManifold

__all__ = [
    "effective_subspace_variances",
    "fresh_test_points",
    "mean_jacobian_retained",
    "orthogonal_group_matrix",
    "origin_protocol",
    "fresh_protocol",
    "retained_counts",
    "rem_retained_dimension",
]


def effective_subspace_variances(model: LinearManifold) -> np.ndarray:
    """Per-subspace variance (K,) of the data as the score sees it: the exact second moments
    of the normalised generator when ``model.normalized`` (the same Gaussian approximation as
    the theory), else the model variances."""
    from ..theory.population import effective_direction_variances

    v = np.asarray(effective_direction_variances(model), dtype=np.float64)
    return np.array([v[model.direction_subspace == k].mean() for k in range(model.n_subspaces)])


def fresh_test_points(model: LinearManifold, n: int, a: float, delta: float,
                      rng: np.random.Generator) -> np.ndarray:
    """``n`` test points (n, d) from the population noised law p_t = law(a y + sqrt(Delta) xi)."""
    y = model.sample(n, rng)
    return a * y + np.sqrt(delta) * rng.standard_normal(y.shape)


def retained_counts(block_sv: np.ndarray, a: float, delta: float, variance: float) -> np.ndarray:
    """Number of retained directions per row of ``block_sv`` (..., m_k) -> (...,).

    Retained: the gap fraction ``(1 - Delta sv) / (1 - Delta/(Delta + a^2 variance))`` is at
    least ``LOSS_FRACTION``.
    """
    from ..theory.phase import LOSS_FRACTION  # the theory's definition of "lost"

    population_gap = 1.0 - delta / (delta + a * a * variance)
    kept = (1.0 - delta * np.asarray(block_sv)) / population_gap
    return np.sum(kept >= LOSS_FRACTION, axis=-1)


def orthogonal_group_matrix(score_fn, x0: np.ndarray, sigma: float, rng: np.random.Generator
                            ) -> np.ndarray:
    """The authors' estimator matrix S (d, d): row k is ``s(x0 + sigma z_k) / sigma`` with Z a
    Haar-random orthogonal matrix. For a linear score s(x) = J x, S = Z J, so the singular
    values of S are those of J and those of ``S U_k`` are those of ``J U_k``."""
    d = x0.shape[0]
    Z = stats.ortho_group.rvs(d, random_state=rng) if d > 1 else np.ones((1, 1))
    return score_fn(x0 + sigma * Z) / sigma


def origin_protocol(Y: np.ndarray, model: LinearManifold, a: float, delta: float,
                    rng: np.random.Generator, repetitions: int = 5) -> dict:
    """The authors' origin protocol: full spectrum and per-subspace retained dimension.

    Returns ``sv`` (d,) descending, the mean over ``repetitions`` draws of Z of the singular
    values of S (:func:`orthogonal_group_matrix`; the same estimator as
    :func:`geomem.numerics.jacobians.orthogonal_group_singular_values`, computed here once per
    draw so that the full spectrum and the subspace blocks come from the same Z), and
    ``retained`` (repetitions, K) counts from the subspace-restricted ``S U_k``.
    """
    from ..numerics.empirical import empirical_score

    def score_fn(X):
        return empirical_score(np.asarray(X, dtype=np.float64), Y, a=a, delta=delta)

    x0 = np.zeros(model.d)
    sigma = float(np.sqrt(delta))
    variances = effective_subspace_variances(model)
    svs, counts = [], []
    for _ in range(repetitions):
        S = orthogonal_group_matrix(score_fn, x0, sigma, rng)
        svs.append(np.linalg.svd(S, compute_uv=False))
        counts.append([retained_counts(np.linalg.svd(S @ model.subspace_basis(k),
                                                     compute_uv=False), a, delta, variances[k])
                       for k in range(model.n_subspaces)])
    return {"sv": np.mean(np.asarray(svs), axis=0), "retained": np.asarray(counts)}


def fresh_protocol(Y: np.ndarray, X: np.ndarray, model: LinearManifold, a: float, delta: float
                   ) -> dict:
    """Exact Jacobians at test points ``X`` (B, d).

    Returns ``sv`` (B, d) singular values descending (absolute eigenvalues of the symmetric
    Jacobian), ``retained`` (B, K) per-subspace counts from the restricted blocks
    ``U_k^T J U_k``, and ``mean_blocks`` (K arrays (m_k, m_k)): the blocks averaged over the
    test points (the REM predicts this *mean* Jacobian; a single point's Jacobian is low-rank
    once the weights condense on a few training points).
    """
    from ..numerics.empirical import empirical_jacobian

    J = np.asarray(empirical_jacobian(X, Y, a=a, delta=delta))  # (B, d, d)
    sv = np.sort(np.abs(np.linalg.eigvalsh(J)), axis=1)[:, ::-1]
    variances = effective_subspace_variances(model)
    counts, means = [], []
    for k in range(model.n_subspaces):
        U = model.subspace_basis(k)
        block = np.einsum("di,bde,ej->bij", U, J, U)
        counts.append(retained_counts(np.abs(np.linalg.eigvalsh(block)), a, delta,
                                      variances[k]))
        means.append(block.mean(axis=0))
    return {"sv": sv, "retained": np.stack(counts, axis=1), "mean_blocks": means}


def mean_jacobian_retained(mean_blocks: list[np.ndarray], model: LinearManifold, a: float,
                           delta: float) -> np.ndarray:
    """Retained dimension per subspace (K,) of averaged Jacobian blocks (gap criterion)."""
    variances = effective_subspace_variances(model)
    return np.array([retained_counts(np.abs(np.linalg.eigvalsh(np.asarray(b))), a, delta,
                                     variances[k]) for k, b in enumerate(mean_blocks)])


def rem_retained_dimension(lam: np.ndarray, a: np.ndarray, delta: np.ndarray,
                           variance: float, m: int) -> np.ndarray:
    """Retained dimension of a subspace (dim ``m``, variance ``v``) predicted by the REM (§5b).

    The expected tangent eigenvalue is ``-1/(Delta + lam* a^2 v)``, whose gap fraction is
    ``lam* (1 + r) / (1 + lam* r)``, ``r = a^2 v / Delta``; by the gap criterion the whole
    subspace is retained iff that is >= 1/2, i.e. ``lam* >= 1/(2 + r)``.
    ``lam`` of any shape (broadcast with a, delta); returns m or 0 per entry (float).
    """
    from ..theory.phase import LOSS_FRACTION

    r = np.asarray(a) ** 2 * variance / np.asarray(delta)
    lam = np.asarray(lam)
    return np.where(lam * (1 + r) / (1 + lam * r) >= LOSS_FRACTION, float(m), 0.0)

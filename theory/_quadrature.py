"""Gauss rules for chi-square variables (private; shared by the REM and finite-N averages over
fresh test points, whose per-group squared norms are scaled chi-square variables)."""

from __future__ import annotations

import numpy as np
from scipy import linalg

__all__ = ["chi2_product_rule", "chi2_rule"]


def chi2_rule(dof: float, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule for a chi^2_dof variable: nodes (n,), weights (n,) summing to 1.

    chi^2 = 2 w with w ~ Gamma(dof/2): generalized Gauss-Laguerre (alpha = dof/2 - 1) built by
    Golub-Welsch from its Jacobi matrix, so no Gamma(alpha + 1) normalisation can overflow
    (scipy.special.roots_genlaguerre returns NaN weights for dof ~ 1e3 and above).
    """
    alpha = dof / 2.0 - 1.0
    i = np.arange(n_nodes, dtype=np.float64)
    diagonal = 2.0 * i + alpha + 1.0
    off = np.sqrt(i[1:] * (i[1:] + alpha))
    nodes, vectors = linalg.eigh_tridiagonal(diagonal, off)
    weights = vectors[0] ** 2
    return 2.0 * nodes, weights / weights.sum()


def chi2_product_rule(dofs: np.ndarray, n_nodes: int, active: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Tensor-product nodes (Q, G) for independent chi^2_{dof_g} variables, weights (Q,).

    Inactive groups (``active[g]`` False) get the 1-node rule, i.e. their mean dof_g.
    """
    dofs = np.asarray(dofs, dtype=np.float64)
    active = np.ones(dofs.size, dtype=bool) if active is None else np.asarray(active)
    nodes, weights = [], []
    for dof, on in zip(dofs, active, strict=True):
        g_nodes, g_weights = chi2_rule(dof, n_nodes) if on else (np.array([dof]),
                                                                 np.array([1.0]))
        nodes.append(g_nodes)
        weights.append(g_weights)
    grid = np.stack(np.meshgrid(*nodes, indexing="ij"), axis=-1).reshape(-1, dofs.size)
    wgrid = np.prod(np.stack(np.meshgrid(*weights, indexing="ij"), axis=-1).reshape(
        -1, dofs.size), axis=-1)
    return grid, wgrid

"""Exact finite-N, finite-d expectations of the empirical-score weights (THEORY §5c) [std].

Setting: Gaussian linear manifold (un-normalised), N training points ``y_mu`` i.i.d., a test
point x, energies ``E_mu = |x - a y_mu|^2 / (2 Delta)``, weights ``w_mu = e^{-E_mu} / Z``.
Computed without Monte Carlo (docs/theory.md, "Exact finite-N theory"):

- ``E[sum_mu w_mu^2]`` (expected inverse participation ratio);
- per tangent subspace k: ``E[sum_mu w_mu |P_k y_mu|^2]`` and ``E[|P_k ybar|^2]``, hence
  ``E[tr P_k C_w P_k]`` and the mean eigenvalue of ``E[J]`` on subspace k,
  ``-1/Delta + (a^2/Delta^2) E[tr P_k C_w P_k] / m_k``.

Route. With ``u = e^{-E}`` i.i.d. given x and ``s = e^r``,
``1/Z^2 = int s e^{-sZ} ds`` and ``1/Z = int e^{-sZ} ds`` give

    E[sum w^2]          = N   int A_{G2}[1](r)        phi(r)^{N-1} dr
    E[sum w |P_k y|^2]  = N   int A_G[|P_k y|^2](r)   phi(r)^{N-1} dr
    E[|P_k ybar|^2]     = N   int A_{G2}[|P_k y|^2](r) phi^{N-1} dr
                          + N(N-1) int A_G[xhat_k . P_k y](r)^2 phi^{N-2} dr

with ``A_K[h](r) = E[h(y) K(E - r)]`` for the Gumbel-type kernels ``G(v) = e^{-v} exp(-e^{-v})``,
``G2(v) = e^{-2v} exp(-e^{-v})`` and ``phi(r) = 1 - A_H[1](r)``, ``H(v) = 1 - exp(-e^{-v})``
(only the component of ``E[u e^{-su} P_k y]`` along ``P_k x`` survives, by symmetry).
Single-point functions come from the closed-form transform
``Lambda_h(z) = E[h(y) e^{zE}]`` (a product over subspaces of non-central chi-square
transforms), in two exact ways, glued by a smooth partition of unity over r:

1. *Moment series* (lower r, the generalization side): with ``M_k[h] = Lambda_h(-k)``,
   ``phi = sum_k (-s)^k M_k / k!`` and likewise for A_G, A_G2. Entire in s; a node is used
   only while the series is numerically trustworthy (cancellation, convergence).
2. *Bromwich line integrals* (upper r, the memorization side) with the kernels' bilateral
   Laplace transforms ``-Gamma(z)``, ``Gamma(1+z)``, ``Gamma(2+z)``:

       A_K[h](r) = (1/pi) int_0^inf Re[ Khat(c + i w) e^{-(c+iw) r} Lambda_h(c + i w) ] dw,

   on ``Re z = c``, c the saddle point (left of the pole at 0, c in (-1, 0); where
   ``phi^{N-1}`` is still alive at the mean energy, i.e. small N, also right of it), with
   ``w = sigma sinh(tau)`` and the trapezoid rule in tau (numba kernel, `_line_kernels`). The
   r nodes are uniform in a variable that caps both the spacing in ``ell = K - c K'`` (the
   saddle-point value of ln A_H, explicit in c) and in r, and the grid is halved until the
   sum has converged. Everything stays in log scale, so deep memorization (Delta -> 0,
   energies spanning 1e6) works as well as the generalization regime.

Accuracy (tests: direct quadratures at N = 2 and any N in d = 1, Parseval for N = 2, Talbot,
Monte Carlo): ~1e-9 or better for N >= ~10 and in generalization; for N <= 4 with a
one-dimensional subspace at small t, where the far upper energy tail carries weight and the
line integrals' oscillation limits the tau rule, a finer tau step keeps it at ~5e-6 (measured
at N = 2, d = 1, VE t = 0.02 and VP t = 0.01; tests allow 3e-5); N = 1 to ~3e-7.

An independent second route (``method="talbot"``) inverts the h-weighted densities of E with
mpmath's Talbot contour and integrates them against the kernels by Gauss-Legendre quadrature.
It is a slow reference (seconds) for moderate energy ranges, used to validate the fast route.

Fresh test points ``x ~ p_t``: ``|P_g x|^2 = (a^2 s_g^2 + Delta) chi^2_{m_g}`` per group of equal
std (rotational symmetry within subspaces), averaged by a tensor-product generalized
Gauss-Laguerre rule (default 6 nodes per group: relative accuracy ~5e-4, measured against 10
nodes; pass ``n_nodes=10`` for ~1e-6). Normal directions of zero std add a constant to every
E_mu and drop out; a positive ``residual_std`` makes the normal space one more group.

Not implemented: ``E[N_eff] = E[Z^2 / sum u^2]``. It is reachable by the same route
(``1/sum u^2 = int e^{-s sum u^2} ds`` gives single-point functions of u^2 = e^{-2E}, with a
half-Gumbel kernel for the cross term); ``1/E[sum w^2]`` is reported as
``participation_ratio_of_mean``, which is *not* E[N_eff].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._checks import check_choice, check_finite_array, check_int
from ._finite_n_bromwich import bromwich
from ._finite_n_saddle import single_point_functions
from ._finite_n_talbot import talbot
from ._quadrature import chi2_product_rule
from .manifold import LinearManifold, check_gaussian_manifold
from .rem import TEST_POINTS
from .schedules import Schedule, get_schedule

__all__ = ["FiniteNExpectations", "finite_n_expectations", "single_point_functions"]

#: default Gauss-Laguerre nodes per group for fresh test points (relative accuracy ~5e-4),
#: the total budget and the fewest nodes per group accepted under that budget
_DEFAULT_NODES = 6
_NODE_BUDGET = 216
_MIN_NODES = 4


def _fresh_node_count(n_groups: int, n_nodes: int | None) -> int:
    """Quadrature nodes per energy group for fresh points: ``n_nodes`` checked, or the default
    (at most ``_DEFAULT_NODES``, within a total budget of ``_NODE_BUDGET`` product nodes);
    ValueError when the budget leaves fewer than ``_MIN_NODES`` per group."""
    if n_nodes is None:
        per = int(math.floor(_NODE_BUDGET ** (1.0 / n_groups) + 1e-9))
        n_nodes = min(_DEFAULT_NODES, per)
        if n_nodes < _MIN_NODES:
            raise ValueError(f"{n_groups} energy groups is too many for the fresh-point "
                             "quadrature; pass explicit test points x")
    return check_int("n_nodes", n_nodes, minimum=1)


@dataclass(frozen=True)
class FiniteNExpectations:
    """Exact expectations over training sets (and test points, when averaged).

    Shapes: ``(...)`` is the batch shape of the test points (``()`` for fresh points or the
    origin); K tangent subspaces.

    Attributes:
        sum_w2 (...): ``E[sum_mu w_mu^2]``.
        weighted_sq_norm (..., K): ``E[sum_mu w_mu |P_k y_mu|^2]``.
        mean_sq_norm (..., K): ``E[|P_k ybar|^2]``.
        dims (K,), stds (K,): subspace dimensions and stds; a, delta: schedule values at t.
        n_train: N (int, or float beyond int64).
    """

    sum_w2: np.ndarray
    weighted_sq_norm: np.ndarray
    mean_sq_norm: np.ndarray
    dims: np.ndarray
    stds: np.ndarray
    a: float
    delta: float
    n_train: int | float

    @property
    def subspace_trace(self) -> np.ndarray:
        """``E[tr P_k C_w P_k]`` (..., K), units of y^2."""
        return self.weighted_sq_norm - self.mean_sq_norm

    @property
    def jacobian_eigenvalues(self) -> np.ndarray:
        """Mean eigenvalue of ``E[J]`` on subspace k (..., K): -1/Delta + a^2 tr_k/(m_k Delta^2)."""
        return -1.0 / self.delta + self.a**2 * self.subspace_trace / (self.dims * self.delta**2)

    @property
    def retained_variance_fraction(self) -> np.ndarray:
        """``E[tr_k C_w] / (m_k * posterior variance)`` (..., K): 1 for the population score
        (N = inf, posterior variance s^2 Delta/(Delta + a^2 s^2)), 0 for a fully memorized one."""
        post = self.stds**2 * self.delta / (self.delta + self.a**2 * self.stds**2)
        return self.subspace_trace / (self.dims * post)

    @property
    def participation_ratio_of_mean(self) -> np.ndarray:
        """``1 / E[sum w^2]`` (not E[N_eff], which this route does not give)."""
        return 1.0 / self.sum_w2


# ----------------------------------------------------------------------------- model helpers
#: largest N: the r integral works with N in float64 (ln N, N phi^{N-1}); 1e300 leaves headroom
MAX_N_TRAIN = 1e300


def _check_count(n_train: Any) -> int | float:
    """N >= 1: an integer, or an integer-valued float up to MAX_N_TRAIN (N = 1e30 has no
    int64); ints beyond int64 are accepted as floats."""
    if isinstance(n_train, (int, np.integer)) and not isinstance(n_train, bool) and \
            1 <= n_train <= MAX_N_TRAIN:
        return int(n_train) if n_train < 2**63 else float(n_train)
    if isinstance(n_train, (float, np.floating)) and 1.0 <= n_train <= MAX_N_TRAIN and \
            float(n_train).is_integer():
        return int(n_train) if n_train < 2**63 else float(n_train)
    raise ValueError(f"n_train out of range: allowed an integer 1 <= n_train <= "
                     f"{MAX_N_TRAIN:g} (int or integer-valued float), got {n_train!r}")


def _check_model(model: Any) -> LinearManifold:
    return check_gaussian_manifold(model, "the exact finite-N theory needs Gaussian training "
                                          "points")


# ----------------------------------------------------------------------------- public API
def _fresh_nodes(dims, r_snr, n_nodes):
    """Tensor-product nodes (Q, G) of lam_g = (1 + 1/r_g) chi^2_{m_g} and weights (Q,)."""
    grid, weights = chi2_product_rule(dims, n_nodes)
    return grid * (1.0 + 1.0 / np.asarray(r_snr)), weights


def finite_n_expectations(model: LinearManifold, t: float, n_train: int,
                          schedule: Schedule | str, x: Any = "fresh", *,
                          method: str = "bromwich", n_nodes: int | None = None
                          ) -> FiniteNExpectations:
    """Exact ``E[sum w^2]``, ``E[sum w |P_k y|^2]``, ``E[|P_k ybar|^2]`` at one (t, N).

    model: un-normalised :class:`LinearManifold` (Gaussian training points).
    t: one diffusion time (scalar); n_train: N >= 1 (integer, or an integer-valued float up
       to 1e300); schedule: object or name.
    x: "fresh" or None (average over test points x ~ p_t, generalized Gauss-Laguerre over the
       per-group squared norms, ``n_nodes`` per group), "origin", or an array (..., d) of test
       points (expectation over training sets only, per point).
    method: "bromwich" (fast, default) or "talbot" (mpmath reference, slow; explicit x or
       origin only, energies of moderate range).
    Returns :class:`FiniteNExpectations` with batch shape x.shape[:-1] (or ()).
    """
    model = _check_model(model)
    schedule = get_schedule(schedule)
    t_arr = schedule.check_scalar_time(t)
    n_train = _check_count(n_train)
    check_choice("method", method, ("bromwich", "talbot"))
    a = float(schedule.a(t_arr))
    delta = float(schedule.delta(t_arr))
    stds, dims, group = model.energy_groups()
    n_tangent = model.n_subspaces
    b = a**2 * stds**2 / (2.0 * delta)
    weights = None
    if x is None:  # as in rem.freezing_parameter: None means fresh test points
        x = "fresh"
    if isinstance(x, str):
        check_choice("x", x, TEST_POINTS)
        if x == "origin":
            lam, batch = np.zeros((1, stds.size)), ()
        else:
            if method == "talbot":
                raise ValueError("method='talbot' supports x='origin' or explicit points only")
            n_nodes = _fresh_node_count(stds.size, n_nodes)
            lam, weights = _fresh_nodes(dims, a**2 * stds**2 / delta, n_nodes)
            batch = ()
    else:
        pts = check_finite_array("x", x, last_dim=model.d)
        batch = pts.shape[:-1]
        coords = pts.reshape(-1, model.d) @ model.basis
        sq = np.stack([np.sum(coords[:, group == g] ** 2, axis=1) for g in range(stds.size)], -1)
        lam = sq / (a**2 * stds**2)
    if method == "talbot":
        res = [talbot(b, dims, row, stds, n_train, n_tangent) for row in lam]
        sw2, wsq, msq = (np.concatenate([r[i] for r in res]) for i in range(3))
    else:
        sw2, wsq, msq = bromwich(b, dims, lam, stds, n_train, n_tangent)
    if weights is not None:
        sw2, wsq, msq = weights @ sw2, weights @ wsq, weights @ msq
    else:
        sw2 = sw2.reshape(batch)
        wsq = wsq.reshape(batch + (n_tangent,))
        msq = msq.reshape(batch + (n_tangent,))
    return FiniteNExpectations(sum_w2=np.asarray(sw2), weighted_sq_norm=np.asarray(wsq),
                               mean_sq_norm=np.asarray(msq),
                               dims=np.asarray(model.dims, float),
                               stds=np.asarray(model.stds, float), a=a, delta=delta,
                               n_train=n_train)


"""FLIPD of the population score of a Gaussian linear manifold (docs/theory.md, "FLIPD") [std].

``FLIPD(x, t) = d + Delta (tr grad s + |s|^2)`` at ``x_t = a x`` (Kamkari et al. 2024).  For the
un-normalised `LinearManifold` (covariance ``U diag(v) U^T``) the population score is linear,
``s(z) = -(Delta I + a^2 Sigma)^{-1} z``, so with ``u_i = a^2 v_i / Delta`` (per direction) and the
model coordinates ``c_i`` of the clean point x:

    FLIPD(x)            = sum_i [ u_i / (1 + u_i) + (a^2 c_i^2 / Delta) / (1 + u_i)^2 ],
    E_x FLIPD  (x ~ data) = sum_i u_i (2 + u_i) / (1 + u_i)^2        (from m at t -> 0 to 0),
    Var_x FLIPD          = sum_i 2 u_i^2 / (1 + u_i)^4                (c_i^2 ~ v_i chi^2_1).

Empirical score at a training point ``x = y_1`` (docs): ``FLIPD = 2 sum_{mu >= 2} w_mu E_mu``,
``w_mu = e^{-E_mu} / (1 + sum_{nu >= 2} e^{-E_nu}) <= e^{-E_mu} / (1 + e^{-E_mu})``, so

    E FLIPD(train) <= 2 (N - 1) E[E / (1 + e^E)] = 2 (N - 1) sum_{k >= 1} (-1)^{k-1} Lambda'(-k),
    Lambda'(-k) = E[E e^{-kE}] = prod_i (1 + 2 k u_i)^{-1/2} sum_i u_i / (1 + 2 k u_i),

``E = sum_i u_i z_i^2`` the energy of a second training point (``y_1 - y_2 ~ N(0, 2 Sigma)``).
Equality at N = 2; for N > 2 it is the pair (one-neighbour) term, exact to leading order as
t -> 0 (two neighbours within O(1) energy cost a further factor ``~ N (Delta/a^2)^{m/2}``).
The alternating series is a moment sequence of the positive measure ``E dP`` in ``e^{-E}``, summed
by the Cohen-Villegas-Zagier acceleration (error ``~ 5.8^{-n}``).  FLIPD -> 0 like
``N (Delta/a^2)^{m/2}``: memorization read as dimension.

Exact at training points for every N (``training_point_flipd(method="exact")``): given
``x = y_1`` the other N - 1 points are i.i.d., and ``1/(1 + Z) = int e^r e^{-e^r (1 + Z)} dr``
turns the self weight into an extra factor ``e^{-e^r}`` in the r integral of the finite-N
theory; the single-point function is weighted by ``|P_g (y - x)|^2`` (tilted mean
``-2 z b x / q``, so ``|P_g x|^2`` enters over ``q^2``), which avoids the cancellation of
expanding ``|x - y|^2`` when the neighbours are close.  y_1 ~ data by the chi-square rule.

Finite N at fresh clean points (exact; ``finite_n_flipd``): with ``FLIPD = (a^2/Delta) sum_mu
w_mu |x - y_mu|^2`` and the exact finite-N expectations over training sets (theory/finite_n.py),

    E FLIPD(x) = (a^2/Delta) sum_g ( E[sum w |P_g y|^2] - 2 |P_g x| E[xhat_g . P_g ybar]
                                     + |P_g x|^2 )  + (a^2/Delta) |P_0 x|^2,

g over the energy groups (tangent subspaces, and the normal space when residual_std > 0),
P_0 the zero-std normal directions; ``E[xhat_g . P_g ybar] = N int A_G[xhat_g . P_g y] phi^{N-1}
dr`` is the linear companion of the ``E[|P_g ybar|^2]`` integral (same single-point function).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._checks import check_choice, check_finite_array, check_int
from ._finite_n_bromwich import bromwich_with_mean_projection
from ._quadrature import chi2_product_rule
from .finite_n import _check_model, _fresh_node_count
from .manifold import LinearManifold, check_gaussian_manifold
from .schedules import Schedule, get_schedule

#: chi-square nodes per group for the training point y_1 (within a product budget): 6 leave
#: 1e-5 relative at N = 2 (against the closed pair form), 12 leave 2e-11 (VP, VE, t = 1e-5-1)
_TRAINING_NODES = 12
_TRAINING_BUDGET = 144
#: terms of the Cohen-Villegas-Zagier sum: error ~ 5.8^{-40} ~ 1e-30, far below float64
_CVZ_TERMS = 40

__all__ = ["expected_population_flipd", "finite_n_flipd", "population_flipd",
           "population_flipd_std", "training_point_flipd"]


def _snr_per_direction(model: Any, t: Any, schedule: Schedule | str,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``u = a^2 v / Delta`` with shape t.shape + (d,), plus a(t) and Delta(t) (t.shape)."""
    check_gaussian_manifold(model, "the population score is linear only for Gaussian data")
    schedule = get_schedule(schedule)
    t = schedule.check_time(t)
    a = np.asarray(schedule.a(t), float)
    delta = np.asarray(schedule.delta(t), float)
    u = (a**2 / delta)[..., None] * model.direction_variances
    return u, a, delta


def expected_population_flipd(model: LinearManifold, t: Any, schedule: Schedule | str
                              ) -> np.ndarray:
    """``E_x FLIPD`` of the population score over clean data points x, shape t.shape.

    model: un-normalised LinearManifold; t: times (any shape) in the schedule's domain.
    Dimensionless; tends to m (plus d - m when residual_std > 0) as t -> 0 and to 0 as the
    SNR ``a^2/Delta`` -> 0.
    """
    u, _, _ = _snr_per_direction(model, t, schedule)
    return np.sum(u * (2.0 + u) / (1.0 + u) ** 2, axis=-1)


def population_flipd_std(model: LinearManifold, t: Any, schedule: Schedule | str) -> np.ndarray:
    """Standard deviation of the population FLIPD over clean data points, shape t.shape."""
    u, _, _ = _snr_per_direction(model, t, schedule)
    return np.sqrt(np.sum(2.0 * u**2 / (1.0 + u) ** 4, axis=-1))


def population_flipd(model: LinearManifold, X: Any, t: float, schedule: Schedule | str
                     ) -> np.ndarray:
    """FLIPD of the population score at clean points X (..., d), one time t; shape X.shape[:-1].

    Points off the manifold get the normal term ``a^2 c^2 / Delta``, which grows as t -> 0.
    """
    u, a, delta = _snr_per_direction(model, t, schedule)
    if u.ndim != 1:
        raise ValueError(f"t must be a scalar time, got shape {np.shape(t)}")
    pts = check_finite_array("X", X, last_dim=model.d)
    c = pts @ model.basis                                  # model coordinates
    return np.sum(u / (1.0 + u) + (a**2 / delta) * c**2 / (1.0 + u) ** 2, axis=-1)


def _cvz_alternating(moments: np.ndarray) -> np.ndarray:
    """``sum_k (-1)^k a_k`` for moment sequences ``a_k = int x^k dmu`` (mu >= 0 on [0, 1]),
    given as (..., n) arrays: Cohen, Villegas & Zagier (2000), Algorithm 1."""
    n = moments.shape[-1]
    dd = (3.0 + math.sqrt(8.0)) ** n
    dd = 0.5 * (dd + 1.0 / dd)
    b, c = -1.0, -dd
    total = np.zeros(moments.shape[:-1])
    for k in range(n):
        c = b - c
        total = total + c * moments[..., k]
        b = (k + n) * (k - n) * b / ((k + 0.5) * (k + 1.0))
    return total / dd


def training_point_flipd(model: LinearManifold, t: Any, n_train: int,
                         schedule: Schedule | str, *, method: str = "exact",
                         n_nodes: int | None = None) -> np.ndarray:
    """E FLIPD of the empirical score at its own training points; shape t.shape, dimensionless.

    method "exact": the exact finite-N expectation over training sets (module docstring), one
    r integral per training-point quadrature node (``n_nodes`` per energy group, default 12
    within a product budget of 144); about 3 s per time and group node row (one group),
    30 s with two groups.
    method "pair": the pair term ``2 (N-1) E[E / (1 + e^E)]``, closed form and vectorised:
    exact for N = 2, an upper bound for every N, and the exact small-t asymptote (relative
    error ~ N (Delta/a^2)^{m/2}).
    """
    check_choice("method", method, ("exact", "pair"))
    n_train = check_int("n_train", n_train, minimum=1)
    u, _, _ = _snr_per_direction(model, t, schedule)
    if method == "pair":
        k = np.arange(1, _CVZ_TERMS + 1, dtype=float)
        uk = u[..., None, :] * k[:, None]                               # (..., n, d)
        log_lambda = -0.5 * np.sum(np.log1p(2.0 * uk), axis=-1)
        moments = np.exp(log_lambda) * np.sum(u[..., None, :] / (1.0 + 2.0 * uk), axis=-1)
        return 2.0 * (n_train - 1) * _cvz_alternating(moments)
    model = _check_model(model)
    schedule = get_schedule(schedule)
    times = np.asarray(t, dtype=float)
    flat = [_exact_training_point_flipd(model, float(ti), n_train, schedule, n_nodes)
            for ti in times.reshape(-1)]
    return np.asarray(flat).reshape(times.shape)


def _exact_training_point_flipd(model: LinearManifold, t: float, n_train: int,
                                schedule: Schedule, n_nodes: int | None) -> float:
    """``(a^2/Delta) E[sum_{mu >= 2} w_mu |y_1 - y_mu|^2]``, w normalised by ``1 + Z`` (the
    query's own weight is e^0 = 1): the r integral with the self weight, centred on the query
    (`bromwich_with_mean_projection(..., self_weight=True)`), averaged over y_1 ~ data."""
    if n_train == 1:                       # the query is the only point: s = 0 there
        return 0.0
    a, delta = float(schedule.a(t)), float(schedule.delta(t))
    stds, dims, _ = model.energy_groups()
    if n_nodes is None:        # the y_1 average is smooth but needs more nodes than fresh x
        n_nodes = min(_TRAINING_NODES, int(math.floor(_TRAINING_BUDGET ** (1 / stds.size)
                                                      + 1e-9)))
    lam, weights = chi2_product_rule(dims, _fresh_node_count(stds.size, n_nodes))
    b = a**2 * stds**2 / (2.0 * delta)
    out = bromwich_with_mean_projection(b, dims, lam, stds, n_train - 1, stds.size,
                                        self_weight=True)
    return float((a**2 / delta) * (weights @ np.sum(out[1], axis=-1)))


def finite_n_flipd(model: LinearManifold, t: float, n_train: int, schedule: Schedule | str,
                   x: Any = "fresh", *, n_nodes: int | None = None) -> np.ndarray:
    """Exact E FLIPD of the empirical score over training sets of size N (module docstring).

    model: un-normalised LinearManifold; t: one time; n_train: N >= 1.
    x: "fresh" (also averaged over clean data points x, generalized Gauss-Laguerre over the
       per-group chi-square norms, ``n_nodes`` per group, default as `finite_n_expectations`)
       or an array (..., d) of clean points (expectation over training sets only).
    Returns E FLIPD, shape () for "fresh", else x.shape[:-1]; dimensionless.  At training
    points use `training_point_flipd` (the query is then one of the y_mu).
    """
    model = _check_model(model)
    schedule = get_schedule(schedule)
    t_arr = schedule.check_scalar_time(t)
    n_train = check_int("n_train", n_train, minimum=1)
    a, delta = float(schedule.a(t_arr)), float(schedule.delta(t_arr))
    stds, dims, group = model.energy_groups()
    weights = None
    if isinstance(x, str):
        if x != "fresh":
            raise ValueError(f"x must be 'fresh' or an array (..., d) of clean points, got {x!r}")
        n_nodes = _fresh_node_count(stds.size, n_nodes)
        lam, weights = chi2_product_rule(dims, n_nodes)       # |P_g x|^2 / s_g^2 ~ chi^2_{m_g}
        zero_sq = np.zeros(lam.shape[0])
        batch: tuple = ()
    else:
        pts = check_finite_array("x", x, last_dim=model.d)
        batch = pts.shape[:-1]
        coords = pts.reshape(-1, model.d) @ model.basis
        sq = np.stack([np.sum(coords[:, group == g] ** 2, axis=1) for g in range(stds.size)], -1)
        lam = sq / stds**2
        zero_sq = np.sum(coords[:, group < 0] ** 2, axis=1)
    b = a**2 * stds**2 / (2.0 * delta)
    _, wsq, _, lin = bromwich_with_mean_projection(b, dims, lam, stds, n_train, stds.size)
    norm = stds * np.sqrt(lam)                                 # |P_g x|, (P, G)
    flipd = (a**2 / delta) * (np.sum(wsq - 2.0 * norm * lin + norm**2, axis=-1) + zero_sq)
    if weights is not None:
        return np.asarray(weights @ flipd)
    return flipd.reshape(batch)

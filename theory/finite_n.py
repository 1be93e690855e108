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
Monte Carlo): ~1e-9 or better for N >= ~10 and in generalization; down to ~1e-4 for N <= 2
with a one-dimensional subspace at small t, where the far upper energy tail carries weight
and the line integrals' oscillation limits the tau rule.

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

import mpmath
import numpy as np
from scipy import special

from ._checks import check_choice, check_finite_array, check_int
from ._line_kernels import line_integrals
from ._quadrature import chi2_product_rule
from .manifold import LinearManifold
from .schedules import Schedule, get_schedule

__all__ = ["FiniteNExpectations", "finite_n_expectations", "single_point_functions"]

#: base grid spacing in ell (~ln of the lower tail probability) on the lower contour (the
#: grid is then refined, see _REFINE_RTOL)
_ELL_STEP_H = 0.2
#: on the upper contour ell ~ ln phi and the integrand carries phi^{N-1} ~ e^{(N-1) ell}: the
#: step is min(_ELL_STEP_PHI, _PHI_STEP_N / N), i.e. at least 5 nodes per e-fold
_ELL_STEP_PHI = 0.1
_PHI_STEP_N = 0.2
#: moment series (generalization side of the r integral): _SERIES_TERMS terms; a node is
#: trusted while the series loses less than _SERIES_MAX_CANCEL to cancellation and its last
#: term is below _SERIES_TAIL_RTOL of the sum of magnitudes; nodes on a uniform r grid of step
#: _SERIES_STEP (entire, double-exponentially cut-off integrand: trapezoid error
#: ~ e^{-pi^2/step}) up to -ln M_1 + _SERIES_HEADROOM (s u ~ e^2 for typical u); the erfc
#: hand-over window to the contour has width _SERIES_WIDTH
_SERIES_TERMS = 60
_SERIES_MAX_CANCEL = 1e5
_SERIES_TAIL_RTOL = 1e-17
_SERIES_STEP = 0.2
_SERIES_HEADROOM = 2.0
_SERIES_LOG_CAP = 600.0
_SERIES_WIDTH = 0.3
#: phi^{N-1} below e^{-_DEAD_LOG} (times quantities <= N^2) contributes nothing in float64
_DEAD_LOG = 50.0
#: the r integral starts where N * P(E < r) < e^{-42} (contributions below float64 precision)
_ELL_BELOW = 42.0
#: contour grids are at most _R_STEP apart in r across the series hand-over window and at
#: most _R_STEP max(1, sd E) elsewhere (see _GridSpec)
_R_STEP = 0.2
#: trapezoid refinement of a contour grid: halve the spacing until the sum moves by less than
#: _REFINE_RTOL (relative), at most _MAX_REFINE times
_REFINE_RTOL = 1e-8
_MAX_REFINE = 4
#: nodes added per extension of a contour grid; hard limits on the blocks and on |r|
_ELL_BLOCK = 40
_MAX_BLOCKS = 5000
_R_LIMIT = 1e12
#: the two contours (left/right of the pole at 0) are blended by erfc windows centred at the
#: mean energy with width _WINDOW_WIDTH * max(1, sd(E)); each is evaluated only within
#: _WINDOW_REACH widths of the centre on its far side (window < 1e-17 beyond), where its line
#: integral is still well resolved
_WINDOW_WIDTH = 0.4
_WINDOW_REACH = 5.0
#: an ell grid extension stops when the last nodes contribute below this relative amount
_TAIL_RTOL = 1e-15
#: trapezoid step in tau (w = sigma sinh tau): the geometric node spacing at large |w| must
#: resolve the residual oscillation ~e^{-i w (r - ln w)} of the integrand; measured on the
#: N = 2 references: 0.015 -> up to 2e-3, 0.01 -> 1e-4, 0.0075 -> 4e-5 (worst case: d = 1,
#: small t, far upper tail), ~1e-10 elsewhere
_TAU_STEP = 0.01
#: for N <= _SMALL_N_TAU the far upper tail carries weight (phi^{N-1} barely damps it): step
#: _TAU_STEP_SMALL_N there, measured 5e-6 on the N = 2, d = 1, VE t = 0.02 reference (1.5x
#: the cost of _TAU_STEP)
_TAU_STEP_SMALL_N = 0.005
_SMALL_N_TAU = 4
#: |w| beyond which |Gamma(c + i w)| e^{...} < e^{-45}: the line integral is truncated there
_OMEGA_MAX = 30.0
#: iteration cap of the vectorised safeguarded Newton solves
_MAX_NEWTON = 200
#: default Gauss-Laguerre nodes per group for fresh test points (relative accuracy ~5e-4),
#: the total budget and the fewest nodes per group accepted under that budget
_DEFAULT_NODES = 6
_NODE_BUDGET = 216
_MIN_NODES = 4


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
        n_train: N.
    """

    sum_w2: np.ndarray
    weighted_sq_norm: np.ndarray
    mean_sq_norm: np.ndarray
    dims: np.ndarray
    stds: np.ndarray
    a: float
    delta: float
    n_train: int

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
def _groups(model: LinearManifold) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stds (G,), dims (G,) of the energy groups and the group of each direction (d,).

    Groups: the K tangent subspaces, then the normal space when residual_std > 0 (and d > m).
    Directions of zero std get group -1 (constant energy, drops out of the weights).
    """
    stds = list(model.stds)
    dims = list(model.dims)
    group = np.asarray(model.direction_subspace).copy()
    if model.residual_std > 0 and model.d > model.m:
        stds.append(model.residual_std)
        dims.append(model.d - model.m)
        group[group < 0] = model.n_subspaces
    return np.asarray(stds, float), np.asarray(dims, float), group


def _check_model(model: Any) -> LinearManifold:
    if not isinstance(model, LinearManifold):
        raise ValueError(f"model must be a LinearManifold, got {type(model).__name__}")
    if model.normalized:
        raise ValueError("model must be un-normalized (normalized=False): the exact finite-N "
                         "theory needs Gaussian training points")
    return model


# ----------------------------------------------------------------------------- saddle terms
def _saddle(xi, side, b, m, lam):
    """Contour abscissa c and ``K(c) = ln|Gamma(c)| + ln Lambda(c)`` with K', K'' at xi.

    side "H": ``c = -expit(-xi)`` in (-1, 0), kernel ``-Gamma(z)`` (gives Q = 1 - phi);
    side "phi": ``c = expit(xi) / (2 b_max)`` in (0, 1/(2 b_max)), kernel ``Gamma(z)`` (gives phi).
    ``c + 1`` and ``q_g = 1 - 2 c b_g`` are formed without cancellation (poles of Gamma at
    0, -1 and the branch point of Lambda at 1/(2 b_max) are approached to full precision).
    Shapes: xi (...), lam (..., G) -> c (...), q (..., G), K, K', K'' (...).
    """
    if side == "H":
        c = -special.expit(-xi)
        cp1 = special.expit(xi)
        log_abs_gamma = special.gammaln(cp1) - np.log(-c)  # Gamma(c) = Gamma(c+1)/c
        q = 1.0 + 2.0 * (-c)[..., None] * b
    else:
        e = special.expit(xi)
        c = e / (2.0 * b.max())
        cp1 = 1.0 + c
        log_abs_gamma = special.gammaln(c)
        q = special.expit(-xi)[..., None] + e[..., None] * (1.0 - b / b.max())
    psi = special.digamma(cp1) - 1.0 / c
    trigamma = special.polygamma(1, cp1) + 1.0 / c**2
    k0 = np.sum(-0.5 * m * np.log(q) + c[..., None] * b * lam / q, axis=-1)
    k1 = np.sum(m * b / q + b * lam / q**2, axis=-1)
    k2 = np.sum(2.0 * m * b**2 / q**2 + 4.0 * b**2 * lam / q**3, axis=-1)
    return c, q, log_abs_gamma + k0, psi + k1, trigamma + k2


_BRACKETS = {"H": (-14.0, 46.0), "phi": (-46.0, 40.0)}


class _GridSpec:
    """Contour grid variable ``v = sign ell / h_ell + R(r) / h_r + r / (h_r r_scale)`` (unit
    node spacing).

    Nodes are at most h_ell apart in ell (~ ln of a tail probability: the natural scale of
    the tails) and at most ``h_r r_scale`` apart in r (r_scale = max(1, sd E): the scale on
    which the integrand and the window at the mean vary where ell stalls near the pole); in
    the zones where a narrower erfc window changes (the series hand-over) at most h_r apart,
    through ``R' = B``, a smooth indicator of the zones. zones: (start, end, softness).
    """

    def __init__(self, side, h_ell, h_r, zones, r_scale):
        self.sign = _side_sign(side)
        self.h_ell, self.h_r = h_ell, h_r
        self.zones = [tuple(map(float, z)) for z in zones]
        self.h_global = h_r * r_scale

    def _ramp(self, r):
        """R(r) = int_{-inf}^r B and B(r) for the zones."""
        big_r, box = np.zeros_like(r), np.zeros_like(r)
        for lo, hi, soft in self.zones:
            xa, xb = (r - lo) / soft, (r - hi) / soft
            box += 0.5 * (special.erf(xa) - special.erf(xb))
            big_r += 0.5 * soft * (_erf_antiderivative(xa) - _erf_antiderivative(xb)) + 0.5 * (
                hi - lo)
        return big_r, box

    def coordinate(self, ell, r):
        return (self.sign * ell / self.h_ell + self._ramp(r)[0] / self.h_r
                + r / self.h_global)

    def density(self, c, r):
        """dv/dr = |c| / h_ell + B(r) / h_r + 1 / h_global (d ell/dr = -c on a contour)."""
        return np.abs(c) / self.h_ell + self._ramp(r)[1] / self.h_r + 1.0 / self.h_global


def _erf_antiderivative(x):
    """``x erf(x) + exp(-x^2)/sqrt(pi)`` (d/dx = erf(x))."""
    return x * special.erf(x) + np.exp(-x * x) / math.sqrt(math.pi)


def _side_sign(side):
    """+1 where ell = K - c K' increases along the contour's r axis (side H), -1 for side phi."""
    return 1.0 if side == "H" else -1.0


def _solve_xi(side, b, m, lam, *, ell=None, r=None, v=None, steps=None):
    """xi of the saddle point at which ``ell(c) = K - c K'`` equals ``ell``, or ``K'(c) = r``,
    or the grid variable of ``steps`` (a :class:`_GridSpec`) equals ``v``.

    All three targets increase with xi along a contour (dell/dc = -c K'', dr/dc = K''), so a
    vectorised safeguarded Newton iteration with a bisection fallback converges.
    """
    target = next(val for val in (ell, r, v) if val is not None)
    sign = _side_sign(side)
    lo = np.full(np.shape(target), _BRACKETS[side][0])
    hi = np.full(np.shape(target), _BRACKETS[side][1])
    xi = 0.5 * (lo + hi)
    for _ in range(_MAX_NEWTON):
        c, _, k, k1, k2 = _saddle(xi, side, b, m, lam)
        dc = -c * (1.0 + c) if side == "H" else c * (1.0 - 2.0 * c * b.max())
        if ell is not None:
            g = sign * (k - c * k1 - target)
            slope = np.abs(c) * k2 * dc
        elif r is not None:
            g = k1 - target
            slope = k2 * dc
        else:
            g = steps.coordinate(k - c * k1, k1) - target
            slope = k2 * dc * steps.density(c, k1)
        lo = np.where(g < 0, xi, lo)
        hi = np.where(g >= 0, xi, hi)
        new = xi - g / slope
        bad = ~np.isfinite(new) | (new <= lo) | (new >= hi)
        new = np.where(bad, 0.5 * (lo + hi), new)
        done = np.abs(new - xi) < 1e-12 * (1.0 + np.abs(xi))
        xi = new
        if np.all(done | (hi - lo < 1e-12)):
            break
    return xi


# ----------------------------------------------------------------------------- line integrals
def _tau_step(n: float) -> float:
    """Trapezoid step in tau for training-set size n (finer where the far tail matters)."""
    return _TAU_STEP_SMALL_N if n <= _SMALL_N_TAU else _TAU_STEP


def _line_integrals(side, c, q_real, r, k2, b, m, lam, s, n_tangent, tau_step=_TAU_STEP):
    """Single-point functions at (c, r) by the numba kernel (see :func:`_line_integrals_numpy`
    for the definition and shapes; each node gets its own tau grid there)."""
    f64 = np.ascontiguousarray
    out = line_integrals(-1.0 if side == "H" else 1.0, f64(c, float), f64(q_real, float),
                         f64(r, float), f64(k2, float), f64(b, float), f64(m, float),
                         f64(lam, float), f64(s, float), int(n_tangent), tau_step, _OMEGA_MAX)
    return out[0], dict(zip(("main", "AG2", "AGq", "AG2q", "AGl"), out[1:], strict=True))


def _line_integrals_numpy(side, c, q_real, r, k2, b, m, lam, s, n_tangent,
                          tau_step=_TAU_STEP):
    """Single-point functions at (c, r), shapes (P, J); b, m, s (G,), lam (P, G).

    Returns ``log_scale`` (P, J) and, in units of ``e^{log_scale}``: "main" (Q = A_H[1] on side
    H, phi on side phi), "AG2" = A_G2[1], and (P, J, K) "AGq" = A_G[|P_k y|^2],
    "AG2q" = A_G2[|P_k y|^2], "AGl" = A_G[xhat_k . P_k y].
    """
    sigma = 1.0 / np.sqrt(k2)
    tau_max = np.arcsinh(_OMEGA_MAX / sigma)
    n_tau = int(math.ceil(float(np.max(tau_max)) / tau_step)) + 1
    frac = np.linspace(0.0, 1.0, n_tau)
    h = tau_max / (n_tau - 1)
    tau = tau_max[..., None] * frac  # (P, J, T)
    weights = h[..., None] * sigma[..., None] * np.cosh(tau) / np.pi
    weights[..., 0] *= 0.5
    omega = sigma[..., None] * np.sinh(tau)
    z = c[..., None] + 1j * omega  # (P, J, T)
    lam_b = lam[:, None, None, :]
    q = q_real[:, :, None, :] - 2j * omega[..., None] * b  # 1 - 2 z b, (P, J, T, G)
    log_lambda = np.sum(-0.5 * m * np.log(q) + z[..., None] * b * lam_b / q, axis=-1)
    log_lambda_c = np.sum(-0.5 * m * np.log(q_real) + c[..., None] * b * lam[:, None, :]
                          / q_real, axis=-1)
    log_abs_gamma = np.real(special.loggamma(c + 0j))
    log_scale = log_abs_gamma - c * r + log_lambda_c  # |Gamma(c)| e^{-cr} Lambda(c)
    f = np.exp(special.loggamma(z) - z * r[..., None] + log_lambda - log_scale[..., None])
    f *= weights
    zf = z * f
    z2f = (1.0 + z) * zf
    qk = q[..., :n_tangent]
    bk, mk, sk = b[:n_tangent], m[:n_tangent], s[:n_tangent]
    lamk = lam_b[..., :n_tangent]
    rho_sq = sk**2 * (mk / qk + 4.0 * (z[..., None] * bk) ** 2 * lamk / qk**2)
    rho_lin = -2.0 * z[..., None] * bk * sk * np.sqrt(lamk) / qk
    sign = -1.0 if side == "H" else 1.0
    out = {
        "main": sign * np.sum(f.real, axis=-1),
        "AG2": np.sum(z2f.real, axis=-1),
        "AGq": np.sum((zf[..., None] * rho_sq).real, axis=-2),
        "AG2q": np.sum((z2f[..., None] * rho_sq).real, axis=-2),
        "AGl": np.sum((zf[..., None] * rho_lin).real, axis=-2),
    }
    return log_scale, out


def single_point_functions(b: Any, m: Any, lam: Any, s: Any, r: Any, side: str = "H"
                           ) -> dict[str, np.ndarray]:
    """Single-point functions ``A_K[h](r) = E[h(y) K(E - r)]`` by the Bromwich route.

    b (G,): ``a^2 s_g^2 / (2 Delta)``; m (G,): group dimensions; lam (G,): non-centralities
    ``|P_g x|^2 / (a^2 s_g^2)``; s (G,): group stds; r (J,): log of the Laplace variable;
    side: contour left ("H", c in (-1, 0)) or right ("phi", c in (0, 1/(2 b_max))) of the pole
    at 0. Returns "Q" = 1 - phi, "phi" = E[exp(-e^r u)], "AG2" = e^{2r} E[u^2 e^{-e^r u}] (J,) and
    per group "AGq", "AG2q" (|P_g y|^2-weighted), "AGl" (xhat_g . P_g y-weighted) (J, G).
    Exposed for tests (the two contours must agree) and the Talbot comparison.
    """
    check_choice("side", side, ("H", "phi"))
    b, m, lam, s = (np.atleast_1d(np.asarray(v, float)) for v in (b, m, lam, s))
    r = np.atleast_1d(np.asarray(r, float))
    lam_row = np.broadcast_to(lam, r.shape + lam.shape)
    xi = _solve_xi(side, b, m, lam_row, r=r)
    c, q, _, _, k2 = _saddle(xi, side, b, m, lam_row)
    log_scale, out = _line_integrals(side, c[None], q[None], r[None], k2[None], b, m,
                                     lam[None, :], s, b.size)
    scale = np.exp(log_scale[0])
    res = {key: val[0] * (scale if val.ndim == 2 else scale[:, None])
           for key, val in out.items()}
    main = res.pop("main")
    res["Q"], res["phi"] = (main, 1.0 - main) if side == "H" else (1.0 - main, main)
    return res


# ----------------------------------------------------------------------------- r integral
def _weighted_sums(n, n_tangent, dr, log_phi, ag2, ag_q, ag2_q, ag_l):
    """Integrand of the r integral times the node weight ``dr`` (P, J, 1 + 2K):
    [N AG2 phi^{N-1}, N AGq phi^{N-1} (K), N AG2q phi^{N-1} + N(N-1) AGl^2 phi^{N-2} (K)]."""
    base = n * dr
    pw1 = np.exp((n - 1.0) * log_phi)
    pw2 = np.exp(max(n - 2.0, 0.0) * log_phi)
    terms = np.empty(log_phi.shape + (1 + 2 * n_tangent,))
    terms[..., 0] = base * ag2 * pw1
    terms[..., 1:1 + n_tangent] = (base * pw1)[..., None] * ag_q
    terms[..., 1 + n_tangent:] = ((base * pw1)[..., None] * ag2_q
                                  + ((n - 1.0) * base * pw2)[..., None] * ag_l**2)
    return terms


def _log_first_moment(b, m, lam):
    """``ln M_1 = ln E[e^{-E}]`` (P,) for parameter points lam (P, G)."""
    q = 1.0 + 2.0 * b
    return np.sum(-0.5 * m * np.log(q) - b * lam / q, axis=-1)


def _series_terms(b, m, lam, s, n, n_tangent, r, step):
    """Integrand at nodes r (P, J) from the moment series (exact where it converges; no contour).

    With ``s = e^r`` and ``u = e^{-E}``: ``phi = sum_k (-s)^k M_k / k!``,
    ``A_G[h] = sum_j (-1)^j s^{j+1} M_{j+1}[h] / j!``, ``A_G2[h] = sum_j (-1)^j s^{j+2}
    M_{j+2}[h] / j!`` with the closed-form moments ``M_k[h] = E[h e^{-k E}] = Lambda_h(-k)``.
    The series are entire in s but lose ``E[e^{su}] / E[e^{-su}]`` to cancellation, so each
    node also reports whether it is trustworthy: cancellation below _SERIES_MAX_CANCEL and the
    last of the _SERIES_TERMS terms negligible. Returns ``ln phi`` (P, J), the terms
    (P, J, 1 + 2K) and ``valid`` (P, J).
    """
    k = np.arange(1, _SERIES_TERMS + 3, dtype=float)  # moment orders 1 .. K + 2
    q = 1.0 + 2.0 * k[:, None] * b  # (k, G): 1 - 2 z b at z = -k
    lam_ = lam[:, None, :]  # (P, 1, G)
    log_moment = np.sum(-0.5 * m * np.log(q) - k[:, None] * b * lam_ / q, axis=-1)  # (P, k)
    bk, mk, sk, qk = b[:n_tangent], m[:n_tangent], s[:n_tangent], q[:, :n_tangent]
    lamk = lam_[..., :n_tangent]
    rho_sq = sk**2 * (mk / qk + 4.0 * (k[:, None] * bk) ** 2 * lamk / qk**2)  # (P, k, K)
    rho_lin = 2.0 * k[:, None] * bk * sk * np.sqrt(lamk) / qk
    log_fact = special.gammaln(k)  # ln (k-1)!
    sign = (-1.0) ** (k - 1.0)
    # term_k = s^k M_k / (k-1)! carries every series below; its orders shift by 1 or 2
    log_term = k * r[..., None] + log_moment[:, None, :] - log_fact  # (P, J, k)
    # beyond e^600 a node is untrustworthy anyway (flagged below); keep the arithmetic finite
    term = np.exp(np.minimum(log_term, _SERIES_LOG_CAP))
    q_tail = np.sum(sign * term / k, axis=-1)  # Q = 1 - phi = sum (-1)^{k+1} s^k M_k / k!
    with np.errstate(invalid="ignore", divide="ignore"):
        log_phi = np.log1p(-np.minimum(q_tail, 1.0))
    t1 = sign[:-1] * term[..., :-1]  # j = k - 1 >= 0: s^{j+1} M_{j+1} / j!
    # s^{j+2} M_{j+2} / j! = term_{j+2} (j+1), signs (-1)^j
    t2 = sign[:-2] * term[..., 1:-1] * k[:-2]
    ag2 = np.sum(t2, axis=-1)
    ag_q = np.einsum("pjk,pkg->pjg", t1, rho_sq[:, :-1])
    ag_l = np.einsum("pjk,pkg->pjg", t1, rho_lin[:, :-1])
    ag2_q = np.einsum("pjk,pkg->pjg", t2, rho_sq[:, 1:-1])
    # trust: |sum| not far below sum |terms| (for Q and A_G2), and the series has converged
    total_abs = np.sum(term / k, axis=-1)
    cancel = np.maximum(total_abs / np.abs(q_tail), np.sum(np.abs(t2), -1) / np.abs(ag2))
    converged = term[..., -1] <= _SERIES_TAIL_RTOL * np.sum(term, axis=-1)
    with np.errstate(invalid="ignore"):
        valid = (cancel < _SERIES_MAX_CANCEL) & converged & (q_tail < 1.0)
    with np.errstate(over="ignore", invalid="ignore"):  # untrusted nodes are masked later
        terms = _weighted_sums(n, n_tangent, step, log_phi, ag2, ag_q, ag2_q, ag_l)
    return log_phi, terms, valid


def _contour_terms(side, b, m, lam, s, n, n_tangent, v, steps):
    """Integrand at contour nodes of unit spacing in the grid variable v of ``steps`` (P, J);
    the trapezoid weight is ``dr = 1 / (dv/dr)``.
    Returns r (P, J), ``ln phi(r)`` (P, J) and the terms (P, J, 1 + 2K).
    """
    lam3 = lam[:, None, :]
    xi = _solve_xi(side, b, m, lam3, v=v, steps=steps)
    c, q, _, r, k2 = _saddle(xi, side, b, m, lam3)
    dr = 1.0 / steps.density(c, r)
    log_scale, fn = _line_integrals(side, c, q, r, k2, b, m, lam, s, n_tangent, _tau_step(n))
    scale = np.exp(log_scale)
    main = fn["main"] * scale
    phi = 1.0 - main if side == "H" else main
    log_phi = np.log(np.clip(phi, 1e-300, 1.0))
    sc = scale[..., None]
    terms = _weighted_sums(n, n_tangent, dr, log_phi, fn["AG2"] * scale, fn["AGq"] * sc,
                           fn["AG2q"] * sc, fn["AGl"] * sc)
    return r, log_phi, terms


def _grid_start(side, b, m, lam, steps, r=None, ell=None):
    """Grid variable v (and r) at the saddle given by r or ell, for one point lam (1, G)."""
    xi = _solve_xi(side, b, m, lam, r=None if r is None else np.array([r]),
                   ell=None if ell is None else np.array([ell]))
    c, _, k0, k1, _ = _saddle(xi, side, b, m, lam)
    ell_val = k0 - c * k1
    return float(steps.coordinate(ell_val, k1)[0]), float(ell_val[0])


def _series_window(r, split):
    """Share of the moment series in the partition of unity over r (1 below, 0 above)."""
    return 0.5 * special.erfc((r - split) / _SERIES_WIDTH)


def _death_position(n, r, log_phi):
    """First node r (P,) at which ``phi^{N-1} < e^{-_DEAD_LOG}`` (inf if none): phi decreases
    in r, so nothing beyond contributes."""
    alive = _alive(n, log_phi)
    first = r[np.arange(r.shape[0]), alive.argmin(axis=1)]
    return np.where(alive.all(axis=1), np.inf, first)


def _bromwich(b, m, lam, s, n_train, n_tangent):
    """Expectations for P parameter points: b, m, s (G,), lam (P, G) -> (P,), (P,K), (P,K).

    The r integral is split by a partition of unity into (i) the moment series where it is
    trustworthy (the lower r range), (ii) the contour left of the pole (side H) above, and
    (iii) where ``phi^{N-1}`` is still alive near the mean energy (small N), the contour right
    of the
    pole (side phi) above the mean, blended with (ii) by erfc windows of width
    ``_WINDOW_WIDTH max(1, sd E)``. Each part is evaluated only where its share exceeds ~1e-12.
    """
    n = float(n_train)
    P = lam.shape[0]
    width_f = 1 + 2 * n_tangent
    mean_e = np.sum(b * (m + lam), axis=-1)
    sd_e = np.sqrt(np.sum(2.0 * b**2 * (m + 2.0 * lam), axis=-1))
    width = _WINDOW_WIDTH * np.maximum(1.0, sd_e)
    totals = np.zeros((P, width_f))

    # (i) moment series on a uniform r grid per point, from N s M_1 < e^{-42} up to where it
    # stops being trustworthy (or s u ~ e^2 for typical u); it hands over to the contour
    # through an erfc window that closes _WINDOW_REACH widths below the last trusted node
    log_m1 = _log_first_moment(b, m, lam)
    r_lo = -math.log(n) - _ELL_BELOW - log_m1
    n_nodes = int(math.ceil((math.log(n) + _ELL_BELOW + _SERIES_HEADROOM) / _SERIES_STEP)) + 1
    rs = r_lo[:, None] + _SERIES_STEP * np.arange(n_nodes)
    log_phi, terms, valid = _series_terms(b, m, lam, s, n, n_tangent, rs, _SERIES_STEP)
    n_valid = np.where(valid.all(axis=1), n_nodes, valid.argmin(axis=1))  # leading valid run
    r_split = r_lo + _SERIES_STEP * (n_valid - 1) - _WINDOW_REACH * _SERIES_WIDTH
    keep = np.arange(n_nodes) < n_valid[:, None]
    window = np.where(keep, _series_window(rs, r_split[:, None]), 0.0)
    totals += np.einsum("pj,pjf->pf", window, np.where(keep[..., None], terms, 0.0))
    dead_at = _death_position(n, rs, np.where(keep, log_phi, 0.0))

    # (ii), (iii): contours, one parameter point at a time (their grids differ widely)
    contour_lo = r_split - _WINDOW_REACH * _SERIES_WIDTH
    for p in np.flatnonzero(dead_at > contour_lo):
        args = (b, m, lam[p:p + 1], s, n, n_tangent)
        lower, upper_needed = _lower_contour(*args, r_split[p], contour_lo[p], mean_e[p],
                                             width[p])
        totals[p] += lower
        if upper_needed:
            totals[p] += _upper_contour(*args, r_split[p], contour_lo[p], mean_e[p], width[p],
                                        totals[p])
    return totals[:, 0], totals[:, 1:1 + n_tangent], totals[:, 1 + n_tangent:]


def _check_range(r, start):
    if (not np.all(np.isfinite(r)) or np.any(np.abs(r) > _R_LIMIT)
            or start > _MAX_BLOCKS * _ELL_BLOCK):
        raise RuntimeError(f"finite-N r integral did not converge within |r| <= {_R_LIMIT:g}:"
                           " energies out of float64 range")


def _alive(n, log_phi):
    """Mask (P, J) of nodes before the first one where ``phi^{N-1} < e^{-_DEAD_LOG}``: phi
    decreases in r, so nothing after it contributes (and the contour need not be trusted)."""
    dead = np.cumsum((n - 1.0) * log_phi < -_DEAD_LOG, axis=1) > 0
    return ~dead


def _grid_spec(side, h_ell, r_split, contour_lo, width):
    """Grid of one contour: fine in r across the series hand-over window, and everywhere at
    most ``_R_STEP max(1, sd E)`` (= ``width / 2``) apart in r."""
    zones = [(contour_lo, r_split + _WINDOW_REACH * _SERIES_WIDTH, _SERIES_WIDTH)]
    return _GridSpec(side, h_ell, _R_STEP, zones, width / _WINDOW_WIDTH)


def _contour_nodes(side, b, m, lam, s, n, n_tangent, spec, v):
    """r (J,), alive-masked terms (J, F) at grid values v (J,) for one point lam (1, G)."""
    r, log_phi, terms = _contour_terms(side, b, m, lam, s, n, n_tangent, v[None, :], spec)
    return r[0], log_phi[0], terms[0]


def _refine(side, b, m, lam, s, n, n_tangent, spec, v, r, terms, r_dead, weight, reference):
    """Trapezoid sum over the unit-spaced grid v, halved until it is converged.

    terms (J, F) are the (unweighted) integrand times dr at v; ``weight(r)`` the windows.
    Each halving adds the midpoints; it stops when the sum moves by less than _REFINE_RTOL
    (relative to |sum| + |reference|) or after _MAX_REFINE halvings (the trapezoid rule on
    this analytic integrand converges geometrically, so the last change bounds the error).
    """
    def weighted(r_nodes, t_nodes):
        return (weight(r_nodes) * (r_nodes < r_dead)) @ t_nodes

    h = 1.0
    total = weighted(r, terms)
    for _ in range(_MAX_REFINE):
        mid = v + 0.5 * h
        r_mid, _, t_mid = _contour_nodes(side, b, m, lam, s, n, n_tangent, spec, mid)
        new_total = 0.5 * (total + h * weighted(r_mid, t_mid))
        v = np.sort(np.concatenate([v, mid]))
        h *= 0.5
        change = np.abs(new_total - total)
        total = new_total
        if np.all(change <= _REFINE_RTOL * (np.abs(total) + np.abs(reference)) + 1e-300):
            break
    return total


def _grow(side, b, m, lam, s, n, n_tangent, spec, v_start, weight, reference, stop):
    """Extend a contour grid block by block from ``v_start`` (one point lam (1, G)).

    Stops where ``phi^{N-1}`` dies (nothing beyond contributes), or where
    ``stop(last r, small)`` says so, ``small`` meaning that the last nodes' weighted terms are
    below _TAIL_RTOL of the running sum (plus ``reference``). Returns v (J,), r (J,), terms
    (J, F) (unweighted) and the r of death (inf if alive throughout).
    """
    v_blocks, r_blocks, t_blocks = [], [], []
    sums = np.zeros(1 + 2 * n_tangent)
    start = 0
    while True:
        v = v_start + np.arange(start, start + _ELL_BLOCK, dtype=float)
        r, log_phi, terms = _contour_nodes(side, b, m, lam, s, n, n_tangent, spec, v)
        _check_range(r, start)
        alive = _alive(n, log_phi[None, :])[0]
        v_blocks.append(v)
        r_blocks.append(r)
        t_blocks.append(terms)
        weighted = terms * (weight(r) * alive)[:, None]
        sums += weighted.sum(axis=0)
        start += _ELL_BLOCK
        joined = [np.concatenate(x) for x in (v_blocks, r_blocks, t_blocks)]
        if not alive[-1]:
            return (*joined, float(r[np.argmin(alive)]))
        small = np.all(np.abs(weighted[-8:]).max(axis=0) * 8
                       <= _TAIL_RTOL * (np.abs(sums) + np.abs(reference)) + 1e-300)
        if stop(r[-1], small):
            return (*joined, math.inf)


def _lower_contour(b, m, lam, s, n, n_tangent, r_split, contour_lo, mean_e, width):
    """Side-H contour for one point (lam (1, G)) from the series hand-over upwards.

    The grid runs (:func:`_grow`) until ``phi^{N-1}`` dies, the nodes become negligible or r
    passes the mean energy + reach w; then it is refined
    (:func:`_refine`). Returns the (1 + 2K,) sums and whether the upper contour is needed:
    when ``phi^{N-1}`` dies below the mean energy the lower contour (accurate up to the mean
    and beyond) covers everything; otherwise it is blended with the upper contour there.
    """
    spec = _grid_spec("H", _ELL_STEP_H, r_split, contour_lo, width)
    v_start, ell_lo = _grid_start("H", b, m, lam, spec, r=contour_lo)
    if ell_lo < -math.log(n) - _ELL_BELOW:  # start where N P(E < r) ~ e^{-42} instead
        v_start, _ = _grid_start("H", b, m, lam, spec, ell=-math.log(n) - _ELL_BELOW)

    def series_share(r_nodes):
        return 1.0 - _series_window(r_nodes, r_split)

    reach = mean_e + _WINDOW_REACH * width
    v, r, terms, r_dead = _grow("H", b, m, lam, s, n, n_tangent, spec, v_start, series_share,
                                0.0, lambda r_last, small: small or r_last > reach)
    need_upper = r_dead > mean_e

    def weight(r_nodes):
        w = series_share(r_nodes)
        if need_upper:
            w = w * 0.5 * special.erfc((r_nodes - mean_e) / width)
        return w

    return _refine("H", b, m, lam, s, n, n_tangent, spec, v, r, terms, r_dead, weight,
                   0.0), need_upper


def _upper_contour(b, m, lam, s, n, n_tangent, r_split, contour_lo, mean_e, width, reference):
    """Side-phi contour for one point from ``max(mean - reach w, hand-over)`` upwards, window
    ``erfc(-(r - mean)/w)/2``; ell (~ ln phi) descends in steps of at most min(_ELL_STEP_PHI,
    _PHI_STEP_N / N) so that ``phi^{N-1} ~ e^{(N-1) ell}`` is resolved for every N; grown
    past the mean until negligible (:func:`_grow`), then refined (:func:`_refine`)."""
    r_start = max(mean_e - _WINDOW_REACH * width, contour_lo)
    spec = _grid_spec("phi", min(_ELL_STEP_PHI, _PHI_STEP_N / n), r_split, contour_lo, width)
    v_start, _ = _grid_start("phi", b, m, lam, spec, r=r_start)

    def weight(r_nodes):
        return ((1.0 - _series_window(r_nodes, r_split))
                * 0.5 * special.erfc(-(r_nodes - mean_e) / width))

    v, r, terms, r_dead = _grow("phi", b, m, lam, s, n, n_tangent, spec, v_start, weight,
                                reference, lambda r_last, small: small and r_last > mean_e)
    return _refine("phi", b, m, lam, s, n, n_tangent, spec, v, r, terms, r_dead, weight,
                   reference)


# ----------------------------------------------------------------------------- Talbot route
def _talbot(b, m, lam, s, n_train, n_tangent, dps=25, panel_nodes=10):
    """Reference route for one parameter point: Talbot-inverted densities + quadrature."""
    n = float(n_train)
    mean_e = float(np.sum(b * (m + lam)))
    sd_e = float(np.sqrt(np.sum(2 * b**2 * (m + 2 * lam))))
    bulk = mean_e + 14.0 * sd_e
    eps_max = bulk + 12.0  # the kernels reach ~12 beyond the densities
    # panels of width <= 1 with at least 20 across the bulk of the energy law (a narrow law,
    # large t, would otherwise sit inside one panel); the first in v = sqrt(eps) (densities
    # behave like eps^{m/2-1} at 0)
    width = min(1.0, bulk / 20.0)
    edges = np.unique(np.concatenate([np.arange(0.0, bulk, width), np.arange(
        math.ceil(bulk), math.ceil(eps_max) + 1.0), [bulk]]))
    gx, gw = np.polynomial.legendre.leggauss(panel_nodes)
    v = 0.5 * (gx + 1.0) * math.sqrt(edges[1])
    eps = [v**2]
    wts = [0.5 * gw * math.sqrt(edges[1]) * 2.0 * v]
    for lo, hi in zip(edges[1:-1], edges[2:], strict=True):
        eps.append(lo + 0.5 * (hi - lo) * (gx + 1.0))
        wts.append(0.5 * (hi - lo) * gw)
    eps, wts = np.concatenate(eps), np.concatenate(wts)
    with mpmath.workdps(dps):
        bm = [mpmath.mpf(float(x)) for x in b]
        mm = [mpmath.mpf(float(x)) for x in m]
        lm = [mpmath.mpf(float(x)) for x in lam]

        def base(p):
            out = mpmath.mpf(1)
            for bg, mg, lg in zip(bm, mm, lm, strict=True):
                q = 1 + 2 * p * bg
                out *= q ** (-mg / 2) * mpmath.exp(-p * bg * lg / q)
            return out

        def make(kind, k):
            bg, mg, lg, sg = bm[k], mm[k], lm[k], mpmath.mpf(float(s[k]))

            def fn(p):
                q = 1 + 2 * p * bg
                if kind == "sq":
                    rho = sg**2 * (mg / q + 4 * p**2 * bg**2 * lg / q**2)
                else:
                    rho = 2 * p * bg * sg * mpmath.sqrt(lg) / q
                return base(p) * rho
            return fn

        transforms = [base] + [make("sq", k) for k in range(n_tangent)] + [
            make("lin", k) for k in range(n_tangent)]
        dens = np.empty((len(transforms), eps.size))  # (F, E)
        for i, fn in enumerate(transforms):
            for j, e in enumerate(eps):
                dens[i, j] = float(mpmath.invertlaplace(fn, float(e), method="talbot"))
                if not math.isfinite(dens[i, j]):  # fail at once rather than return NaN
                    raise RuntimeError(
                        f"Talbot inversion failed (non-finite density at energy {e:.3g}, "
                        f"mean energy {mean_e:.3g}); use method='bromwich' here")
    r = np.arange(-math.log(n) - 40.0, eps_max + 40.0, 0.05)
    v = eps[None, :] - r[:, None]
    ev = np.exp(-v)
    kern_h = -np.expm1(-ev)
    kern_g = ev * np.exp(-ev)
    kern_g2 = ev * kern_g
    wd = dens * wts  # (F, E)
    q_val = kern_h @ wd[0]
    ag2 = kern_g2 @ wd.T  # (R, F)
    ag = kern_g @ wd.T
    phi = np.clip(1.0 - q_val, 0.0, 1.0)
    pw1 = phi ** (n - 1.0)
    pw2 = phi ** max(n - 2.0, 0.0)
    h = 0.05
    sum_w2 = n * h * np.sum(ag2[:, 0] * pw1)
    wsq = n * h * (ag[:, 1:1 + n_tangent] * pw1[:, None]).sum(axis=0)
    msq = n * h * (ag2[:, 1:1 + n_tangent] * pw1[:, None]).sum(axis=0) + n * (n - 1.0) * h * (
        ag[:, 1 + n_tangent:] ** 2 * pw2[:, None]).sum(axis=0)
    return np.array([sum_w2]), wsq[None], msq[None]


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
    t: one diffusion time (scalar); n_train: N >= 1 (integer); schedule: object or name.
    x: "fresh" (average over test points x ~ p_t, generalized Gauss-Laguerre over the
       per-group squared norms, ``n_nodes`` per group), "origin", or an array (..., d) of test
       points (expectation over training sets only, per point).
    method: "bromwich" (fast, default) or "talbot" (mpmath reference, slow; explicit x or
       origin only, energies of moderate range).
    Returns :class:`FiniteNExpectations` with batch shape x.shape[:-1] (or ()).
    """
    model = _check_model(model)
    schedule = get_schedule(schedule)
    t_arr = schedule.check_time(t)
    if t_arr.ndim != 0:
        raise ValueError(f"t must be a scalar time, got shape {t_arr.shape}")
    n_train = check_int("n_train", n_train, minimum=1)
    check_choice("method", method, ("bromwich", "talbot"))
    a = float(schedule.a(t_arr))
    delta = float(schedule.delta(t_arr))
    stds, dims, group = _groups(model)
    n_tangent = model.n_subspaces
    b = a**2 * stds**2 / (2.0 * delta)
    weights = None
    if isinstance(x, str):
        check_choice("x", x, ("fresh", "origin"))
        if x == "origin":
            lam, batch = np.zeros((1, stds.size)), ()
        else:
            if method == "talbot":
                raise ValueError("method='talbot' supports x='origin' or explicit points only")
            if n_nodes is None:
                per = int(math.floor(_NODE_BUDGET ** (1.0 / stds.size) + 1e-9))
                n_nodes = min(_DEFAULT_NODES, per)
                if n_nodes < _MIN_NODES:
                    raise ValueError(f"{stds.size} energy groups is too many for the fresh-point "
                                     "quadrature; pass explicit test points x")
            n_nodes = check_int("n_nodes", n_nodes, minimum=1)
            lam, weights = _fresh_nodes(dims, a**2 * stds**2 / delta, n_nodes)
            batch = ()
    else:
        pts = check_finite_array("x", x, last_dim=model.d)
        batch = pts.shape[:-1]
        coords = pts.reshape(-1, model.d) @ model.basis
        sq = np.stack([np.sum(coords[:, group == g] ** 2, axis=1) for g in range(stds.size)], -1)
        lam = sq / (a**2 * stds**2)
    if method == "talbot":
        res = [_talbot(b, dims, row, stds, n_train, n_tangent) for row in lam]
        sw2, wsq, msq = (np.concatenate([r[i] for r in res]) for i in range(3))
    else:
        sw2, wsq, msq = _bromwich(b, dims, lam, stds, n_train, n_tangent)
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

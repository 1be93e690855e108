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
``Lambda_h(z) = E[h(y) e^{zE}]`` (a product over subspaces of non-central chi-square transforms)
and the kernels' bilateral Laplace transforms ``-Gamma(z)``, ``Gamma(1+z)``, ``Gamma(2+z)``:

    A_K[h](r) = (1/pi) int_0^inf Re[ Khat(c + i w) e^{-(c+iw) r} Lambda_h(c + i w) ] dw,

a Bromwich (Gil-Pelaez-type) line integral on ``Re z = c in (-1, 0)``, with c the saddle point of
``A_H[1]`` (no cancellation), ``w = sigma sinh(tau)`` and the trapezoid rule in tau. The r
integral uses the variable ``ell = K(c) - c K'(c)`` (the saddle-point value of ln A_H, about
ln(1 - phi)), which is explicit in c, so nodes uniform in ell need only a 1-d monotone solve and
``dr/d ell = 1/|c|`` exactly. Everything stays in log scale, so deep memorization (Delta -> 0,
energies spanning 1e6) is as cheap as the generalization regime.

An independent second route (``method="talbot"``) inverts the h-weighted densities of E with
mpmath's Talbot contour and integrates them against the kernels by Gauss-Legendre quadrature.
It is a slow reference (seconds) for moderate energy ranges, used to validate the fast route.

Fresh test points ``x ~ p_t``: ``|P_g x|^2 = (a^2 s_g^2 + Delta) chi^2_{m_g}`` per group of equal
std (rotational symmetry within subspaces), averaged by a tensor-product generalized
Gauss-Laguerre rule. Normal directions of zero std add a constant to every E_mu and drop out;
a positive ``residual_std`` makes the normal space one more group of the energy.

Not computed: ``E[N_eff] = E[1/sum w^2]`` (no single-integral representation via this route;
``1/E[sum w^2]`` is reported as ``participation_ratio_of_mean``, which is *not* E[N_eff]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
from scipy import special

from ._checks import check_choice, check_finite_array, check_int
from .manifold import LinearManifold
from .schedules import Schedule, get_schedule

__all__ = ["FiniteNExpectations", "finite_n_expectations", "single_point_functions"]

#: spacing of the trapezoid rule in ell (~ln of the lower tail probability): integrands vary
#: on scale >= 1 there; halving it changes results by < 1e-10 (tested)
_ELL_STEP = 0.1
#: the r integral starts where N * P(E < r) < e^{-42} (contributions below float64 precision)
_ELL_BELOW = 42.0
#: nodes added per extension of an ell grid, and the hard limit of |ell|
_ELL_BLOCK = 40
_ELL_LIMIT = 400.0
#: the two contours (left/right of the pole at 0) are blended by erfc windows centred at the
#: mean energy with width _WINDOW_WIDTH * max(1, sd(E)); each is evaluated only within
#: _WINDOW_REACH widths of the centre on its far side (window < 1e-17 beyond), where its line
#: integral is still well resolved
_WINDOW_WIDTH = 0.4
_WINDOW_REACH = 5.0
#: an ell grid extension stops when the last nodes contribute below this relative amount
_TAIL_RTOL = 1e-15
#: trapezoid step in tau (w = sigma sinh tau): the geometric node spacing at large |w| must
#: resolve the residual oscillation e^{-i w (r - E_mean)} within the window reach (measured:
#: 0.1 gives 1e-6 errors at r = E_mean + 0.6 sd, 0.03 gives < 1e-8 up to E_mean + 2 sd)
_TAU_STEP = 0.015
#: |w| beyond which |Gamma(c + i w)| e^{...} < e^{-45}: the line integral is truncated there
_OMEGA_MAX = 30.0
#: iteration cap of the vectorised safeguarded Newton solves
_MAX_NEWTON = 200
#: elements of the (points x ell x tau) complex work array per chunk (memory cap, ~50 MB)
_CHUNK_ELEMENTS = 3_000_000
#: default Gauss-Laguerre nodes per group for fresh test points, and the total budget
_DEFAULT_NODES = 20
_NODE_BUDGET = 1200
_MIN_NODES = 6


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


def _solve_xi(side, b, m, lam, *, ell=None, r=None):
    """xi at which ``ell(c) = K - c K'`` equals ``ell`` (or the saddle ``K'(c) = r``).

    Vectorised safeguarded Newton with a bisection fallback; g below is increasing in xi.
    """
    target = ell if ell is not None else r
    lo = np.full(np.shape(target), _BRACKETS[side][0])
    hi = np.full(np.shape(target), _BRACKETS[side][1])
    xi = 0.5 * (lo + hi)
    for _ in range(_MAX_NEWTON):
        c, _, k, k1, k2 = _saddle(xi, side, b, m, lam)
        dc = -c * (1.0 + c) if side == "H" else c * (1.0 - 2.0 * c * b.max())
        if ell is not None:  # d ell/d xi = -c K'' dc/dxi: > 0 for H, < 0 for phi
            sign = 1.0 if side == "H" else -1.0
            g = sign * (k - c * k1 - target)
            slope = sign * (-c * k2 * dc)
        else:
            g = k1 - target
            slope = k2 * dc
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
def _line_integrals(side, c, q_real, r, k2, b, m, lam, s, n_tangent):
    """Single-point functions at (c, r), shapes (P, J); b, m, s (G,), lam (P, G).

    Returns ``log_scale`` (P, J) and, in units of ``e^{log_scale}``: "main" (Q = A_H[1] on side
    H, phi on side phi), "AG2" = A_G2[1], and (P, J, K) "AGq" = A_G[|P_k y|^2],
    "AG2q" = A_G2[|P_k y|^2], "AGl" = A_G[xhat_k . P_k y].
    """
    sigma = 1.0 / np.sqrt(k2)
    tau_max = np.arcsinh(_OMEGA_MAX / sigma)
    n_tau = int(math.ceil(float(np.max(tau_max)) / _TAU_STEP)) + 1
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
def _piece(side, b, m, lam, s, n, n_tangent, r_star, width, reference):
    """One side of the r integral, windowed by erfc((r - r*)/w)/2 (H) or its complement (phi).

    Nodes are uniform in ell (step _ELL_STEP), per point; ``dr = d ell / |c|``. Returns the
    (P, 1 + 2K) sums [sum_w2, weighted (K), mean (K)].
    """
    P = lam.shape[0]
    width_f = 1 + 2 * n_tangent
    totals = np.zeros((P, width_f))
    lam3 = lam[:, None, :]
    if side == "H":
        ell0 = np.full(P, -math.log(n) - _ELL_BELOW)
        step = _ELL_STEP
    else:
        xi0 = _solve_xi("phi", b, m, lam, r=r_star - _WINDOW_REACH * width)
        c0, _, k0, k10, _ = _saddle(xi0, "phi", b, m, lam)
        ell0 = k0 - c0 * k10
        step = -_ELL_STEP
    start = 0
    while True:
        ell = ell0[:, None] + step * np.arange(start, start + _ELL_BLOCK)
        if np.any(np.abs(ell) > _ELL_LIMIT):
            raise RuntimeError("finite-N r integral did not converge within |ell| <= "
                               f"{_ELL_LIMIT}: energies out of float64 range")
        xi = _solve_xi(side, b, m, lam3, ell=ell)
        c, q, _, r, k2 = _saddle(xi, side, b, m, lam3)  # saddle: K'(c) = r
        block = np.zeros((P, ell.shape[1], width_f))
        chunk = max(1, _CHUNK_ELEMENTS // (ell.shape[1] * 400))
        for p0 in range(0, P, chunk):
            sl = slice(p0, p0 + chunk)
            log_scale, fn = _line_integrals(side, c[sl], q[sl], r[sl], k2[sl], b, m, lam[sl],
                                            s, n_tangent)
            scale = np.exp(log_scale)
            main = fn["main"] * scale
            phi = 1.0 - main if side == "H" else main
            log_phi = np.log(np.clip(phi, 1e-300, 1.0))
            arg = (r[sl] - r_star[sl, None]) / width[sl, None]
            window = 0.5 * special.erfc(arg if side == "H" else -arg)
            base = n * _ELL_STEP / np.abs(c[sl]) * scale * window
            pw1 = np.exp((n - 1.0) * log_phi)
            pw2 = np.exp(max(n - 2.0, 0.0) * log_phi)
            block[sl, :, 0] = base * fn["AG2"] * pw1
            block[sl, :, 1:1 + n_tangent] = (base * pw1)[..., None] * fn["AGq"]
            pair = ((n - 1.0) * base * scale * pw2)[..., None] * fn["AGl"] ** 2
            block[sl, :, 1 + n_tangent:] = (base * pw1)[..., None] * fn["AG2q"] + pair
        totals += block.sum(axis=1)
        start += _ELL_BLOCK
        tail = np.abs(block[:, -8:, :]).max(axis=1) * 8
        small = tail <= _TAIL_RTOL * (np.abs(totals) + np.abs(reference)) + 1e-300
        if side == "H":
            past = r[:, -1] > r_star + _WINDOW_REACH * width
            if np.all(past | np.all(small, axis=1)):
                break
        elif np.all((r[:, -1] > r_star) & np.all(small, axis=1)):
            break
    return totals


def _bromwich(b, m, lam, s, n_train, n_tangent):
    """Expectations for P parameter points: b, m, s (G,), lam (P, G) -> (P,), (P,K), (P,K)."""
    n = float(n_train)
    mean_e = np.sum(b * (m + lam), axis=-1)
    sd_e = np.sqrt(np.sum(2.0 * b**2 * (m + 2.0 * lam), axis=-1))
    width = _WINDOW_WIDTH * np.maximum(1.0, sd_e)
    lower = _piece("H", b, m, lam, s, n, n_tangent, mean_e, width, 0.0)
    totals = lower + _piece("phi", b, m, lam, s, n, n_tangent, mean_e, width, lower)
    return totals[:, 0], totals[:, 1:1 + n_tangent], totals[:, 1 + n_tangent:]


# ----------------------------------------------------------------------------- Talbot route
def _talbot(b, m, lam, s, n_train, n_tangent, dps=25, panel_nodes=10):
    """Reference route for one parameter point: Talbot-inverted densities + quadrature."""
    n = float(n_train)
    mean_e = float(np.sum(b * (m + lam)))
    sd_e = float(np.sqrt(np.sum(2 * b**2 * (m + 2 * lam))))
    eps_max = mean_e + 14.0 * sd_e + 12.0
    n_panels = int(math.ceil(eps_max))
    gx, gw = np.polynomial.legendre.leggauss(panel_nodes)
    # first panel in v = sqrt(eps) (densities behave like eps^{m/2-1} at 0), then unit panels
    v = 0.5 * (gx + 1.0)
    eps = [v**2]
    wts = [0.5 * gw * 2.0 * v]
    for j in range(1, n_panels):
        eps.append(j + 0.5 * (gx + 1.0))
        wts.append(0.5 * gw)
    eps, wts = np.concatenate(eps), np.concatenate(wts)
    with mpmath.workdps(dps):
        bm = [mpmath.mpf(float(x)) for x in b]
        mm = [mpmath.mpf(float(x)) for x in m]
        lm = [mpmath.mpf(float(x)) for x in lam]

        def base(p):
            out = mpmath.mpf(1)
            for bg, mg, lg in zip(bm, mm, lm):
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
        dens = np.array([[float(mpmath.invertlaplace(fn, float(e), method="talbot"))
                          for e in eps] for fn in transforms])  # (F, E)
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
    nodes, weights = [], []
    for m_g, r_g in zip(dims, r_snr):
        x, w = special.roots_genlaguerre(n_nodes, m_g / 2.0 - 1.0)
        nodes.append(2.0 * x * (1.0 + 1.0 / r_g))
        weights.append(w / w.sum())
    grid = np.stack(np.meshgrid(*nodes, indexing="ij"), -1).reshape(-1, len(dims))
    wgrid = np.prod(np.stack(np.meshgrid(*weights, indexing="ij"), -1).reshape(-1, len(dims)),
                    axis=-1)
    return grid, wgrid


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

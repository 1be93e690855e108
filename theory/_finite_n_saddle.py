"""Saddle points, contour grids and Bromwich line integrals of the exact finite-N theory.

Private to `geomem.theory.finite_n` (module docstring there, docs/theory.md "Exact finite-N
theory"): the saddle abscissa ``c`` and cumulant ``K(c) = ln|Gamma(c)| + ln Lambda(c)`` of the
single-point transform, the grid variable of a contour (:class:`GridSpec`), the vectorised
Newton solve for the saddle at a given ell, r or grid value, and the single-point functions
``A_K[h](r)`` as line integrals on ``Re z = c`` (numba kernel in `_line_kernels`, numpy
reference :func:`line_integrals_numpy`).  This is the quadrature layer; the r integral over
these functions lives in `_finite_n_bromwich`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from ._checks import check_choice
from ._line_kernels import line_integrals

__all__ = ["GridSpec", "contour_line_integrals", "line_integrals_numpy", "saddle",
           "single_point_functions", "solve_xi", "tau_step"]

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


def saddle(xi, side, b, m, lam):
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


class GridSpec:
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


def solve_xi(side, b, m, lam, *, ell=None, r=None, v=None, steps=None):
    """xi of the saddle point at which ``ell(c) = K - c K'`` equals ``ell``, or ``K'(c) = r``,
    or the grid variable of ``steps`` (a :class:`GridSpec`) equals ``v``.

    All three targets increase with xi along a contour (dell/dc = -c K'', dr/dc = K''), so a
    vectorised safeguarded Newton iteration with a bisection fallback converges.
    """
    target = next(val for val in (ell, r, v) if val is not None)
    sign = _side_sign(side)
    lo = np.full(np.shape(target), _BRACKETS[side][0])
    hi = np.full(np.shape(target), _BRACKETS[side][1])
    xi = 0.5 * (lo + hi)
    for _ in range(_MAX_NEWTON):
        c, _, k, k1, k2 = saddle(xi, side, b, m, lam)
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
def tau_step(n: float) -> float:
    """Trapezoid step in tau for training-set size n (finer where the far tail matters)."""
    return _TAU_STEP_SMALL_N if n <= _SMALL_N_TAU else _TAU_STEP


def contour_line_integrals(side, c, q_real, r, k2, b, m, lam, s, n_tangent, tau_step=_TAU_STEP,
                           centred=False):
    """Single-point functions at (c, r) by the numba kernel (see :func:`line_integrals_numpy`
    for the definition and shapes; each node gets its own tau grid there)."""
    f64 = np.ascontiguousarray
    out = line_integrals(-1.0 if side == "H" else 1.0, f64(c, float), f64(q_real, float),
                         f64(r, float), f64(k2, float), f64(b, float), f64(m, float),
                         f64(lam, float), f64(s, float), int(n_tangent), tau_step, _OMEGA_MAX,
                         bool(centred))
    return out[0], dict(zip(("main", "AG2", "AGq", "AG2q", "AGl"), out[1:], strict=True))


def line_integrals_numpy(side, c, q_real, r, k2, b, m, lam, s, n_tangent,
                          tau_step=_TAU_STEP, centred=False):
    """Single-point functions at (c, r), shapes (P, J); b, m, s (G,), lam (P, G).

    Returns ``log_scale`` (P, J) and, in units of ``e^{log_scale}``: "main" (Q = A_H[1] on side
    H, phi on side phi), "AG2" = A_G2[1], and (P, J, K) "AGq" = A_G[|P_k y|^2],
    "AG2q" = A_G2[|P_k y|^2], "AGl" = A_G[xhat_k . P_k y]; ``centred``: "AGq" and "AG2q" with
    ``|P_k (y - x)|^2`` (the tilted mean of P_k y is ``-2 z b x / q``, so ``|P_k x|^2`` enters
    over ``q^2`` instead of ``4 z^2 b^2 / q^2``).
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
    offset = 1.0 if centred else 4.0 * (z[..., None] * bk) ** 2
    rho_sq = sk**2 * (mk / qk + offset * lamk / qk**2)
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
    xi = solve_xi(side, b, m, lam_row, r=r)
    c, q, _, _, k2 = saddle(xi, side, b, m, lam_row)
    log_scale, out = contour_line_integrals(side, c[None], q[None], r[None], k2[None], b, m,
                                     lam[None, :], s, b.size)
    scale = np.exp(log_scale[0])
    res = {key: val[0] * (scale if val.ndim == 2 else scale[:, None])
           for key, val in out.items()}
    main = res.pop("main")
    res["Q"], res["phi"] = (main, 1.0 - main) if side == "H" else (1.0 - main, main)
    return res



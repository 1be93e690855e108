"""Truncated exponential moments of the generalized chi-square energy of Gaussian data.

Setting (THEORY §5c; docs/theory.md "Exact finite-N theory"). Training points are Gaussian,
``y = s eta`` with ``eta ~ N(0, I)``, in G groups of equal std ``s_g`` and dimension ``m_g``.
A test point x has group coordinates ``xi_g = x_g / (a s_g)``. The energy is

    E(eta) = sum_g b_g |eta_g - xi_g|^2,   b_g = a^2 s_g^2 / (2 Delta),   lam_g = |xi_g|^2.

Under the tilt ``e^{z E}`` eta is Gaussian again. Per group: precision ``q_g = 1 - 2 z b_g``,
variance ``v_g = 1 / q_g``, mean ``mu_g = -2 z b_g sqrt(lam_g) v_g`` along ``xi_g``, and

    Lambda(z) = E[e^{z E}] = prod_g q_g^{-m_g/2} exp(z b_g lam_g v_g),   z < 1 / (2 max b).

For a real tilt z0 <= 0, a cut c > 0 and statistics h whose tilted means
``R_h(z) = E[e^{zE} h] / Lambda(z)`` are closed forms in (q, v, mu) (``moments``),
:func:`truncated_moments` gives ``E[e^{z0 E} h 1{E < c}]`` and ``E[e^{z0 E} h 1{E >= c}]``,
both relative to ``Lambda(z0)`` so that deep tails keep their precision. It uses one Bromwich
integral,

    (1 / 2 pi i) int Lambda(z0 + zeta) R_h(z0 + zeta) e^{-zeta c} dzeta / (-+ zeta).

The integral runs left of the pole at 0 for the lower part and right of it for the upper part.
The path is a parabola ``zeta = gamma + kappa w^2 + i w`` through the saddle gamma of
``ln Lambda(z0 + zeta) - zeta c``. It bends towards ``Re zeta -> +inf``, where ``e^{-zeta c}``
decays like a Gaussian in w, so the integrand is smooth and cut off in any dimension. The
path crosses no singularity: the pole at 0 and the branch points ``1/(2 b_g) - z0`` lie on the
real axis, which the path meets only at gamma. The rule is a trapezoid in w, halved until it
has converged. The part on the saddle's side is computed; the other part is the closed-form
total minus it, which never cancels, because the saddle's side is the smaller part.

Shapes: b, m, lam (G,) for one test point; ``moments(q, v, mu)`` maps (J, G) arrays to (J, H).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import optimize

__all__ = ["energy_cgf", "energy_cgf_derivatives", "energy_log_cdf", "energy_saddle",
           "saddle_log_cdf", "tilted_gaussian", "truncated_moments", "unit_moments"]

#: the saddle is kept at least this many path widths 1/sqrt(K'') away from the pole at 0, so
#: the 1/zeta factor varies on the integrand's own scale
_POLE_CLEARANCE = 2.0
#: the parabola's own Gaussian cut-off e^{-(w / (_PARABOLA_REACH sigma))^2}, sigma the width
#: at the saddle; wide enough not to change the Gaussian near the saddle
_PARABOLA_REACH = 4.0
#: first trapezoid step in units of sigma; halved while the sum moves by more than _RTOL of
#: the integral of |integrand| (the trapezoid rule converges geometrically here)
_FIRST_STEP = 0.5
_RTOL = 1e-12
_MAX_HALVINGS = 8
#: the path is extended in blocks until the integrand has fallen below _CUT_OFF of its peak
_BLOCK = 64
_CUT_OFF = 1e-18
_MAX_NODES = 200_000


def tilted_gaussian(z, b, lam):
    """Tilted-Gaussian parameters ``q = 1 - 2 z b``, ``v = 1/q``, ``mu = -2 z b sqrt(lam) v``
    for z (...,) (real or complex) and b, lam (G,) -> (..., G) each."""
    z = np.asarray(z)[..., None]
    q = 1.0 - 2.0 * z * b
    v = 1.0 / q
    return q, v, -2.0 * z * b * np.sqrt(lam) * v


def energy_cgf(z, b, m, lam):
    """``ln Lambda(z) = ln E[e^{zE}]`` (...,) for z (...,), real or complex (principal branch)."""
    q, v, _ = tilted_gaussian(z, b, lam)
    zz = np.asarray(z)[..., None]
    return np.sum(-0.5 * m * np.log(q) + zz * b * lam * v, axis=-1)


def energy_cgf_derivatives(z, b, m, lam):
    """``K'(z)`` (the tilted mean energy) and ``K''(z)`` (its variance), real z (...,)."""
    _, v, _ = tilted_gaussian(z, b, lam)
    k1 = np.sum(b * (m * v + lam * v**2), axis=-1)
    k2 = np.sum(2.0 * b**2 * (m * v**2 + 2.0 * lam * v**3), axis=-1)
    return k1, k2


def energy_saddle(c: float, b, m, lam) -> float:
    """The real z < 1/(2 max b) with ``K'(z) = c`` (c > 0): the tilt whose mean energy is c."""
    z_max = 0.5 / float(np.max(b))

    def gap(z):
        return math.log(float(energy_cgf_derivatives(z, b, m, lam)[0])) - math.log(c)

    lo = min(-1.0, -z_max)
    while gap(lo) > 0.0:      # K' -> 0 as z -> -inf, like sum(m) / (2 |z|)
        lo *= 4.0
    step = z_max - lo
    hi = z_max - step * 0.5
    while gap(hi) < 0.0:      # K' -> inf at the branch point
        step *= 0.5
        hi = z_max - step * 0.5
        if step < 1e-300:
            raise RuntimeError(f"no saddle below the branch point for c = {c!r}")
    return float(optimize.brentq(gap, lo, hi, xtol=1e-15 * max(1.0, abs(lo)), rtol=1e-15,
                                 maxiter=400))


def saddle_log_cdf(c: float, b, m, lam) -> float:
    """Saddle-point (Daniels) approximation of ``ln P(E < c)``, for choosing cuts only: the
    exact value is :func:`energy_log_cdf`. Valid in the lower tail (c below the mean energy);
    above the mean it returns a value close to 0."""
    z = energy_saddle(c, b, m, lam)
    if z >= 0.0:
        return 0.0
    k0 = float(energy_cgf(z, b, m, lam))
    _, k2 = energy_cgf_derivatives(z, b, m, lam)
    return k0 - z * c - math.log(-z * math.sqrt(2.0 * math.pi * float(k2)))


def _side_and_gamma(c, z0, b, m, lam):
    """The side whose part is computed ("lower" or "upper") and the abscissa gamma of the
    path (zeta plane), at least _POLE_CLEARANCE widths away from the pole."""
    z_star = energy_saddle(c, b, m, lam)
    gamma = z_star - z0
    sigma = 1.0 / math.sqrt(float(energy_cgf_derivatives(z_star, b, m, lam)[1]))
    room = 0.5 / float(np.max(b)) - z0          # distance from z0 to the branch point
    clearance = _POLE_CLEARANCE * sigma
    if gamma < 0.0:
        return "lower", min(gamma, -clearance)
    return "upper", max(gamma, min(clearance, 0.5 * room))


def _path_values(omega, c, z0, gamma, kappa, side, b, m, lam, moments, log_ref):
    """Integrand ``Im[F]`` (J, H) on the parabola at w = omega (J,), scaled by e^{-log_ref}."""
    zeta = gamma + kappa * omega**2 + 1j * omega
    z = z0 + zeta
    q, v, mu = tilted_gaussian(z, b, lam)
    log_f = energy_cgf(z, b, m, lam) - zeta * c - log_ref
    sign = -1.0 if side == "lower" else 1.0
    f = np.exp(log_f) * (2.0 * kappa * omega + 1j) / (sign * zeta)
    return np.imag(f[:, None] * moments(q, v, mu))


def _integrate(c, z0, gamma, side, b, m, lam, moments, log_ref):
    """``(1/pi) int_0^inf Im F dw`` (H,) by the trapezoid rule, grown then halved."""
    sigma = 1.0 / math.sqrt(float(energy_cgf_derivatives(z0 + gamma, b, m, lam)[1]))
    kappa = 1.0 / (c * (_PARABOLA_REACH * sigma) ** 2)
    h = _FIRST_STEP * sigma
    blocks = []
    start = 0
    peak = None
    while True:
        omega = h * np.arange(start, start + _BLOCK, dtype=float)
        vals = _path_values(omega, c, z0, gamma, kappa, side, b, m, lam, moments, log_ref)
        blocks.append(vals)
        size = np.max(np.abs(vals), axis=1)
        peak = size.max() if peak is None else max(peak, size.max())
        start += _BLOCK
        if size[-8:].max() <= _CUT_OFF * peak:
            break
        if start > _MAX_NODES:
            raise RuntimeError("energy tail integral did not decay along its path")
    vals = np.concatenate(blocks)
    n_nodes = vals.shape[0]
    total = h * (vals.sum(axis=0) - 0.5 * vals[0])
    scale = h * np.abs(vals).sum(axis=0)
    for _ in range(_MAX_HALVINGS):
        mid = h * (np.arange(n_nodes, dtype=float) + 0.5)
        mid_vals = _path_values(mid, c, z0, gamma, kappa, side, b, m, lam, moments, log_ref)
        new_total = 0.5 * total + 0.5 * h * mid_vals.sum(axis=0)
        scale = 0.5 * scale + 0.5 * h * np.abs(mid_vals).sum(axis=0)
        h *= 0.5
        n_nodes *= 2
        change = np.abs(new_total - total)
        total = new_total
        if np.all(change <= _RTOL * scale):
            return total / math.pi
    raise RuntimeError("energy tail integral did not converge under step halving")


def truncated_moments(c: float, z0: float, b, m, lam,
                      moments: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
                      ) -> tuple[float, np.ndarray, np.ndarray, str]:
    """``E[e^{z0 E} h 1{E < c}]`` and ``E[e^{z0 E} h 1{E >= c}]`` for the statistics h.

    c > 0: the cut; z0 <= 0: the tilt (0 for plain probabilities); b, m, lam (G,): the energy
    (module docstring); ``moments(q, v, mu)``: tilted means R_h (J, H) from (J, G) arrays,
    analytic in z (complex arithmetic only).

    Returns ``(log_total, lower, upper, side)``: ``E[e^{z0 E} h 1{...}] =
    exp(log_total) * lower[h]`` (or ``upper[h]``), ``log_total = ln Lambda(z0)``, so
    ``lower + upper = R_h(z0)``; side says which part was integrated (the other is the
    difference).
    """
    b = np.asarray(b, float)
    m = np.asarray(m, float)
    lam = np.asarray(lam, float)
    log_total = float(energy_cgf(z0, b, m, lam))
    q0, v0, mu0 = tilted_gaussian(np.array([z0]), b, lam)
    whole = np.real(moments(q0, v0, mu0))[0]
    side, gamma = _side_and_gamma(c, z0, b, m, lam)
    log_ref = float(np.real(energy_cgf(z0 + gamma, b, m, lam))) - gamma * c
    part = _integrate(c, z0, gamma, side, b, m, lam, moments, log_ref)
    part = part * math.exp(log_ref - log_total)
    other = whole - part
    return (log_total, part, other, side) if side == "lower" else (log_total, other, part, side)


def unit_moments(q, v, mu):
    """The statistic h = 1 for `truncated_moments`: (J, 1) ones."""
    return np.ones(q.shape[:-1] + (1,), dtype=q.dtype)


def energy_log_cdf(c: float, b, m, lam) -> tuple[float, float]:
    """Exact ``(ln P(E < c), ln P(E >= c))``, each to full relative precision in its own tail
    (the integrated side in log scale, the other as ``log1p(-p)``)."""
    b = np.asarray(b, float)
    m = np.asarray(m, float)
    lam = np.asarray(lam, float)
    side, gamma = _side_and_gamma(c, 0.0, b, m, lam)
    log_ref = float(np.real(energy_cgf(gamma, b, m, lam))) - gamma * c
    part = float(_integrate(c, 0.0, gamma, side, b, m, lam, unit_moments, log_ref)[0])
    if not part > 0.0:
        raise RuntimeError(f"energy tail probability at c = {c!r} lost its precision")
    log_part = log_ref + math.log(part)
    log_other = math.log(-math.expm1(log_part)) if log_part < 0.0 else -math.inf
    return (log_part, log_other) if side == "lower" else (log_other, log_part)

"""numba kernel of the Bromwich line integrals of `geomem.theory.finite_n` (private).

Same mathematics as the vectorised numpy expression it replaces (kept in the module as
``_line_integrals_numpy`` and checked against this kernel in the tests): for every saddle
node (c, r) the trapezoid rule in tau on ``z = c + i sigma sinh(tau)``, each node with its own
tau grid (the numpy form had to share the longest one). Complex log-Gamma is evaluated by
upward recurrence to |z| >= 10 and the Stirling series (8 Bernoulli terms: error < 1e-16
there), up to a multiple of 2 pi i, which exp() does not see. Serial loops, one compiled
signature, ``cache=True``.
"""

from __future__ import annotations

import cmath
import math

import numpy as np
from numba import njit

__all__ = ["line_integrals"]

#: Stirling coefficients B_2k / (2k (2k - 1)), k = 1..8
_STIRLING = np.array([1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360,
                      1 / 156, -3617 / 122400])
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@njit(cache=True)
def stirling_parts(z):
    """``(z', series, product)`` with ``log Gamma(z) = (z' - 1/2) log z' - z' + log(2 pi) / 2
    + series - log(product)``: upward recurrence to |z'| >= 10, where the Stirling series
    (to z'^-15) is at float64 precision. Callers take the logs (each has its fastest one)."""
    product = 1.0 + 0.0j
    while z.real * z.real + z.imag * z.imag < 100.0:
        product *= z
        z += 1.0
    inv = 1.0 / z
    inv2 = inv * inv
    series = 0.0 + 0.0j
    power = inv
    for k in range(_STIRLING.size):
        series += _STIRLING[k] * power
        power *= inv2
    return z, series, product


@njit(cache=True)
def _loggamma(z):
    """log Gamma(z) up to a multiple of 2 pi i (only exp() of it is used)."""
    z, series, product = stirling_parts(z)
    return (z - 0.5) * cmath.log(z) - z + _HALF_LOG_2PI + series - cmath.log(product)


@njit(cache=True)
def line_integrals(sign, c, q_real, r, k2, b, m, lam, s, n_tangent, tau_step, omega_max,
                   centred):
    """Single-point functions at saddle nodes: c, r, k2 (P, J); q_real (P, J, G); b, m, s (G,);
    lam (P, G). Returns log_scale (P, J), main (P, J), ag2 (P, J), agq, ag2q, agl (P, J, K) in
    units of e^{log_scale} (see ``_finite_n_saddle.line_integrals_numpy``). ``centred``: agq
    and ag2q weight by ``|P_k (y - x)|^2`` instead of ``|P_k y|^2``."""
    # the tilted law of P_k y has mean -2 z b x / q and variance s^2 / q per direction, so
    # E|P_k y|^2 carries 4 z^2 b^2 |x|^2 / q^2 and E|P_k (y - x)|^2 carries |x|^2 / q^2
    mean_coef = 1.0 if centred else 0.0
    P, J = c.shape
    G = b.shape[0]
    log_scale = np.empty((P, J))
    main = np.zeros((P, J))
    ag2 = np.zeros((P, J))
    agq = np.zeros((P, J, n_tangent))
    ag2q = np.zeros((P, J, n_tangent))
    agl = np.zeros((P, J, n_tangent))
    sqrt_lam = np.sqrt(lam)
    for p in range(P):
        for j in range(J):
            cj, rj = c[p, j], r[p, j]
            log_lambda_c = 0.0
            for g in range(G):
                qg = q_real[p, j, g]
                log_lambda_c += -0.5 * m[g] * math.log(qg) + cj * b[g] * lam[p, g] / qg
            scale = math.lgamma(cj) - cj * rj + log_lambda_c  # ln(|Gamma(c)| e^{-cr} Lambda(c))
            log_scale[p, j] = scale
            sigma = 1.0 / math.sqrt(k2[p, j])
            tau_max = math.asinh(omega_max / sigma)
            n_tau = int(math.ceil(tau_max / tau_step)) + 1
            h = tau_max / (n_tau - 1)
            for i in range(n_tau):
                tau = i * h
                omega = sigma * math.sinh(tau)
                weight = h * sigma * math.cosh(tau) / math.pi
                if i == 0:
                    weight *= 0.5
                z = cj + 1j * omega
                log_f = _loggamma(z) - z * rj - scale
                for g in range(G):
                    qg = q_real[p, j, g] - 2j * omega * b[g]
                    log_f += -0.5 * m[g] * cmath.log(qg) + z * b[g] * lam[p, g] / qg
                f = cmath.exp(log_f) * weight
                zf = z * f
                z2f = (1.0 + z) * zf
                main[p, j] += sign * f.real
                ag2[p, j] += z2f.real
                for k in range(n_tangent):
                    qk = q_real[p, j, k] - 2j * omega * b[k]
                    zb = z * b[k]
                    offset = mean_coef + (1.0 - mean_coef) * 4.0 * zb * zb
                    rho_sq = s[k] ** 2 * (m[k] / qk + offset * lam[p, k] / (qk * qk))
                    rho_lin = -2.0 * zb * s[k] * sqrt_lam[p, k] / qk
                    agq[p, j, k] += (zf * rho_sq).real
                    ag2q[p, j, k] += (z2f * rho_sq).real
                    agl[p, j, k] += (zf * rho_lin).real
    return log_scale, main, ag2, agq, ag2q, agl

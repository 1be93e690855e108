"""Fused numba kernels of the contour nodes of the exact finite-N theory (private).

For one parameter point and one contour, :func:`contour_nodes` does in compiled code what
`_finite_n_bromwich` used to do with numpy per node block: the safeguarded Newton solve for
the saddle at each grid value v (the same iteration as ``_finite_n_saddle.solve_xi``, per node
instead of until the whole block has converged), the saddle quantities (``saddle``), the
grid density (``GridSpec.density``) and the Bromwich line integrals (the trapezoid in tau of
``_line_kernels.line_integrals``, same nodes and weights).  Profiling showed the time split
between the numpy Newton loop (~200 small array operations per block, ~40% of the time) and
the line-integral kernel (~55%), so both are here.

Two savings in the line integrals that leave the result unchanged to ~1e-16 of the sum of
magnitudes:

- the tau sum stops once the rest of it is provably negligible: along ``Re z = c`` every
  factor of the integrand (``|Gamma(c + i w)|``, ``|q_g|^{-m_g/2}``, ``exp Re(z b lam / q)``,
  ``|e^{-z r}|``) is non-increasing in w >= 0, so the tail is at most the current magnitude
  times the remaining weight and the largest multiplier of each output;
- complex log-Gamma by the upward recurrence divides by the product once instead of taking
  its log, and the recurrence test avoids the square root of ``abs``.

Digamma and trigamma (scipy.special in the numpy code) are the recurrence to x >= 10 and the
asymptotic series (error < 1e-16 there).
"""

from __future__ import annotations

import cmath
import math

import numpy as np
from numba import njit

from ._line_kernels import _HALF_LOG_2PI, stirling_parts

__all__ = ["contour_nodes", "saddle_targets"]

#: the tau sum stops when its provable tail is below this fraction of every output's sum of
#: magnitudes (measured: results move by < 1e-15 relative)
_TAIL_TOL = 1e-18
#: coarsest-stride tau nodes between two tail tests (a test costs about one node)
_TAIL_EVERY = 4
#: tau strides tried, coarse to fine: 16 h, 8 h, 4 h, 2 h, h (h = the kernel's tau step)
_N_STRIDES = 5
#: two successive strides agreeing to this fraction of the sum of magnitudes end the
#: refinement (geometric convergence: the finer sum is then within ~its square of the h sum)
_STRIDE_RTOL = 1e-13
#: safeguarded Newton: iteration cap and tolerances, as in `_finite_n_saddle.solve_xi`
_MAX_NEWTON = 200
_XI_TOL = 1e-12
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


@njit(cache=True)
def _expit(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True)
def _digamma(x):
    """psi(x), x > 0: recurrence to x >= 10, asymptotic series (7 terms, error < 1e-16)."""
    acc = 0.0
    while x < 10.0:
        acc -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    series = inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (
        1 / 240 - inv2 * (1 / 132 - inv2 * (691 / 32760 - inv2 / 12))))))
    return acc + math.log(x) - 0.5 / x - series


@njit(cache=True)
def _trigamma(x):
    """psi'(x), x > 0: recurrence to x >= 10, asymptotic series (error < 1e-16)."""
    acc = 0.0
    while x < 10.0:
        acc += 1.0 / (x * x)
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    series = inv * (1.0 + inv * (0.5 + inv * (1 / 6 - inv2 * (1 / 30 - inv2 * (
        1 / 42 - inv2 * (1 / 30 - inv2 * (5 / 66 - inv2 * (691 / 2730 - inv2 * 7 / 6))))))))
    return acc + series


@njit(cache=True)
def _saddle(xi, side_h, b, m, lam, b_max, q):
    """Scalar ``_finite_n_saddle.saddle``: c, K, K', K'' at xi; q (G,) written in place."""
    G = b.shape[0]
    if side_h:
        c = -_expit(-xi)
        cp1 = _expit(xi)
        log_abs_gamma = math.lgamma(cp1) - math.log(-c)
        for g in range(G):
            q[g] = 1.0 + 2.0 * (-c) * b[g]
    else:
        e = _expit(xi)
        c = e / (2.0 * b_max)
        cp1 = 1.0 + c
        log_abs_gamma = math.lgamma(c)
        em = _expit(-xi)
        for g in range(G):
            q[g] = em + e * (1.0 - b[g] / b_max)
    k0 = 0.0
    k1 = 0.0
    k2 = 0.0
    for g in range(G):
        qg = q[g]
        k0 += -0.5 * m[g] * math.log(qg) + c * b[g] * lam[g] / qg
        k1 += m[g] * b[g] / qg + b[g] * lam[g] / (qg * qg)
        k2 += 2.0 * m[g] * b[g] ** 2 / (qg * qg) + 4.0 * b[g] ** 2 * lam[g] / (qg * qg * qg)
    psi = _digamma(cp1) - 1.0 / c
    tri = _trigamma(cp1) + 1.0 / (c * c)
    return c, log_abs_gamma + k0, psi + k1, tri + k2


@njit(cache=True)
def _ramp(r, zones):
    """``GridSpec._ramp``: R(r) and B(r) for zones (Z, 3) = (start, end, softness)."""
    big_r = 0.0
    box = 0.0
    for i in range(zones.shape[0]):
        lo, hi, soft = zones[i, 0], zones[i, 1], zones[i, 2]
        xa = (r - lo) / soft
        xb = (r - hi) / soft
        ea, eb = math.erf(xa), math.erf(xb)
        box += 0.5 * (ea - eb)
        anti_a = xa * ea + math.exp(-xa * xa) * _INV_SQRT_PI
        anti_b = xb * eb + math.exp(-xb * xb) * _INV_SQRT_PI
        big_r += 0.5 * soft * (anti_a - anti_b) + 0.5 * (hi - lo)
    return big_r, box


@njit(cache=True)
def _solve(kind, target, side_h, lo, hi, b, m, lam, b_max, grid, zones, q):
    """xi of the saddle whose ell (kind 0), r = K' (kind 1) or grid value v (kind 2) equals
    target: the safeguarded Newton step of ``solve_xi`` with bisection fallback."""
    sign, h_ell, h_r, h_global = grid[0], grid[1], grid[2], grid[3]
    xi = 0.5 * (lo + hi)
    for _ in range(_MAX_NEWTON):
        c, k, k1, k2 = _saddle(xi, side_h, b, m, lam, b_max, q)
        dc = -c * (1.0 + c) if side_h else c * (1.0 - 2.0 * c * b_max)
        if kind == 0:
            g = sign * (k - c * k1 - target)
            slope = abs(c) * k2 * dc
        elif kind == 1:
            g = k1 - target
            slope = k2 * dc
        else:
            big_r, box = _ramp(k1, zones)
            g = sign * (k - c * k1) / h_ell + big_r / h_r + k1 / h_global - target
            slope = k2 * dc * (abs(c) / h_ell + box / h_r + 1.0 / h_global)
        if g < 0.0:
            lo = xi
        elif g >= 0.0:
            hi = xi
        new = xi - g / slope
        if not np.isfinite(new) or new <= lo or new >= hi:
            new = 0.5 * (lo + hi)
        done = abs(new - xi) < _XI_TOL * (1.0 + abs(xi))
        xi = new
        if done or hi - lo < _XI_TOL:
            break
    return xi


@njit(cache=True)
def saddle_targets(kind, targets, side_h, lo, hi, b, m, lam, grid, zones):
    """Saddles at targets (J,) of one kind (see :func:`_solve`) for one point lam (G,).
    grid = (sign, h_ell, h_r, h_global). Returns c, K, K', K'' (J,) and q (J, G)."""
    J, G = targets.shape[0], b.shape[0]
    b_max = b.max()
    out = np.empty((4, J))
    q = np.empty((J, G))
    for j in range(J):
        xi = _solve(kind, targets[j], side_h, lo, hi, b, m, lam, b_max, grid, zones, q[j])
        c, k, k1, k2 = _saddle(xi, side_h, b, m, lam, b_max, q[j])
        out[0, j], out[1, j], out[2, j], out[3, j] = c, k, k1, k2
    return out, q


@njit(cache=True)
def _clog(z):
    """Principal complex log from the real log of |z|^2 and atan2 (half the cost of
    cmath.log in numba; |z| stays within 1e-150..1e150 here, so |z|^2 cannot overflow)."""
    return complex(0.5 * math.log(z.real * z.real + z.imag * z.imag),
                   math.atan2(z.imag, z.real))


@njit(cache=True)
def _clog_right(z):
    """As :func:`_clog` for Re z > 0 (the q_g on the contour): atan instead of atan2."""
    return complex(0.5 * math.log(z.real * z.real + z.imag * z.imag),
                   math.atan(z.imag / z.real))


@njit(cache=True)
def _l1(z):
    """|Re z| + |Im z|, between |z| and sqrt(2) |z|: a cheap magnitude for the tail test."""
    return abs(z.real) + abs(z.imag)


@njit(cache=True)
def _loggamma_shifted(z):
    """``(l, p)`` with Gamma(z) = exp(l) / p (the log of the product p is left to the caller,
    which divides by p instead)."""
    z, series, product = stirling_parts(z)
    return (z - 0.5) * _clog(z) - z + _HALF_LOG_2PI + series, product


@njit(cache=True)
def _tau_node(i, h, sigma, cj, rj, scale, qr, b, m, lam, sqrt_lam, s, K, mean_coef, acc, mag,
              inv_q):
    """Add tau node i (without the factor h) to the sums acc (C,) and magnitudes mag (C,) of
    the outputs [main, ag2, agq (K), ag2q (K), agl (K)]; returns |integrand| there (l1)."""
    tau = i * h
    omega = sigma * math.sinh(tau)
    weight = sigma * math.cosh(tau) / math.pi
    if i == 0:
        weight *= 0.5
    z = cj + 1j * omega
    lg, product = _loggamma_shifted(z)
    log_f = lg - z * rj - scale
    for g in range(b.shape[0]):
        qg = qr[g] - 2j * omega * b[g]
        iq = 1.0 / qg
        inv_q[g] = iq
        log_f += -0.5 * m[g] * _clog_right(qg) + z * b[g] * lam[g] * iq
    f_unit = cmath.exp(log_f) / product  # the integrand without the tau weight
    f = f_unit * weight
    zf = z * f
    z2f = (1.0 + z) * zf
    acc[0] += f.real
    acc[1] += z2f.real
    mag[0] += _l1(f)
    mag[1] += _l1(z2f)
    for k in range(K):
        iq = inv_q[k]
        zb = z * b[k]
        offset = mean_coef + (1.0 - mean_coef) * 4.0 * zb * zb
        rho_sq = s[k] ** 2 * (m[k] * iq + offset * lam[k] * iq * iq)
        rho_lin = -2.0 * zb * s[k] * sqrt_lam[k] * iq
        a_q = zf * rho_sq
        a_2q = z2f * rho_sq
        a_l = zf * rho_lin
        acc[2 + k] += a_q.real
        acc[2 + K + k] += a_2q.real
        acc[2 + 2 * K + k] += a_l.real
        mag[2 + k] += _l1(a_q)
        mag[2 + K + k] += _l1(a_2q)
        mag[2 + 2 * K + k] += _l1(a_l)
    return _l1(f_unit)


@njit(cache=True)
def _agree(acc, mag, n_cls, stride, h):
    """Whether the tau sums of stride and stride / 2 (classes < n_cls and <= n_cls) agree to
    _STRIDE_RTOL of their sums of magnitudes, for every output."""
    for ch in range(acc.shape[1]):
        coarse = 0.0
        for cls in range(n_cls):
            coarse += acc[cls, ch]
        fine = 0.5 * (coarse + acc[n_cls, ch])
        ref = 0.0
        for cls in range(n_cls + 1):
            ref += mag[cls, ch]
        if abs(coarse - fine) * stride * h > _STRIDE_RTOL * 0.5 * stride * h * ref + 1e-300:
            return False
    return True


@njit(cache=True)
def _line_node(sign, cj, rj, k2j, qr, b, m, lam, sqrt_lam, s, n_tangent, tau_step, omega_max,
               centred, out, inv_q):
    """Line integrals at one saddle node (``_line_kernels.line_integrals``, one (p, j)):
    out = [log_scale, main, ag2, agq (K), ag2q (K), agl (K)].

    The tau nodes of that kernel (step h) are visited coarse to fine: every 16th (class 0),
    the 8th between (1), and so on down to the rest (4); the sum stops refining as soon as
    two successive strides agree to _STRIDE_RTOL (the trapezoid of this analytic integrand
    converges geometrically, so the finer one is then within far less of the h sum), and
    the tail beyond a provably negligible node is skipped (see the module docstring).
    """
    K = n_tangent
    n_ch = 2 + 3 * K
    mean_coef = 1.0 if centred else 0.0
    log_lambda_c = 0.0
    for g in range(b.shape[0]):
        log_lambda_c += -0.5 * m[g] * math.log(qr[g]) + cj * b[g] * lam[g] / qr[g]
    scale = math.lgamma(cj) - cj * rj + log_lambda_c
    out[0] = scale
    sigma = 1.0 / math.sqrt(k2j)
    tau_max = math.asinh(omega_max / sigma)
    n_tau = int(math.ceil(tau_max / tau_step)) + 1
    h = tau_max / (n_tau - 1)
    # tail bounds: |z| <= |c| + omega_max and |1 + z| <= 1 + |c| + omega_max on the line, and
    # |2 z b / q| = |1/q - 1| <= 1/Re q + 1 bounds the tilted-mean factors (Re q = qr)
    z_max = abs(cj) + omega_max
    z2_max = z_max * (1.0 + z_max)
    bound = np.empty(n_ch)
    bound[0] = 1.0
    bound[1] = z2_max
    for k in range(K):
        t = 1.0 / qr[k] + 1.0
        mean_part = lam[k] * (1.0 / (qr[k] * qr[k]) if centred else t * t)
        rho_sq_max = s[k] ** 2 * (m[k] / qr[k] + mean_part)
        bound[2 + k] = z_max * rho_sq_max
        bound[2 + K + k] = z2_max * rho_sq_max
        bound[2 + 2 * K + k] = z_max * s[k] * sqrt_lam[k] * t
    acc = np.zeros((_N_STRIDES, n_ch))
    mag = np.zeros((_N_STRIDES, n_ch))
    coarsest = 1 << (_N_STRIDES - 1)
    # any stride's remaining weight is at most int_{tau}^{tau_max + coarsest h} sigma cosh / pi
    sinh_end = math.sinh(tau_max + coarsest * h)
    i_end = n_tau - 1
    n_coarse = 0
    for i in range(0, n_tau, coarsest):
        f_abs = _tau_node(i, h, sigma, cj, rj, scale, qr, b, m, lam, sqrt_lam, s, K,
                          mean_coef, acc[0], mag[0], inv_q)
        n_coarse += 1
        if n_coarse % _TAIL_EVERY == 0 and i < n_tau - 1:
            # |integrand| is non-increasing in omega; sums of |Re| + |Im| overstate sums of
            # magnitudes by <= sqrt 2, hence the factor 2
            rest = 2.0 * f_abs * sigma * (sinh_end - math.sinh(i * h)) / math.pi
            negligible = True
            for ch in range(n_ch):
                if rest * bound[ch] > _TAIL_TOL * coarsest * h * mag[0, ch]:
                    negligible = False
                    break
            if negligible:
                i_end = i
                break
    stride = coarsest
    n_cls = 1
    while stride > 1:
        half = stride // 2
        for i in range(half, i_end + 1, stride):
            _tau_node(i, h, sigma, cj, rj, scale, qr, b, m, lam, sqrt_lam, s, K, mean_coef,
                      acc[n_cls], mag[n_cls], inv_q)
        done = _agree(acc, mag, n_cls, stride, h)
        n_cls += 1
        stride = half
        if done:
            break
    for ch in range(n_ch):
        total = 0.0
        for cls in range(n_cls):
            total += acc[cls, ch]
        out[1 + ch] = stride * h * total
    out[1] *= sign


@njit(cache=True)
def contour_nodes(side_h, v, b, m, lam, s, n_tangent, lo, hi, grid, zones, tau_step,
                  omega_max, centred):
    """Saddle, grid density and line integrals at grid values v (J,) for one point lam (G,).

    Returns c, r, k2, dv/dr (4, J), q (J, G) and the line integrals (J, 2 + 3K) =
    [log_scale, main, ag2, agq (K), ag2q (K), agl (K)] (main in units of e^{log_scale}: Q on
    side H, phi on side phi; see ``_finite_n_saddle.line_integrals_numpy``).
    """
    J, K = v.shape[0], n_tangent
    h_ell, h_r, h_global = grid[1], grid[2], grid[3]
    sad, q = saddle_targets(2, v, side_h, lo, hi, b, m, lam, grid, zones)
    geo = np.empty((4, J))
    lines = np.zeros((J, 3 + 3 * K))
    sqrt_lam = np.sqrt(lam)
    inv_q = np.empty(b.shape[0], dtype=np.complex128)
    sign = -1.0 if side_h else 1.0
    for j in range(J):
        c, k1, k2 = sad[0, j], sad[2, j], sad[3, j]
        box = _ramp(k1, zones)[1]
        geo[0, j], geo[1, j], geo[2, j] = c, k1, k2
        geo[3, j] = abs(c) / h_ell + box / h_r + 1.0 / h_global
        _line_node(sign, c, k1, k2, q[j], b, m, lam, sqrt_lam, s, K, tau_step, omega_max,
                   centred, lines[j], inv_q)
    return geo, q, lines

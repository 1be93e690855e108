"""Reference route of the exact finite-N theory: Talbot-inverted densities (private, slow).

``method="talbot"`` of `geomem.theory.finite_n.finite_n_expectations`: mpmath's Talbot contour
inverts the h-weighted densities of the energy E, which are then integrated against the
Gumbel-type kernels by Gauss-Legendre panels.  Seconds per point, moderate energy ranges only;
it validates the fast Bromwich route by an independent path.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np

__all__ = ["talbot"]


def talbot(b, m, lam, s, n_train, n_tangent, dps=25, panel_nodes=10):
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


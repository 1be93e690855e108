"""Exact draws of the low-energy head of an empirical-score training set (private).

Used by `geomem.numerics.large_n`. It works in the reduced frame of one test point (group g:
a parallel axis along ``xi_g`` when ``lam_g > 0``, and the orthogonal complement), with
standardized coordinates ``eta = y / s`` and energy ``E = sum_g b_g |eta_g - xi_g|^2``.

The head is the set of training points with energy below the cut c. Its points are drawn
exactly from ``p(eta | lo <= E < hi)``, by rejection from the tilted Gaussian
``q_theta ~ p e^{-theta E}``. theta puts the tilted mean energy at ``hi``
(:func:`geomem.theory.energy_tails.energy_saddle`), and the acceptance probability is
``e^{theta (E - hi)}`` on ``[lo, hi)``. Only the parallel coordinates and the orthogonal
squared norms decide acceptance. Orthogonal directions are isotropic and independent of
them. They are drawn in a frame that grows by one axis per point: a new isotropic vector has
N(0, 1) coordinates on the existing axes and a chi_{m - r} length on a new one, which is
Gram-Schmidt in distribution. The head then costs O(K^2) memory per group instead of O(K d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from geomem.theory.energy_tails import (
    energy_cgf,
    energy_cgf_derivatives,
    energy_saddle,
)

__all__ = ["Head", "cut_for_log_probability", "draw_band", "perp_dims"]

#: proposals per rejection batch: at least this many, at most _MAX_BATCH
_MIN_BATCH = 64
_MAX_BATCH = 1 << 20
#: rejection gives up when the expected acceptance is below this (no tilt helps further)
_MIN_ACCEPTANCE = 1e-9
#: hard cap on proposals per band (a wrong acceptance estimate must not loop forever)
_MAX_PROPOSALS = 1e8
#: bisection steps on ln c when inverting the saddle-point lower tail
_BISECTIONS = 40


@dataclass
class Head:
    """Head points in the reduced frame, growing with each band.

    energy (K,); par[g] (K,) parallel coordinate (0 where lam_g = 0); perp[g] (K, r_g)
    orthogonal coordinates in a frame of r_g <= m_perp_g axes (lower-trapezoidal rows).
    """

    n_groups: int
    energy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    par: list = field(default_factory=list)
    perp: list = field(default_factory=list)

    def __post_init__(self):
        self.par = [np.zeros(0) for _ in range(self.n_groups)]
        self.perp = [np.zeros((0, 0)) for _ in range(self.n_groups)]

    @property
    def size(self) -> int:
        return int(self.energy.size)


def perp_dims(m, lam):
    """Orthogonal dimensions per group: m - 1 where x has a component (lam > 0), else m."""
    return (m - (lam > 0)).astype(int)


def cut_for_log_probability(log_p: float, b, m, lam, lo: float = 0.0) -> float:
    """A cut c > lo whose saddle-point lower tail ln P(E < c) is about ``log_p`` (< ln 0.5).

    Parametrised by the saddle z < 0 itself (c = K'(z), ln P ~ K - z K' - ln(-z sqrt(2 pi K''))
    are closed forms in z), so each bisection step costs one evaluation. Exactness does not
    depend on it: any c > lo gives an exact draw.
    """
    def log_tail(z):
        k1, k2 = energy_cgf_derivatives(z, b, m, lam)
        k0 = float(energy_cgf(z, b, m, lam))
        return k0 - z * float(k1) - math.log(-z * math.sqrt(2.0 * math.pi * float(k2)))

    hi = -1e-3 / float(np.max(b))
    z_lo = -1.0 / float(np.max(b))
    while log_tail(z_lo) > log_p:
        z_lo *= 4.0
    if log_tail(hi) < log_p:        # the target lies above the lower-tail regime
        hi_z = hi
    else:
        lo_z, hi_z = z_lo, hi
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo_z + hi_z)
            if log_tail(mid) > log_p:
                hi_z = mid
            else:
                lo_z = mid
    c = float(energy_cgf_derivatives(hi_z, b, m, lam)[0])
    return c if c > lo else lo + math.sqrt(float(energy_cgf_derivatives(0.0, b, m, lam)[1]))


def _propose(n, theta, b, m, lam, rng):
    """n proposals from q_theta: parallel coordinates (n, G), orthogonal squared norms (n, G),
    energies (n,)."""
    q = 1.0 + 2.0 * theta * b
    v = 1.0 / q
    root = np.sqrt(lam)
    m_perp = perp_dims(m, lam)
    # the deviation from xi is drawn directly (its mean is -sqrt(lam) v): forming it as
    # par - sqrt(lam) would cancel at strong tilts, where it is ~1e-150 of sqrt(lam)
    dev = np.where(lam > 0, -root * v + np.sqrt(v) * rng.standard_normal((n, b.size)), 0.0)
    par = np.where(lam > 0, root + dev, 0.0)
    perp_sq = v * rng.chisquare(np.maximum(m_perp, 1), size=(n, b.size)) * (m_perp > 0)
    energy = np.sum(b * (dev**2 + perp_sq), axis=1)
    return par, perp_sq, energy


def draw_band(head: Head, count: int, lo: float, hi: float, log_band: float,
              b, m, lam, rng: np.random.Generator) -> None:
    """Add ``count`` exact draws from ``p(eta | lo <= E < hi)`` to ``head`` (in place).

    log_band: ``ln P(lo <= E < hi)`` (sizes the rejection batches); hi may be inf (no cut).
    """
    if count == 0:
        return
    mean = float(energy_cgf_derivatives(0.0, b, m, lam)[0])
    theta = 0.0 if not math.isfinite(hi) or hi >= mean else -energy_saddle(hi, b, m, lam)
    if theta > 0.0:
        log_acc = log_band - theta * hi - float(energy_cgf(-theta, b, m, lam))
    else:
        log_acc = log_band
    acceptance = math.exp(min(log_acc, 0.0))
    if acceptance < _MIN_ACCEPTANCE:
        raise RuntimeError(f"head sampling: acceptance {acceptance:.1e} is too small")
    pars, sqs, energies = [], [], []
    need = count
    proposed = 0
    while need > 0:
        if proposed > _MAX_PROPOSALS:
            raise RuntimeError(f"head sampling: {proposed} proposals gave too few points in "
                               f"the band [{lo:.6g}, {hi:.6g})")
        n = int(min(_MAX_BATCH, max(_MIN_BATCH, math.ceil(1.3 * need / acceptance))))
        par, perp_sq, energy = _propose(n, theta, b, m, lam, rng)
        proposed += n
        inside = (energy >= lo) & (energy < hi)
        if theta > 0.0:     # theta = 0 (no tilt, hi may be inf): every point inside is kept
            inside &= rng.random(n) < np.exp(np.minimum(theta * (energy - hi), 0.0))
        keep = inside
        idx = np.flatnonzero(keep)[:need]
        pars.append(par[idx])
        sqs.append(perp_sq[idx])
        energies.append(energy[idx])
        need -= idx.size
    par = np.concatenate(pars)
    perp_sq = np.concatenate(sqs)
    _append(head, np.concatenate(energies), par, perp_sq, perp_dims(m, lam), rng)


def _append(head, energy, par, perp_sq, m_perp, rng):
    """Append points with given parallel coordinates and orthogonal norms; their orthogonal
    directions are isotropic, drawn in each group's growing frame."""
    head.energy = np.concatenate([head.energy, energy])
    for g in range(head.n_groups):
        head.par[g] = np.concatenate([head.par[g], par[:, g]])
        head.perp[g] = _grow_frame(head.perp[g], np.sqrt(perp_sq[:, g]), int(m_perp[g]), rng)


def _grow_frame(old, norms, m_perp, rng):
    """Rows (K + n, r') of isotropic vectors in R^m_perp with the given norms, the first K
    rows ``old`` (K, r) kept: each new vector has N(0,1) coordinates on the current r axes and
    a chi_{m_perp - r} length on a new axis while r < m_perp."""
    if m_perp == 0:
        return np.zeros((old.shape[0] + norms.size, 0))
    rows = []
    r = old.shape[1]
    for norm in norms:
        coords = list(rng.standard_normal(r))
        if r < m_perp:
            coords.append(math.sqrt(rng.chisquare(m_perp - r)))
            r += 1
        vec = np.asarray(coords)
        length = np.linalg.norm(vec)
        rows.append(vec * (norm / length) if length > 0 else vec)
    out = np.zeros((old.shape[0] + norms.size, r))
    out[:old.shape[0], :old.shape[1]] = old
    for i, row in enumerate(rows):
        out[old.shape[0] + i, :row.size] = row
    return out

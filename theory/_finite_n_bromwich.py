"""The r integral of the exact finite-N theory by the Bromwich route (private).

``E[sum w^2]``, ``E[sum w |P_k y|^2]`` and ``E[|P_k ybar|^2]`` as integrals over r of the
single-point functions times ``phi^{N-1}`` (module docstring of `geomem.theory.finite_n`): a
partition of unity over r into the moment series (lower r), the contour left of the pole
(side H) and, for small N, the contour right of it (side phi); grids grown block by block and
refined by halving.  The quadrature of each single-point function is in `_finite_n_saddle`.
With ``self_weight`` the query is a training point: every term is damped by its own weight.

The module stays one piece: the series, both contours and the self-weight damping share one
partition of unity over r and one set of grid constants; split, each part would import the
others' private windows and steps.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from ._finite_n_kernels import contour_nodes, saddle_targets
from ._finite_n_saddle import _BRACKETS, _OMEGA_MAX, GridSpec, tau_step

__all__ = ["bromwich", "bromwich_with_mean_projection"]

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
#: most _R_STEP max(1, sd E) elsewhere (see GridSpec)
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
#: self weight: the column e^r e^{-e^r} phi^N is split by an erfc step of width _SERIES_WIDTH at
#: r_lo + _SELF_CUT_OFFSET (6 widths above the grid start, where N (1 - phi) < e^{-40}); below
#: the step phi^N = 1 and the integral is done analytically-exact on a fine grid
#: (`_self_below`), above it the step rises smoothly from 0 so the grids' trapezoid is exact
_SELF_CUT_OFFSET = 6.0 * 0.3
#: fine trapezoid for the below-step part: spacing and reach (integrand ~ e^{-40} beyond)
_SELF_FINE_STEP = 0.02
_SELF_FINE_REACH = 42.0
#: with a self weight every column carries e^{-e^r}, which is 0 in float64 above r = 7
_SELF_DEAD_R = 7.0
#: r range of the fine contour zone with a self weight (e^r e^{-e^r} < e^{-40} outside)
_SELF_ZONE = (-40.0, 5.0)
#: ln phi on side H by log1p (True) or, as before, log(1 - Q) (False: loses N * 1e-16, which
#: at N >= 1e20 turns phi^N = e^{-N Q} into 1 and the expectations into garbage)
_LOG1P_PHI = True
#: ln phi is floored here (phi = 1e-300): phi^N is then 0 for every N >= 2
_LOG_PHI_FLOOR = math.log(1e-300)
#: an ell grid extension stops when the last nodes contribute below this relative amount
_TAIL_RTOL = 1e-15


def _weighted_sums(n, n_tangent, dr, log_phi, ag2, ag_q, ag2_q, ag_l, r, self_cut):
    """Integrand of the r integral times the node weight ``dr`` (P, J, 1 + 3K [+ 1]):
    [N AG2 phi^{N-1}, N AGq phi^{N-1} (K), N AG2q phi^{N-1} + N(N-1) AGl^2 phi^{N-2} (K),
    N AGl phi^{N-1} (K)] — the last block is ``E[xhat_k . P_k ybar]`` (used by FLIPD).

    ``self_cut``: the query is itself a training point of weight ``e^0 = 1`` besides the N
    others, ``1/(1 + Z) = int e^r e^{-e^r (1 + Z)} dr``: every term carries ``e^{-e^r}`` and a
    last column ``e^r e^{-e^r} phi^N`` gives ``E[w_self] = E[1/(1 + Z)]``.
    """
    base = n * dr
    pw1 = np.exp((n - 1.0) * log_phi)
    if self_cut is not None:
        # e^{-e^r}: exactly 1 below r ~ -37 and 0 above r ~ 6.6 in float64
        rc = np.minimum(r, _SELF_DEAD_R)
        log_damp = -np.exp(rc)
        base = base * np.exp(log_damp)
    terms = np.empty(log_phi.shape + (1 + 3 * n_tangent + int(self_cut is not None),))
    terms[..., 0] = base * ag2 * pw1
    terms[..., 1:1 + n_tangent] = (base * pw1)[..., None] * ag_q
    # N (N - 1) AGl^2 phi^{N-2} in log scale: N^2 alone overflows beyond N ~ 1e154
    pair = np.zeros_like(ag_l)
    if n > 1:
        with np.errstate(divide="ignore"):
            log_pair = (np.log(np.abs(base)) + math.log(n - 1.0) + max(n - 2.0, 0.0) * log_phi
                        )[..., None] + 2.0 * np.log(np.abs(ag_l))
        pair = np.sign(base)[..., None] * np.exp(log_pair)
    terms[..., 1 + n_tangent:1 + 2 * n_tangent] = (base * pw1)[..., None] * ag2_q + pair
    terms[..., 1 + 2 * n_tangent:1 + 3 * n_tangent] = (base * pw1)[..., None] * ag_l
    if self_cut is not None:
        rise = 0.5 * special.erfc(-(r - self_cut) / _SERIES_WIDTH)     # 1 - the step
        terms[..., -1] = dr * np.exp(rc + log_damp + n * log_phi) * rise
    return terms


def _log_first_moment(b, m, lam):
    """``ln M_1 = ln E[e^{-E}]`` (P,) for parameter points lam (P, G)."""
    q = 1.0 + 2.0 * b
    return np.sum(-0.5 * m * np.log(q) - b * lam / q, axis=-1)


def _series_terms(b, m, lam, s, n, n_tangent, r, step, self_cut=None):
    """Integrand at nodes r (P, J) from the moment series (exact where it converges; no contour).

    With ``s = e^r`` and ``u = e^{-E}``: ``phi = sum_k (-s)^k M_k / k!``,
    ``A_G[h] = sum_j (-1)^j s^{j+1} M_{j+1}[h] / j!``, ``A_G2[h] = sum_j (-1)^j s^{j+2}
    M_{j+2}[h] / j!`` with the closed-form moments ``M_k[h] = E[h e^{-k E}] = Lambda_h(-k)``.
    The series are entire in s but lose ``E[e^{su}] / E[e^{-su}]`` to cancellation, so each
    node also reports whether it is trustworthy: cancellation below _SERIES_MAX_CANCEL and the
    last of the _SERIES_TERMS terms negligible. Returns ``ln phi`` (P, J), the terms
    (P, J, 1 + 3K) and ``valid`` (P, J).
    """
    k = np.arange(1, _SERIES_TERMS + 3, dtype=float)  # moment orders 1 .. K + 2
    q = 1.0 + 2.0 * k[:, None] * b  # (k, G): 1 - 2 z b at z = -k
    lam_ = lam[:, None, :]  # (P, 1, G)
    log_moment = np.sum(-0.5 * m * np.log(q) - k[:, None] * b * lam_ / q, axis=-1)  # (P, k)
    bk, mk, sk, qk = b[:n_tangent], m[:n_tangent], s[:n_tangent], q[:, :n_tangent]
    lamk = lam_[..., :n_tangent]
    # with a self weight, |P_k (y - x)|^2 instead of |P_k y|^2 (see `line_integrals_numpy`)
    offset = 1.0 if self_cut is not None else 4.0 * (k[:, None] * bk) ** 2
    rho_sq = sk**2 * (mk / qk + offset * lamk / qk**2)  # (P, k, K)
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
    converged = term[..., -1] <= _SERIES_TAIL_RTOL * np.sum(term, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0: an all-zero node, untrusted
        cancel = np.maximum(total_abs / np.abs(q_tail), np.sum(np.abs(t2), -1) / np.abs(ag2))
        valid = (cancel < _SERIES_MAX_CANCEL) & converged & (q_tail < 1.0)
    with np.errstate(over="ignore", invalid="ignore"):  # untrusted nodes are masked later
        terms = _weighted_sums(n, n_tangent, step, log_phi, ag2, ag_q, ag2_q, ag_l, r,
                               self_cut)
    return log_phi, terms, valid


def _contour_terms(side, b, m, lam, s, n, n_tangent, v, steps, self_cut=None):
    """Integrand at contour nodes of unit spacing in the grid variable v of ``steps`` (1, J);
    the trapezoid weight is ``dr = 1 / (dv/dr)``. One fused numba call per block
    (`_finite_n_kernels.contour_nodes`: Newton solves, saddles, line integrals).
    Returns r (1, J), ``ln phi(r)`` (1, J) and the terms (1, J, 1 + 3K).
    """
    lo, hi = _BRACKETS[side]
    geo, _, lines = contour_nodes(side == "H", np.ascontiguousarray(v[0], float), b, m,
                                  np.ascontiguousarray(lam[0], float), s, int(n_tangent), lo,
                                  hi, *_grid_arrays(steps), tau_step(n), _OMEGA_MAX,
                                  self_cut is not None)
    k = n_tangent
    r, dr = geo[1][None], 1.0 / geo[3][None]
    scale = np.exp(lines[:, 0])[None]
    main = lines[:, 1][None] * scale
    # ln phi: on side H phi = 1 - Q with Q as small as 1/N, so log1p keeps (N - 1) ln phi
    # exact; the old log(1 - Q) lost N * 1e-16 there (see _LOG1P_PHI)
    if side == "H" and _LOG1P_PHI:
        # floored as below: phi = 0 (Q = 1) must not give (N - 1) * -inf = NaN at N = 1
        with np.errstate(divide="ignore"):
            log_phi = np.maximum(np.log1p(-np.clip(main, 0.0, 1.0)), _LOG_PHI_FLOOR)
    else:
        phi = 1.0 - main if side == "H" else main
        log_phi = np.log(np.clip(phi, np.exp(_LOG_PHI_FLOOR), 1.0))
    sc = scale[..., None]
    terms = _weighted_sums(n, n_tangent, dr, log_phi, lines[:, 2][None] * scale,
                           lines[:, 3:3 + k][None] * sc, lines[:, 3 + k:3 + 2 * k][None] * sc,
                           lines[:, 3 + 2 * k:3 + 3 * k][None] * sc, r, self_cut)
    return r, log_phi, terms


def _grid_arrays(steps):
    """(sign, h_ell, h_r, h_global) and zones (Z, 3) of a GridSpec, for the numba kernels."""
    grid = np.array([steps.sign, steps.h_ell, steps.h_r, steps.h_global], float)
    return grid, np.array(steps.zones, float).reshape(-1, 3)


def _grid_start(side, b, m, lam, steps, r=None, ell=None):
    """Grid variable v (and ell) at the saddle given by r or ell, for one point lam (1, G)."""
    lo, hi = _BRACKETS[side]
    kind, target = (1, r) if r is not None else (0, ell)
    sad, _ = saddle_targets(kind, np.array([float(target)]), side == "H", lo, hi, b, m,
                            np.ascontiguousarray(lam[0], float), *_grid_arrays(steps))
    c, k0, k1 = sad[0], sad[1], sad[2]
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


def bromwich(b, m, lam, s, n_train, n_tangent):
    """Expectations for P parameter points: b, m, s (G,), lam (P, G) -> (P,), (P,K), (P,K):
    ``E[sum w^2]``, ``E[sum w |P_k y|^2]``, ``E[|P_k ybar|^2]`` (see
    `bromwich_with_mean_projection`)."""
    return bromwich_with_mean_projection(b, m, lam, s, n_train, n_tangent)[:3]


def bromwich_with_mean_projection(b, m, lam, s, n_train, n_tangent, *, self_weight=False):
    """As `bromwich`, plus ``E[xhat_k . P_k ybar]`` (P, K) (the same r integral of A_G[xhat . P y]).

    ``self_weight=True``: the query x is a training point itself, with ``n_train`` others; the
    weights are normalised by ``1 + Z`` (see `_weighted_sums`) and the outputs are
    ``E[sum' w^2]``, ``E[sum' w |P_k (y - x)|^2]`` (P, K) (centred on the query, so FLIPD at
    training points comes without cancellation), two unused (P, K) blocks, and ``E[w_self]``
    (P,); sums over the others.

    The r integral is split by a partition of unity into (i) the moment series where it is
    trustworthy (the lower r range), (ii) the contour left of the pole (side H) above, and
    (iii) where ``phi^{N-1}`` is still alive near the mean energy (small N), the contour right
    of the
    pole (side phi) above the mean, blended with (ii) by erfc windows of width
    ``_WINDOW_WIDTH max(1, sd E)``. Each part is evaluated only where its share exceeds ~1e-12.
    """
    n = float(n_train)
    P = lam.shape[0]
    width_f = 1 + 3 * n_tangent + int(self_weight)
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
    # the self column's e^r e^{-e^r} below the grid: analytic where phi^N = 1 (see _self_below)
    self_cut = r_lo + _SELF_CUT_OFFSET if self_weight else None
    rs = r_lo[:, None] + _SERIES_STEP * np.arange(n_nodes)
    log_phi, terms, valid = _series_terms(b, m, lam, s, n, n_tangent, rs, _SERIES_STEP,
                                          None if self_cut is None else self_cut[:, None])
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
        cut = None if self_cut is None else self_cut[p]
        lower, upper_needed = _lower_contour(*args, r_split[p], contour_lo[p], mean_e[p],
                                             width[p], cut)
        totals[p] += lower
        if upper_needed:
            totals[p] += _upper_contour(*args, r_split[p], contour_lo[p], mean_e[p], width[p],
                                        totals[p], cut)
    if self_cut is not None:
        totals[:, -1] += _self_below(self_cut)
    out = (totals[:, 0], totals[:, 1:1 + n_tangent], totals[:, 1 + n_tangent:1 + 2 * n_tangent],
           totals[:, 1 + 2 * n_tangent:1 + 3 * n_tangent])
    return (*out, totals[:, -1]) if self_weight else out


def _self_below(self_cut):
    """``int e^r e^{-e^r} (1 - rise(r)) dr`` (P,): the self column below its step, where
    ``phi^N = 1`` to e^{-40}; trapezoid on a fine grid (the integrand is entire and vanishes
    at both ends, so the error is spectrally small)."""
    # e^r e^{-e^r} lives on r in [-40, 4]; centre the grid on the step or on that, whichever
    # is lower (a step above r = 4 leaves the whole integral, 1, below it)
    span = np.arange(-_SELF_FINE_REACH, 20.0 * _SERIES_WIDTH, _SELF_FINE_STEP)
    r = np.minimum(self_cut, 4.0)[:, None] + span
    step = 0.5 * special.erfc((r - self_cut[:, None]) / _SERIES_WIDTH)
    rr = np.minimum(r, 700.0)
    return _SELF_FINE_STEP * np.sum(np.exp(rr - np.exp(rr)) * step, axis=1)


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


def _grid_spec(side, h_ell, r_split, contour_lo, width, self_cut=None):
    """Grid of one contour: fine in r across the series hand-over window, and everywhere at
    most ``_R_STEP max(1, sd E)`` (= ``width / 2``) apart in r. With a self weight also fine
    (_R_STEP) over _SELF_ZONE, where ``e^r e^{-e^r}`` and the damping ``e^{-e^r}`` vary on the
    scale 1 of r."""
    zones = [(contour_lo, r_split + _WINDOW_REACH * _SERIES_WIDTH, _SERIES_WIDTH)]
    if self_cut is not None:
        zones.append((*_SELF_ZONE, _SERIES_WIDTH))
    return GridSpec(side, h_ell, _R_STEP, zones, width / _WINDOW_WIDTH)


def _contour_nodes(side, b, m, lam, s, n, n_tangent, spec, v, self_cut):
    """r (J,), alive-masked terms (J, F) at grid values v (J,) for one point lam (1, G)."""
    r, log_phi, terms = _contour_terms(side, b, m, lam, s, n, n_tangent, v[None, :], spec,
                                       self_cut)
    return r[0], log_phi[0], terms[0]


def _refine(side, b, m, lam, s, n, n_tangent, spec, v, r, terms, r_dead, weight, reference,
            self_cut):
    """Trapezoid sum over the unit-spaced grid v, halved until it is converged.

    terms (J, F) are the (unweighted) integrand times dr at v; ``weight(r)`` the windows.
    Each halving adds the midpoints; it stops when the sum moves by less than _REFINE_RTOL
    (relative to |sum| + |reference|) or after _MAX_REFINE halvings (the trapezoid rule on
    this analytic integrand converges geometrically, so the last change bounds the error).
    """
    def weighted(r_nodes, t_nodes):
        return (weight(r_nodes) * (r_nodes < r_dead)) @ t_nodes

    if math.isfinite(r_dead):
        # nodes past the first dead one (weight 0, and so are their midpoints: r grows with
        # v) are dropped before the halvings, which would otherwise refine them too
        keep = int(np.searchsorted(r, r_dead, side="left")) + 1
        v, r, terms = v[:keep], r[:keep], terms[:keep]
    h = 1.0
    total = weighted(r, terms)
    for _ in range(_MAX_REFINE):
        mid = v + 0.5 * h
        r_mid, _, t_mid = _contour_nodes(side, b, m, lam, s, n, n_tangent, spec, mid,
                                         self_cut)
        new_total = 0.5 * (total + h * weighted(r_mid, t_mid))
        v = np.sort(np.concatenate([v, mid]))
        h *= 0.5
        change = np.abs(new_total - total)
        total = new_total
        if np.all(change <= _REFINE_RTOL * (np.abs(total) + np.abs(reference)) + 1e-300):
            break
    return total


def _grow(side, b, m, lam, s, n, n_tangent, spec, v_start, weight, reference, stop,
          self_cut):
    """Extend a contour grid block by block from ``v_start`` (one point lam (1, G)).

    Stops where ``phi^{N-1}`` dies (nothing beyond contributes), or where
    ``stop(last r, small)`` says so, ``small`` meaning that the last nodes' weighted terms are
    below _TAIL_RTOL of the running sum (plus ``reference``). Returns v (J,), r (J,), terms
    (J, F) (unweighted) and the r of death (inf if alive throughout).
    """
    v_blocks, r_blocks, t_blocks = [], [], []
    sums = np.zeros(1 + 3 * n_tangent + int(self_cut is not None))
    start = 0
    while True:
        v = v_start + np.arange(start, start + _ELL_BLOCK, dtype=float)
        r, log_phi, terms = _contour_nodes(side, b, m, lam, s, n, n_tangent, spec, v,
                                           self_cut)
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


def _lower_contour(b, m, lam, s, n, n_tangent, r_split, contour_lo, mean_e, width,
                   self_cut):
    """Side-H contour for one point (lam (1, G)) from the series hand-over upwards.

    The grid runs (:func:`_grow`) until ``phi^{N-1}`` dies, the nodes become negligible or r
    passes the mean energy + reach w; then it is refined
    (:func:`_refine`). Returns the (1 + 3K,) sums and whether the upper contour is needed:
    when ``phi^{N-1}`` dies below the mean energy the lower contour (accurate up to the mean
    and beyond) covers everything; otherwise it is blended with the upper contour there.
    """
    spec = _grid_spec("H", _ELL_STEP_H, r_split, contour_lo, width, self_cut)
    v_start, ell_lo = _grid_start("H", b, m, lam, spec, r=contour_lo)
    if ell_lo < -math.log(n) - _ELL_BELOW:  # start where N P(E < r) ~ e^{-42} instead
        v_start, _ = _grid_start("H", b, m, lam, spec, ell=-math.log(n) - _ELL_BELOW)

    def series_share(r_nodes):
        return 1.0 - _series_window(r_nodes, r_split)

    reach = mean_e + _WINDOW_REACH * width
    v, r, terms, r_dead = _grow("H", b, m, lam, s, n, n_tangent, spec, v_start, series_share,
                                0.0, lambda r_last, small: small or r_last > reach, self_cut)
    need_upper = r_dead > mean_e

    def weight(r_nodes):
        w = series_share(r_nodes)
        if need_upper:
            w = w * 0.5 * special.erfc((r_nodes - mean_e) / width)
        return w

    return _refine("H", b, m, lam, s, n, n_tangent, spec, v, r, terms, r_dead, weight,
                   0.0, self_cut), need_upper


def _upper_contour(b, m, lam, s, n, n_tangent, r_split, contour_lo, mean_e, width, reference,
                   self_cut):
    """Side-phi contour for one point from ``max(mean - reach w, hand-over)`` upwards, window
    ``erfc(-(r - mean)/w)/2``; ell (~ ln phi) descends in steps of at most min(_ELL_STEP_PHI,
    _PHI_STEP_N / N) so that ``phi^{N-1} ~ e^{(N-1) ell}`` is resolved for every N; grown
    past the mean until negligible (:func:`_grow`), then refined (:func:`_refine`)."""
    r_start = max(mean_e - _WINDOW_REACH * width, contour_lo)
    if self_cut is not None and r_start > _SELF_DEAD_R:    # all damped to 0 there
        return np.zeros(2 + 3 * n_tangent)
    spec = _grid_spec("phi", min(_ELL_STEP_PHI, _PHI_STEP_N / n), r_split, contour_lo, width,
                      self_cut)
    v_start, _ = _grid_start("phi", b, m, lam, spec, r=r_start)

    def weight(r_nodes):
        return ((1.0 - _series_window(r_nodes, r_split))
                * 0.5 * special.erfc(-(r_nodes - mean_e) / width))

    v, r, terms, r_dead = _grow("phi", b, m, lam, s, n, n_tangent, spec, v_start, weight,
                                reference, lambda r_last, small: small and r_last > mean_e,
                                self_cut)
    return _refine("phi", b, m, lam, s, n, n_tangent, spec, v, r, terms, r_dead, weight,
                   reference, self_cut)



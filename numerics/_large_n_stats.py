"""Head plus tail: weight statistics, error bounds and the Jacobian spectrum (private).

Used by `geomem.numerics.large_n` (construction and error model in its docstring). All sums
are in units of ``e^{-E_min}``, E_min the lowest head energy, so the head's largest term is 1
and the tail's share ``(N - K) e^{E_min} E[e^{-E} | tail] <= N`` stays finite.

Tail moments come from `geomem.theory.energy_tails.truncated_moments` with tilted means
(shapes (J, G) -> (J, H)). At tilt -1: ``[1, mu_g, M_gh, perp_g, energy]``, with
``M_gh = mu_g mu_h + delta_gh v_g`` the parallel second moments and ``perp_g = m_perp v_g``.
At tilt -2: ``[1, quartic_g, quartic_total]``, centred fourth moments
``E|y_g - ybar_g|^4`` (y = s eta) for the error bounds. At tilt -4: ``[1]``.
"""

from __future__ import annotations

import math

import numpy as np

from geomem.theory.energy_tails import truncated_moments, unit_moments
from geomem.theory.phase import LOSS_FRACTION

from ._large_n_head import perp_dims
from .retained import projected_retained_dimension

__all__ = ["finish_draw", "tail_statistics"]


def _first_moments(b, m, lam):
    """Tilted means at tilt -1 (module docstring), as a function of (q, v, mu)."""
    m_perp = perp_dims(m, lam).astype(float)

    def moments(q, v, mu):
        pair = mu[..., :, None] * mu[..., None, :] + np.eye(b.size) * v[..., :, None]
        energy = np.sum(b * (m * v + lam * v**2), axis=-1, keepdims=True)
        return np.concatenate([np.ones_like(energy), mu, pair.reshape(q.shape[:-1] + (-1,)),
                               m_perp * v, energy], axis=-1)
    return moments


def _quartic_moments(m, lam, stds, centre_par, centre_perp_sq):
    """Centred fourth moments at tilt -2 about the weighted mean (eta units per group)."""
    has_par = lam > 0

    def moments(q, v, mu):
        shift_sq = np.where(has_par, (mu - centre_par) ** 2, 0.0) + centre_perp_sq
        second = m * v + shift_sq
        fourth = second**2 + 2.0 * m * v**2 + 4.0 * v * shift_sq
        s2, s4 = stds**2, stds**4
        total = np.sum(s2 * second, -1, keepdims=True) ** 2 + np.sum(
            s4 * (fourth - second**2), -1, keepdims=True)
        return np.concatenate([np.ones_like(total), s4 * fourth, total], axis=-1)
    return moments


def _tail(n_tail, c, log_q, z0, e_min, b, m, lam, moments):
    """``(N - K) e^{|z0| E_min} E[e^{z0 E} h | E >= c]`` (H,) (zeros without a tail)."""
    if n_tail <= 0 or log_q == -math.inf or not math.isfinite(c):
        q0 = np.ones((1, b.size))
        return np.zeros(moments(q0, q0, 0.0 * q0).shape[-1])
    log_total, _, upper, _ = truncated_moments(c, z0, b, m, lam, moments)
    base = math.log(n_tail) - z0 * e_min + log_total - log_q
    # combined in log scale: the factor alone can overflow where upper is tiny
    with np.errstate(divide="ignore"):
        return np.sign(upper) * np.exp(base + np.log(np.abs(upper)))


def tail_statistics(head, n, c, log_q, b, m, lam, stds) -> dict:
    """Weight statistics of head + tail and the tail's relative error (dict of floats and
    arrays; ``u`` are the head's scaled weights)."""
    G = b.size
    e_min = float(head.energy.min())
    u = np.exp(e_min - head.energy)
    n_tail = n - head.size
    t1 = _tail(n_tail, c, log_q, -1.0, e_min, b, m, lam, _first_moments(b, m, lam))
    z = u.sum() + t1[0]
    par_sum = np.array([u @ head.par[g] for g in range(G)]) + t1[1:1 + G]
    pair = t1[1 + G:1 + G + G * G].reshape(G, G)
    perp_tail = t1[1 + G + G * G:1 + 2 * G + G * G]
    has_par = lam > 0
    par_mean = np.where(has_par, par_sum / z, 0.0)
    perp_mean = [u @ head.perp[g] / z for g in range(G)]
    perp_mean_sq = np.array([float(pm @ pm) for pm in perp_mean])
    # traces about the lowest-energy head point (no cancellation once the score condenses):
    # sum w |y_g - ref_g|^2 - |ybar_g - ref_g|^2, the tail's orthogonal mean being 0
    i_ref = int(np.argmax(u))
    z_tail = t1[0]
    traces = np.empty(G)
    for g in range(G):
        dp = head.par[g] - head.par[g][i_ref]
        dq = head.perp[g] - head.perp[g][i_ref]
        ref_par, ref_perp_sq = head.par[g][i_ref], float(head.perp[g][i_ref] @ head.perp[g][i_ref])
        tail_sq = ((pair[g, g] if has_par[g] else 0.0) + perp_tail[g]
                   - 2.0 * ref_par * t1[1 + g] + (ref_par**2 + ref_perp_sq) * z_tail)
        second = float(u @ dp**2) + float(np.sum(u @ dq**2)) + tail_sq
        mean_par = (float(u @ dp) + t1[1 + g] - ref_par * z_tail) / z
        mean_perp = (u @ dq - head.perp[g][i_ref] * z_tail) / z
        traces[g] = stds[g] ** 2 * max(second / z - mean_par**2 - float(mean_perp @ mean_perp),
                                       0.0)
    s2_sum = float(u @ u)
    mean_energy = (float(u @ head.energy) + t1[-1]) / z
    out = {"u": u, "z": z, "e_min": e_min, "tail_first": t1, "pair": pair,
           "perp_tail": perp_tail, "traces": traces}
    if n_tail > 0 and math.isfinite(c) and log_q > -math.inf:
        t2 = _tail(n_tail, c, log_q, -2.0, e_min, b, m, lam,
                   _quartic_moments(m, lam, stds, par_mean, perp_mean_sq))
        t4 = _tail(n_tail, c, log_q, -4.0, e_min, b, m, lam, unit_moments)
        s2 = s2_sum + t2[0]
        rel_z = math.sqrt(t2[0]) / z
        rel_s2 = math.sqrt(t4[0]) / s2 + 2.0 * rel_z
        spread = [np.sqrt(t2[1:1 + G]), np.sqrt(t2[-1:])]
        scale = [z * traces, z * np.array([traces.sum()])]
        with np.errstate(divide="ignore", invalid="ignore"):
            # a zero spread is no error even where the trace is 0 (one point holds all)
            rel = [np.where(num > 0, num / den, 0.0) + rel_z
                   for num, den in zip(spread, scale, strict=True)]
        errors = np.concatenate([[rel_z, rel_s2], *rel])
        out["tail_error"] = float(np.max(np.where(np.isfinite(errors), errors, np.inf)))
    else:
        s2 = s2_sum
        out["tail_error"] = 0.0
    out["sum_w2"] = s2 / z / z       # z**2 overflows where z ~ N ~ 1e300
    out["entropy"] = mean_energy - e_min + math.log(z)
    return out


def finish_draw(stats, head, n_subspaces, d, b, m, lam, stds, a, delta, c,
                threshold=LOSS_FRACTION):
    """The per-draw row of `EmpiricalJacobianDraws`: eigenvalues (d,) ascending, then the
    weight statistics, subspace traces, head size, tail error, cut and the retained dimension
    per subspace ("projection" definition at ``threshold``, `geomem.numerics.retained`).

    C_w is assembled in the frame spanned by the parallel axes and the head's orthogonal
    coordinates (R <= G (K + 1)), centred on the lowest-energy head point so that a condensed
    score loses no precision; each group's remaining orthogonal directions carry the tail's
    per-direction second moment, and zero-std directions carry 0.
    """
    G = b.size
    z, u, t1 = stats["z"], stats["u"], stats["tail_first"]
    has_par = lam > 0
    blocks, tail_diag, tail_mean, owner, par_cols = [], [], [], [], {}
    for g in range(G):
        if has_par[g]:
            par_cols[g] = sum(x.shape[1] for x in blocks)
            blocks.append(stds[g] * head.par[g][:, None])
            tail_diag.append([0.0])
            tail_mean.append([stds[g] * t1[1 + g]])
            owner.append([g])
        r = head.perp[g].shape[1]
        blocks.append(stds[g] * head.perp[g])
        m_perp = m[g] - has_par[g]
        alpha = stats["perp_tail"][g] / m_perp if m_perp > 0 else 0.0
        tail_diag.append([stds[g] ** 2 * alpha] * r)
        tail_mean.append([0.0] * r)
        owner.append([g] * r)
    Y = np.concatenate(blocks, axis=1)                       # (K, R) physical units
    tail_diag = np.concatenate(tail_diag)
    tail_mean = np.concatenate(tail_mean)
    owner = np.concatenate(owner).astype(int)
    ref = Y[int(np.argmax(u))]                               # lowest-energy head point
    D = Y - ref
    # tail second moment about ref: S - ref m^T - m ref^T + Z_tail ref ref^T
    S = np.diag(tail_diag)
    for g, i in par_cols.items():
        for h, j in par_cols.items():
            S[i, j] = stds[g] * stds[h] * stats["pair"][g, h]
    z_tail = t1[0]
    S = S - np.outer(ref, tail_mean) - np.outer(tail_mean, ref) + z_tail * np.outer(ref, ref)
    mean = (u @ D + tail_mean - z_tail * ref) / z              # ybar - ref
    C = (D.T * u) @ D / z + S / z - np.outer(mean, mean)
    frame_eig, vectors = np.linalg.eigh(0.5 * (C + C.T))
    eig = [frame_eig]
    # energy of each eigenvector in each tangent subspace (its frame rows owned by k)
    energy = [np.stack([np.sum(vectors[owner == k] ** 2, axis=0)
                        for k in range(n_subspaces)], axis=-1)]
    traces = np.array([np.trace(C[np.ix_(owner == g, owner == g)]) for g in range(G)])
    for g in range(G):
        m_perp = int(m[g] - has_par[g])
        rest = m_perp - head.perp[g].shape[1]
        if rest > 0:
            alpha = stats["perp_tail"][g] / m_perp
            eig.append(np.full(rest, stds[g] ** 2 * alpha / z))
            energy.append(np.outer(np.ones(rest), np.arange(n_subspaces) == g))
            traces[g] += rest * stds[g] ** 2 * alpha / z
    n_zero = d - int(m.sum())   # zero-std directions: in no tangent subspace
    eigenvalues = -1.0 / delta + (a**2 / delta**2) * np.concatenate(eig)
    retained = projected_retained_dimension(
        np.abs(eigenvalues), np.concatenate(energy), stds[:n_subspaces] ** 2, a, delta,
        threshold)
    eigenvalues = np.sort(np.concatenate([eigenvalues, np.full(n_zero, -1.0 / delta)]))
    sum_w2 = stats["sum_w2"]
    with np.errstate(divide="ignore"):
        participation = 1.0 / sum_w2     # inf only where sum w^2 underflows (N_eff > 1e308)
    return (eigenvalues, participation, sum_w2, stats["entropy"], 1.0 / z,
            traces[:n_subspaces], head.size, stats["tail_error"], c, retained)

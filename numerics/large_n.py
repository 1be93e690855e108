"""Per-point Monte Carlo of the empirical score at any N, without the training set.

`sample_empirical_jacobians` draws, for each of ``draws`` independent training sets of size N
(2 <= N <= 1e300) from a Gaussian `LinearManifold`, the exact Jacobian spectrum and the weight
statistics of the empirical score at one test point. Only the training points that carry
weight are drawn.

Construction (test point fixed; energies ``E_mu`` i.i.d. generalized chi-square,
`geomem.theory.energy_tails`):

- **Head.** The points with ``E < c``. Their number is Binomial(N, P(E < c)), or
  Poisson(N P) for N > 2^62 (total-variation error <= P, below 1e-15 wherever such N is
  used). P is computed exactly, in log scale, by a Bromwich integral. The points are drawn
  exactly from ``p(y | E < c)`` (`_large_n_head`).
- **Tail.** The points with ``E >= c``. Their sums ``sum e^{-E} (1, y, y y^T, E)`` and
  ``sum e^{-2E}`` are replaced by ``(N - K)`` times their conditional means, which are exact
  truncated Gaussian integrals. By symmetry the tail's second moment is a multiple of the
  identity on each group's complement of x, plus a G x G block on the parallel axes.
- **Error.** Replacing a sum of n i.i.d. terms by its mean has standard error
  ``sqrt(n Var)``, bounded here by ``sqrt(n E[term^2])``. ``tail_error`` is the largest
  relative standard error among Z, ``sum w^2``, each subspace trace of the weighted covariance
  C_w, and the Frobenius norm of C_w relative to ``tr C_w``. The last bounds every eigenvalue
  by Weyl's inequality. Ratios add the error of Z once (or twice for ``sum w^2``); centred
  moments use an upper bound on the orthogonal part of the weighted mean.
- **Adaptive cut.** c starts where E[K] = 8. While ``tail_error > tol`` or the head is empty,
  c moves up so that E[K] doubles. The new band's count is Binomial(N - K, P(c <= E < c') /
  P(E >= c)), and its points are drawn exactly from the band, so the head stays an exact
  draw.

N <= ``max_head`` draws every point (no tail). The cost per draw is O(K^2 G + R^3) with
R <= G (K + 1), the size of the frame of the eigenproblem. It is small in the memorization
regime, which is where brute force needs astronomically many points. Where the score does
not condense at large N, the head outgrows ``max_head`` and a ValueError says so.

Shapes: eigenvalues (draws, d) ascending (units 1/Delta, as `jacobian_spectrum`), weight
statistics (draws,), subspace_traces (draws, K_subspaces).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from geomem.theory._checks import (
    as_generator,
    as_real,
    check_choice,
    check_finite_array,
    check_int,
    show,
)
from geomem.theory.energy_tails import energy_cgf_derivatives, energy_log_cdf
from geomem.theory.manifold import LinearManifold, check_gaussian_manifold
from geomem.theory.phase import LOSS_FRACTION
from geomem.theory.schedules import Schedule, get_schedule

from ._large_n_head import Head, cut_for_log_probability, draw_band
from ._large_n_stats import finish_draw, tail_statistics

__all__ = ["MAX_N_TRAIN", "EmpiricalJacobianDraws", "sample_empirical_jacobians"]

#: largest N accepted: (N - K) e^{E_min} E[e^{-E} | tail] <= N must stay finite in float64
MAX_N_TRAIN = 1e300
#: expected head size of the first cut; each extension doubles it
_FIRST_HEAD = 8.0
#: exact integer binomial counts up to 2^62 (numpy's int64); Poisson above
_BINOMIAL_MAX_N = 2.0**62
#: a doubling that would pass this lower-tail probability moves c by one sd of E instead
_SADDLE_MAX_P = 0.3


@dataclass(frozen=True)
class EmpiricalJacobianDraws:
    """Per-draw exact Jacobian spectra and weight statistics (leading axis: draws).

    Attributes (names as in `JacobianSpectrum`):
        eigenvalues (draws, d): eigenvalues of the empirical-score Jacobian, ascending.
        participation_ratio, sum_w2, entropy, max_weight (draws,).
        subspace_traces (draws, K): ``tr(P_k C_w P_k)`` per tangent subspace (units y^2).
        head_size (draws,): training points drawn explicitly (all N when N <= max_head).
        tail_error (draws,): relative standard error of the tail replacement (module doc).
        cutoff (draws,): the final energy cut c (inf when every point is drawn).
        retained_dimension (draws, K): retained dimension per tangent subspace, the
            "projection" definition of `geomem.numerics.retained` at ``threshold``.
        a, delta: schedule values at t; n_train: N.
    """

    eigenvalues: np.ndarray
    participation_ratio: np.ndarray
    sum_w2: np.ndarray
    entropy: np.ndarray
    max_weight: np.ndarray
    subspace_traces: np.ndarray
    head_size: np.ndarray
    tail_error: np.ndarray
    cutoff: np.ndarray
    retained_dimension: np.ndarray
    a: float
    delta: float
    n_train: float


def _check_n(n_train: Any) -> float:
    if isinstance(n_train, bool):
        raise ValueError(f"n_train must be a number in [2, {MAX_N_TRAIN:g}], got {n_train!r}")
    value = float(as_real("n_train", n_train)) if np.ndim(n_train) == 0 else math.nan
    if not (2.0 <= value <= MAX_N_TRAIN) or value != math.floor(value):
        raise ValueError(f"n_train out of range: allowed an integer 2 <= n_train <= "
                         f"{MAX_N_TRAIN:g}, got {show(n_train)}")
    return value


def _check_unit_interval(name: str, value: Any) -> float:
    """A real scalar in the open interval (0, 1), else a ValueError naming it."""
    number = float(as_real(name, value)) if np.ndim(value) == 0 and not \
        isinstance(value, bool) else math.nan
    if not 0.0 < number < 1.0:
        raise ValueError(f"{name} out of range: allowed 0 < {name} < 1, got {show(value)}")
    return number


def _test_points(x, model, draws, a, delta, stds, dims, group, rng):
    """lam (draws, G): squared standardized norms |x_g|^2 / (a s_g)^2 per group."""
    if isinstance(x, str) or x is None:
        check_choice("x", "fresh" if x is None else x, ("fresh", "origin"))
        if x == "origin":
            return np.zeros((draws, stds.size))
        # fresh x ~ p_t: |x_g|^2 = (a^2 s_g^2 + Delta) chi^2_{m_g}
        return (1.0 + delta / (a**2 * stds**2)) * rng.chisquare(dims, size=(draws, stds.size))
    pts = check_finite_array("x", x, last_dim=model.d)
    if pts.ndim == 1:
        pts = np.broadcast_to(pts, (draws, model.d))
    if pts.ndim != 2 or pts.shape[0] != draws:
        raise ValueError(f"x must have shape (d,) or (draws, d) = ({draws}, {model.d}), got "
                         f"{pts.shape}")
    coords = pts @ model.basis
    sq = np.stack([np.sum(coords[:, group == g] ** 2, axis=1) for g in range(stds.size)], -1)
    return sq / (a**2 * stds**2)


def sample_empirical_jacobians(model: LinearManifold, t: float, n_train: float,
                               schedule: Schedule | str, x: Any = "fresh", *, draws: int = 64,
                               seed: Any = None, tol: float = 1e-3, max_head: int = 4096,
                               threshold: float = LOSS_FRACTION, progress: bool = False
                               ) -> EmpiricalJacobianDraws:
    """Exact per-draw Jacobian spectra of the empirical score at N up to 1e300 (module doc).

    model: un-normalised `LinearManifold`; t: one time; n_train: integer N in [2, 1e300];
    schedule: object or name; x: "fresh" (a new x ~ p_t per draw), "origin", or test points
    (d,) or (draws, d); draws >= 1 training sets; seed: int, Generator or None; tol in
    (0, 1): bound on ``tail_error``; max_head: most points drawn per training set;
    threshold in (0, 1): gap fraction a direction must keep to count as retained
    (`geomem.theory.phase.gap_retained`).
    """
    model = check_gaussian_manifold(model, "the head/tail construction needs Gaussian "
                                           "training points")
    schedule = get_schedule(schedule)
    t_arr = schedule.check_scalar_time(t)
    n = _check_n(n_train)
    draws = check_int("draws", draws, minimum=1)
    max_head = check_int("max_head", max_head, minimum=1)
    tol_val = _check_unit_interval("tol", tol)
    th_val = _check_unit_interval("threshold", threshold)
    rng = as_generator("seed", seed)
    a, delta = float(schedule.a(t_arr)), float(schedule.delta(t_arr))
    stds, dims, group = model.energy_groups()
    lam = _test_points(x, model, draws, a, delta, stds, dims, group, rng)
    b = a**2 * stds**2 / (2.0 * delta)
    rows = []
    iterator = range(draws)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc="draws", unit="draw")
    for i in iterator:
        rows.append(_one_draw(n, b, dims, lam[i], stds, model, a, delta, tol_val, max_head,
                              th_val, rng))
    cols = list(zip(*rows, strict=False))
    return EmpiricalJacobianDraws(*(np.asarray(c) for c in cols), a=a, delta=delta, n_train=n)


def _one_draw(n, b, m, lam, stds, model, a, delta, tol, max_head, threshold, rng):
    """One training set: the head drawn, the cut raised until the tail error is below tol."""
    head = Head(b.size)

    def finish(stats, cut):
        return finish_draw(stats, head, model.n_subspaces, model.d, b, m, lam, stds, a, delta,
                           cut, threshold)

    if n <= max_head:       # every point drawn: exact, no tail
        draw_band(head, int(n), 0.0, math.inf, 0.0, b, m, lam, rng)
        stats = tail_statistics(head, n, math.inf, -math.inf, b, m, lam, stds)
        return finish(stats, math.inf)
    c = cut_for_log_probability(math.log(_FIRST_HEAD / n), b, m, lam)
    log_f, log_q = energy_log_cdf(c, b, m, lam)
    count = _count(n, log_f, rng)
    _check_head(count, max_head)
    draw_band(head, count, 0.0, c, log_f, b, m, lam, rng)
    sd = math.sqrt(float(energy_cgf_derivatives(0.0, b, m, lam)[1]))
    while True:
        stats = tail_statistics(head, n, c, log_q, b, m, lam, stds) if head.size else None
        if stats is not None and stats["tail_error"] <= tol:
            return finish(stats, c)
        # raise the cut so that E[K] doubles (saddle-point inverse), or by one sd of E
        if log_f + math.log(2.0) < math.log(_SADDLE_MAX_P):
            c_new = cut_for_log_probability(log_f + math.log(2.0), b, m, lam, lo=c)
        else:
            c_new = c + sd
        log_f_new, log_q_new = energy_log_cdf(c_new, b, m, lam)
        if log_f_new < math.log(0.5):
            band = math.exp(log_f_new - log_q) * -math.expm1(log_f - log_f_new)
            log_band = log_f_new + math.log(-math.expm1(log_f - log_f_new))
        else:
            band = -math.expm1(log_q_new - log_q)
            log_band = log_q + math.log(band) if band > 0 else -math.inf
        count = _count(n - head.size, math.log(band) if band > 0 else -math.inf, rng)
        _check_head(head.size + count, max_head)
        draw_band(head, count, c, c_new, log_band, b, m, lam, rng)
        c, log_f, log_q = c_new, log_f_new, log_q_new


def _count(n, log_p, rng):
    """Binomial(n, p) for n <= 2^62, else Poisson(n p) (TV error <= p)."""
    if log_p == -math.inf:
        return 0
    p = min(math.exp(log_p), 1.0)
    if n <= _BINOMIAL_MAX_N:
        return int(rng.binomial(int(n), p))
    mean = n * p
    if mean > 1e12:
        raise ValueError(f"the empirical score does not condense here: the head would hold "
                         f"~{mean:.2g} points; use fewer training points (n_train) or brute "
                         "force")
    return int(rng.poisson(mean))


def _check_head(size, max_head):
    if size > max_head:
        raise ValueError(f"the head needs more than max_head = {max_head} points to reach the "
                         "tolerance (the score does not condense at this t and N); raise "
                         "max_head or tol, or use brute force (jacobian_spectrum)")


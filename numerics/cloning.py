"""Reverse SDE and the cloning experiment of Biroli, Bonnaire, de Bortoli & Mézard 2024.

The reverse-time SDE of a noising process ``x_t = a(t) y + sqrt(Delta(t)) xi`` is integrated by
the ancestral step of Song et al. (2021), which needs only a(t) and Delta(t), so it serves every
schedule: from t to s < t, with ``alpha = a(t)/a(s)`` and ``beta^2 = Delta(t) - alpha^2
Delta(s)`` (the forward transition s -> t),

    x_s = (x_t + beta^2 score(x_t, t)) / alpha + (beta / alpha) z,       z ~ N(0, I).

For VE it is Euler-Maruyama; it is first-order accurate in the step (tested against the exact
marginal variance of Gaussian data).  The grid is uniform in ln SNR.

Cloning (`cloning_experiment`): ``n_pairs`` trajectories start at ``x ~ p_{t_start}``
(a Gaussian of the noised data's mean and covariance is *not* assumed: the caller passes the
start states) and run down; at each cloning time t_c every trajectory is copied twice and
both copies run on with independent noise to ``t_end``; ``label`` classifies the end states.
The same-label fraction at t_c estimates ``phi(t_c)`` of `geomem.theory.cloning_probability`.

Shapes: states (n, d) float64; score(x (n, d), t) -> (n, d).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from geomem.theory._checks import check_finite_array, check_int
from geomem.theory.schedules import Schedule, get_schedule

__all__ = ["CloningResult", "cloning_experiment", "log_snr_grid", "reverse_sde"]

ScoreFn = Callable[[np.ndarray, float], np.ndarray]


def log_snr_grid(schedule: Schedule | str, t_start: float, t_end: float, steps: int
                 ) -> np.ndarray:
    """``steps + 1`` times from t_start down to t_end, uniform in ln SNR (decreasing t)."""
    schedule = get_schedule(schedule)
    steps = check_int("steps", steps, minimum=1)
    t_start = float(schedule.check_scalar_time(t_start, "t_start"))
    t_end = float(schedule.check_scalar_time(t_end, "t_end"))
    lo, hi = float(schedule.log_snr(t_start)), float(schedule.log_snr(t_end))
    times = np.asarray(schedule.time_at_log_snr(np.linspace(lo, hi, steps + 1)), dtype=float)
    times[0], times[-1] = t_start, t_end          # exact ends despite round-off
    return times


def _step(score: ScoreFn, schedule: Schedule, x: np.ndarray, t: float, s: float,
          rng: np.random.Generator) -> np.ndarray:
    alpha = float(schedule.a(t)) / float(schedule.a(s))
    beta_sq = float(schedule.delta(t)) - alpha**2 * float(schedule.delta(s))
    drift = (x + beta_sq * score(x, t)) / alpha
    return drift + (np.sqrt(max(beta_sq, 0.0)) / alpha) * rng.standard_normal(x.shape)


def reverse_sde(score: ScoreFn, schedule: Schedule | str, x: np.ndarray, times: Sequence[float],
                rng: np.random.Generator) -> np.ndarray:
    """Run the ancestral reverse SDE from ``times[0]`` down through ``times`` (decreasing);
    returns the states (n, d) at ``times[-1]``."""
    schedule = get_schedule(schedule)
    times = schedule.check_time(times, "times")
    if times.ndim != 1 or times.size < 2 or np.any(np.diff(times) >= 0):
        raise ValueError("times must be a decreasing 1-d sequence of at least 2 times")
    x = check_finite_array("x", x, ndim_min=2)
    for t, s in zip(times[:-1], times[1:], strict=True):
        x = _step(score, schedule, x, float(t), float(s), rng)
    return x


@dataclass(frozen=True)
class CloningResult:
    """Per cloning time (C,): the time, the number of pairs and how many ended alike."""

    clone_times: np.ndarray
    n_pairs: np.ndarray
    n_same: np.ndarray

    @property
    def same_fraction(self) -> np.ndarray:
        return self.n_same / self.n_pairs


def cloning_experiment(score: ScoreFn, schedule: Schedule | str, start: np.ndarray, *,
                       t_start: float, t_end: float, clone_times: Sequence[float],
                       label: Callable[[np.ndarray], np.ndarray], steps: int = 400,
                       seed: int = 0) -> CloningResult:
    """Clone ``start`` (n, d), states at t_start, at every time of ``clone_times`` (t_end <
    t_c <= t_start) and count the pairs whose two continuations get the same ``label``.

    One base run goes down a ln-SNR grid of ``steps`` intervals (the cloning times are added
    to it); the copies continue on the same grid below t_c. Each cloning time has its own
    random stream (``seed``, index), so results are reproducible per time.
    """
    schedule = get_schedule(schedule)
    steps = check_int("steps", steps, minimum=2)
    seed = check_int("seed", seed)
    t_start = float(schedule.check_scalar_time(t_start, "t_start"))
    t_end = float(schedule.check_scalar_time(t_end, "t_end"))
    if t_end >= t_start:
        raise ValueError(f"t_end must be below t_start = {t_start:g}, got {t_end:g}")
    x = check_finite_array("start", start, ndim_min=2)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"start must have shape (n, d) with n >= 1, got {x.shape}")
    clones = np.sort(np.atleast_1d(schedule.check_time(clone_times, "clone_times")))[::-1]
    if clones.size == 0 or clones[0] > t_start or clones[-1] <= t_end:
        raise ValueError(f"clone_times must lie in (t_end, t_start] = ({t_end:g}, {t_start:g}]"
                         " with t_end > 0")
    grid = np.unique(np.concatenate([log_snr_grid(schedule, t_start, t_end, steps), clones]))
    grid = grid[::-1]                                             # decreasing
    base_rng = np.random.default_rng([seed, 0])
    n = x.shape[0]
    n_same = np.zeros(clones.size, dtype=np.int64)
    position = 0
    for i, t_c in enumerate(clones):
        stop = int(np.flatnonzero(grid == t_c)[0])
        x = reverse_sde(score, schedule, x, grid[position:stop + 1], base_rng) \
            if stop > position else x
        position = stop
        rng = np.random.default_rng([seed, 1 + i])
        pair = reverse_sde(score, schedule, np.concatenate([x, x]), grid[stop:], rng)
        labels = np.asarray(label(pair))
        n_same[i] = int(np.sum(labels[:n] == labels[n:]))
    return CloningResult(clones, np.full(clones.size, n, dtype=np.int64), n_same)

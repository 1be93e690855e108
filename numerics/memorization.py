"""Memorization measures of a score function on a linear manifold (trained networks and their
two limits: the exact empirical score of the training set and the population score).

Shapes: training set ``Y`` (N, d); query points ``X`` (B, d); scores (B, d); Jacobians
(B, d, d). Scores are torch callables ``score(x, t)`` on float tensors (x (B, d), t a scalar in
the schedule's units), as :class:`~geomem.numerics.training.TrainedScore` provides; the
empirical and population references are built by :func:`empirical_score_fn` and
:func:`population_score_fn`.

- :func:`score_jacobians`: exact Jacobians by ``torch.func`` (reverse mode), float64 out.
- :func:`retained_dimensions`: per-subspace retained dimension (K,) per point of the score
  Jacobian, by :func:`geomem.numerics.retained.subspace_retained_dimension` (one definition
  for every protocol).
- :func:`denoiser_rank`: number of singular values above ``threshold`` of the denoiser
  Jacobian ``dD/dx = (I + Delta J)/a`` (D the posterior mean ``(x + Delta s)/a``).
- :func:`reverse_samples`: probability-flow ODE samples (Heun, geometric noise grid) of an
  a = 1 schedule (GeometricVE, VE), ending with one denoising step.
- :func:`memorized_fraction`: fraction of samples whose nearest training point is closer than
  ``MEMORIZED_RATIO`` times the second nearest (Bonnaire, Urfin, Biroli, Mézard 2025).
- :func:`nearest_switch_sigma`: along reverse trajectories (``reverse_samples(...,
  return_trajectory=True)``), the noise level of the last change of the nearest training
  point (Biroli, Bonnaire, de Bortoli, Mézard 2024): below it a trajectory is committed to one
  training point; compare with the collapse level ``sigma(t_C)`` of ``theory.collapse_time``.
- :func:`relative_score_distance`: ``sum |s - s_ref|^2 / sum |s_ref|^2`` over the points.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..theory.manifold import LinearManifold
from ..theory.schedules import VE, GeometricVE, Schedule
from .empirical import empirical_score
from .retained import DEFAULT_DEFINITION, subspace_retained_dimension
from .score_mlp import torch_a_delta

__all__ = ["MEMORIZED_RATIO", "denoiser_rank", "empirical_score_fn", "memorized_fraction",
           "nearest_switch_sigma", "population_score_fn", "relative_score_distance",
           "retained_dimensions", "reverse_samples", "score_jacobians", "time_of_sigma"]

#: nearest / second-nearest distance ratio below which a sample counts as memorized (Bonnaire
#: et al. 2025)
MEMORIZED_RATIO = 1.0 / 3.0

ScoreFn = Callable[[torch.Tensor, Any], torch.Tensor]


def _a_delta(schedule: Schedule, t: Any) -> tuple[float, float]:
    """(a, Delta) at scalar time t by the torch formulas (which, unlike the theory's checked
    schedules, accept t = 0 of GeometricVE: sigma = sigma_min)."""
    a, delta = torch_a_delta(schedule, torch.tensor(float(t), dtype=torch.float64))
    return float(a), float(delta)


def time_of_sigma(schedule: Schedule, sigma: float) -> float:
    """The schedule time at which the noise std sqrt(Delta)/a equals ``sigma``: the
    schedule's own inverse at log SNR = -2 ln sigma; ValueError for a GeometricVE sigma
    outside [sigma_min, sigma_max]."""
    if isinstance(schedule, GeometricVE) and not (
            schedule.sigma_min <= sigma <= schedule.sigma_max):
        raise ValueError(f"sigma must be in [{schedule.sigma_min}, {schedule.sigma_max}], "
                         f"got {sigma}")
    return float(schedule.time_at_log_snr(-2.0 * np.log(sigma)))


def score_jacobians(score: ScoreFn, X: np.ndarray, t: float) -> np.ndarray:
    """Exact Jacobians (B, d, d) of ``score`` at the rows of ``X`` (B, d), float64."""
    from torch.func import jacrev, vmap

    x = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    jac = vmap(jacrev(lambda v: score(v[None], t)[0]))(x)
    return jac.detach().double().numpy()


def retained_dimensions(J: np.ndarray, model: LinearManifold, a: float, delta: float, *,
                        definition: str = DEFAULT_DEFINITION) -> np.ndarray:
    """Per-subspace retained dimension (B, K) of score Jacobians J (B, d, d)."""
    return np.asarray(subspace_retained_dimension(np.asarray(J, dtype=np.float64), model,
                                                  a, delta, definition=definition))


def denoiser_rank(J: np.ndarray, a: float, delta: float, threshold: float = 0.5
                  ) -> np.ndarray:
    """Number of singular values > ``threshold`` of ``(I + Delta J)/a``, per point (B,)."""
    J = np.asarray(J, dtype=np.float64)
    eye = np.eye(J.shape[-1])
    sv = np.linalg.svd((eye + delta * J) / a, compute_uv=False)
    return np.sum(sv > threshold, axis=-1)


def empirical_score_fn(Y: np.ndarray, schedule: Schedule) -> ScoreFn:
    """The exact empirical score of ``Y`` (N, d) as a torch score function, for the
    schedule's time units (:func:`geomem.numerics.empirical.empirical_score`, float64
    reference kernel)."""
    data = np.asarray(Y, dtype=np.float64)

    def score(x: torch.Tensor, t: Any) -> torch.Tensor:
        a, delta = _a_delta(schedule, t)
        out = empirical_score(x.detach().double().cpu().numpy(), data, a=a, delta=delta)
        return torch.as_tensor(out, dtype=x.dtype)

    return score


def population_score_fn(model: LinearManifold, schedule: Schedule) -> ScoreFn:
    """The population score ``-(a^2 Sigma + Delta I)^{-1} x`` of a Gaussian (un-normalised)
    linear manifold; raises ValueError for normalised data (no closed form)."""
    if model.normalized:
        raise ValueError("model must be un-normalised (Gaussian): the normalised generator's "
                         "population score has no closed form")
    cov = torch.as_tensor(model.covariance(), dtype=torch.float64)
    eye = torch.eye(model.d, dtype=torch.float64)

    def score(x: torch.Tensor, t: Any) -> torch.Tensor:
        a, delta = _a_delta(schedule, t)
        precision = torch.linalg.inv(a * a * cov + delta * eye)
        return (-(x.double() @ precision)).to(x.dtype)

    return score


def relative_score_distance(score: ScoreFn, reference: ScoreFn, X: np.ndarray, t: float
                            ) -> float:
    """``sum_b |s(x_b) - s_ref(x_b)|^2 / sum_b |s_ref(x_b)|^2`` over the rows of X (B, d)."""
    x = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    with torch.no_grad():
        s = score(x, t).double()
        r = reference(x, t).double()
    return float(torch.sum((s - r) ** 2) / torch.sum(r**2))


def reverse_samples(score: ScoreFn, schedule: Schedule, n: int, d: int, *, steps: int = 40,
                    sigma_max: float | None = None, sigma_min: float | None = None,
                    seed: int = 0, return_trajectory: bool = False
                    ) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` samples (n, d) of the probability-flow ODE ``dx/dsigma = -sigma s(x, sigma)``
    from ``sigma_max`` to ``sigma_min`` (Heun's method on a geometric grid of ``steps``
    levels), started at ``sigma_max * N(0, I)``, followed by the denoising step
    ``x + sigma_min^2 s``. For a = 1 schedules (GeometricVE: default range its own; VE).
    ``return_trajectory``: also the grid ``sigmas`` (steps,) and the states on it
    (steps, n, d), so ``(samples, sigmas, trajectory)``."""
    if isinstance(schedule, GeometricVE):
        sigma_max = schedule.sigma_max if sigma_max is None else sigma_max
        sigma_min = schedule.sigma_min if sigma_min is None else sigma_min
    elif not isinstance(schedule, VE) or sigma_max is None or sigma_min is None:
        raise ValueError("schedule must be GeometricVE, or VE with sigma_max and sigma_min")
    if n < 1 or steps < 2:
        raise ValueError(f"n must be >= 1 and steps >= 2, got n={n}, steps={steps}")
    sigmas = np.geomspace(sigma_max, sigma_min, steps)
    gen = torch.Generator().manual_seed(int(seed))
    x = sigma_max * torch.randn(n, d, generator=gen)
    states = [x.double().numpy()] if return_trajectory else []

    def drift(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return -sigma * score(x, time_of_sigma(schedule, sigma))

    with torch.no_grad():
        for s_now, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
            h = s_next - s_now
            k1 = drift(x, s_now)
            x_euler = x + h * k1
            x = x + 0.5 * h * (k1 + drift(x_euler, s_next))
            if return_trajectory:
                states.append(x.double().numpy())
        x = x + sigma_min**2 * score(x, time_of_sigma(schedule, sigma_min))
    if return_trajectory:
        return x.double().numpy(), sigmas, np.stack(states)
    return x.double().numpy()


def memorized_fraction(samples: np.ndarray, Y: np.ndarray, ratio: float = MEMORIZED_RATIO
                       ) -> float:
    """Fraction of ``samples`` (n, d) whose nearest training point (rows of Y, N >= 2) is
    closer than ``ratio`` times the second nearest."""
    Y = np.asarray(Y, dtype=np.float64)
    if Y.shape[0] < 2:
        raise ValueError(f"Y needs at least 2 training points, got {Y.shape[0]}")
    d2 = torch.cdist(torch.as_tensor(np.asarray(samples, dtype=np.float64)),
                     torch.as_tensor(Y)).numpy()
    nearest = np.sort(np.partition(d2, 1, axis=1)[:, :2], axis=1)
    return float(np.mean(nearest[:, 0] < ratio * nearest[:, 1]))


def nearest_switch_sigma(trajectory: np.ndarray, sigmas: np.ndarray, Y: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per trajectory, the noise level at which its nearest training point last changed, and
    that final nearest point's index: ``(switch_sigma (n,), nearest (n,))``.

    ``trajectory`` (steps, n, d): points on the decreasing grid ``sigmas`` (steps,) of an
    a = 1 schedule, compared with the rows of ``Y`` (N, d) -- the states x of
    ``reverse_samples``, or (the measure of Biroli et al., whose nearest point is that of the
    denoised estimate) ``x + sigma^2 s(x)``: for the exact empirical score of a 4-dim Gaussian
    in d = 20 the denoised switch level is 2.1-2.8 sigma(t_C) for N = 16 ... 1024 and falls
    with N as sigma(t_C) does, while the raw states commit at 3-6x sigma(t_C). The switch
    level is ``sigmas[k]`` for the last step k whose nearest point differs from step k - 1;
    a trajectory that never switches gets ``sigmas[0]``."""
    traj = np.asarray(trajectory, dtype=np.float64)
    sig = np.asarray(sigmas, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if traj.ndim != 3 or sig.shape != traj.shape[:1] or Y.ndim != 2 or Y.shape[1] != traj.shape[2]:
        raise ValueError(f"trajectory must be (steps, n, d) with sigmas (steps,) and Y (N, d), "
                         f"got {traj.shape}, {sig.shape}, {Y.shape}")
    if Y.shape[0] < 1 or not (np.all(np.isfinite(traj)) and np.all(np.isfinite(Y))):
        raise ValueError("trajectory and Y must be finite, with at least one training point")
    d2 = torch.cdist(torch.as_tensor(traj), torch.as_tensor(Y)[None].expand(len(traj), -1, -1))
    nearest = d2.argmin(-1).numpy()                                   # (steps, n)
    changed = nearest[1:] != nearest[:-1]                             # (steps - 1, n)
    steps = changed.shape[0]
    last = np.where(changed.any(0), steps - np.argmax(changed[::-1], axis=0), 0)
    return sig[last], nearest[-1]

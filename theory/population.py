"""Population (N = infinity) score spectrum and the random-F Marchenko–Pastur gap (THEORY §3).

For Gaussian data with covariance ``Sigma = U diag(v) U^T`` the noised law is
``N(0, Delta I + a^2 Sigma)``, so the score is linear, ``s(x) = -(Delta I + a^2 Sigma)^{-1} x``,
and its Jacobian ``J = -(Delta I + a^2 Sigma)^{-1}`` has singular values ``1/(Delta + a^2 v_i)``
(units: 1/variance of x). Directions with ``v_i = 0`` give ``1/Delta``; the spectral gaps
between groups of ``v_i`` locate the tangent subspaces.

For *normalised* data (each sample rescaled to unit norm) the law is no longer Gaussian. The
principled Gaussian approximation keeps the true covariance, i.e. the exact second moments
``E[y_i^2]`` (:meth:`LinearManifold.normalized_direction_variances`), which is what
:func:`effective_direction_variances` returns; the "population" and "rem" predictions use it.

Random-F model (THEORY §2): a tangent spectrum from ``F F^T / n`` with i.i.d. entries follows the
Marchenko–Pastur law; two bulks with edges ``a < b`` (upper edge of the lower bulk, lower edge of
the upper bulk) give, after rescaling the singular values by Delta, the gap
``Delta/(Delta + a^2 lo) - Delta/(Delta + a^2 hi)`` — under VE ``t/(t+lo) - t/(t+hi)`` — which is
largest at SNR ``a^2/Delta = 1/sqrt(lo hi)``, i.e. ``t = sqrt(lo hi)`` under VE.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import as_real, check_positive
from .manifold import LinearManifold
from .schedules import VE, Schedule, get_schedule

__all__ = [
    "bulk_gap_value",
    "effective_direction_variances",
    "largest_gap_time",
    "marchenko_pastur_density",
    "marchenko_pastur_edges",
    "population_singular_values",
]


def _check_model(model: Any) -> LinearManifold:
    if not isinstance(model, LinearManifold):
        raise ValueError(f"model must be a LinearManifold, got {type(model).__name__}")
    return model


def effective_direction_variances(model: LinearManifold) -> np.ndarray:
    """Per-direction second moments ``E[y_i^2]`` (d,), in basis order.

    Un-normalised models: the generator variances ``s_i^2``. Normalised models: the exact second
    moments of ``y / |y|`` (a one-dimensional integral per distinct std), so the Gaussian
    approximation used by "population" and "rem" has the *true* covariance of the data.
    """
    model = _check_model(model)
    if model.normalized:
        return np.asarray(model.normalized_direction_variances(), dtype=np.float64)
    return np.array(model.direction_variances, dtype=np.float64)


def population_singular_values(model: LinearManifold, t: Any, schedule: Schedule | str,
                               *, sort: bool = True) -> np.ndarray:
    """Singular values ``1/(Delta(t) + a(t)^2 v_i)`` of the population score Jacobian.

    t : times of any shape (checked against the schedule's domain).
    Returns shape ``t.shape + (d,)``, sorted descending along the last axis (``sort=False``:
    basis order, direction i of the model).
    """
    model = _check_model(model)
    schedule = get_schedule(schedule)
    t = schedule.check_time(t)
    v = effective_direction_variances(model)
    a2 = schedule.a(t) ** 2
    delta = schedule.delta(t)
    values = 1.0 / (delta[..., None] + a2[..., None] * v)
    return -np.sort(-values, axis=-1) if sort else values


# ----------------------------------------------------------------------------- Marchenko–Pastur
def _check_ratio_scale(ratio: Any, scale: Any) -> tuple[np.ndarray, np.ndarray]:
    return check_positive("ratio", ratio), check_positive("scale", scale)


def marchenko_pastur_edges(ratio: Any, scale: Any = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Edges ``(scale (1 - sqrt(ratio))^2, scale (1 + sqrt(ratio))^2)`` of the MP bulk.

    Convention: ``W = F F^T / n`` with F a (p x n) matrix of i.i.d. entries of variance ``scale``
    and ``ratio = p / n`` (> 0). Arrays broadcast; returns ``(lower, upper)``.
    """
    ratio, scale = _check_ratio_scale(ratio, scale)
    root = np.sqrt(ratio)
    return scale * (1.0 - root) ** 2, scale * (1.0 + root) ** 2


def marchenko_pastur_density(x: Any, ratio: Any, scale: Any = 1.0) -> np.ndarray:
    """Continuous part of the MP density of ``W = F F^T / n`` (convention of the edges' function).

    ``rho(x) = sqrt((x_+ - x)(x - x_-)) / (2 pi scale ratio x)`` on ``[x_-, x_+]``, 0 outside.
    It integrates to ``min(1, 1/ratio)``; for ``ratio > 1`` the missing mass ``1 - 1/ratio`` is an
    atom at x = 0 (the p - n zero eigenvalues), not included here. Shape: broadcast of the inputs.
    """
    x = as_real("x", x)
    if not np.all(np.isfinite(x)):
        raise ValueError("x must be finite (no NaN or inf)")
    ratio, scale = _check_ratio_scale(ratio, scale)
    lower, upper = marchenko_pastur_edges(ratio, scale)
    inside = (x > lower) & (x < upper)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.sqrt(np.clip((upper - x) * (x - lower), 0.0, None)) / (
            2.0 * np.pi * scale * ratio * x)
    return np.where(inside, rho, 0.0)


def _check_edges(lower_edge: Any, upper_edge: Any) -> tuple[np.ndarray, np.ndarray]:
    lo = check_positive("lower_edge", lower_edge)
    hi = check_positive("upper_edge", upper_edge)
    if np.any(np.broadcast_to(hi <= lo, np.broadcast_shapes(lo.shape, hi.shape))):
        raise ValueError("upper_edge must exceed lower_edge: allowed 0 < lower_edge < upper_edge")
    return lo, hi


def bulk_gap_value(t: Any, lower_edge: Any, upper_edge: Any,
                   schedule: Schedule | str | None = None) -> np.ndarray:
    """Gap between the Delta-rescaled singular values of two variance levels ``lo < hi``:
    ``Delta/(Delta + a^2 lo) - Delta/(Delta + a^2 hi)`` (VE: ``t/(t+lo) - t/(t+hi)``), in (0, 1).
    Shape: broadcast of the inputs."""
    schedule = VE() if schedule is None else get_schedule(schedule)
    lo, hi = _check_edges(lower_edge, upper_edge)
    snr = schedule.snr(t)
    return 1.0 / (1.0 + snr * lo) - 1.0 / (1.0 + snr * hi)


def largest_gap_time(lower_edge: Any, upper_edge: Any,
                     schedule: Schedule | str | None = None) -> np.ndarray:
    """Time maximising :func:`bulk_gap_value`: SNR ``a^2/Delta = 1/sqrt(lo hi)``.

    Under VE (default) ``t = sqrt(lo hi)``, where the gap equals
    ``(sqrt(hi) - sqrt(lo)) / (sqrt(hi) + sqrt(lo))``. Other schedules map the SNR to a time with
    ``schedule.time_at_log_snr``. Shape: broadcast of the edges.
    """
    schedule = VE() if schedule is None else get_schedule(schedule)
    lo, hi = _check_edges(lower_edge, upper_edge)
    # d/dl [1/(1+e^l lo) - 1/(1+e^l hi)] = 0  <=>  e^{2l} lo hi = 1
    log_snr = -0.5 * (np.log(lo) + np.log(hi))
    return schedule.time_at_log_snr(log_snr)

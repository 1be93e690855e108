"""The published losing-dimensions theory, to the letter (THEORY §5a) [pub].

Source: the authors' released notebook (final figure cell). VE schedule (a = 1, Delta = t).
The energies ``E_mu = |x - y_mu|^2/(2t)`` are approximated as Gaussian with variance
``V = (g S4/2 + sum_j s_j^2 x_j^2)/t^2``, ``S4 = sum_j s_j^4`` over all d directions,
``g = 0`` for normalised data and 1 otherwise; a REM with N states condenses when
``V >= 2 ln N``. Per direction i, with ``x_i^2 ~ t``:

- ``t_c,i(t) = sqrt((g S4/2 + t s_i^2) / (2 ln N))``; direction i is lost when ``t < t_c,i(t)``.
  The fixed point ``t = t_c,i(t)`` is the positive root of ``2 ln N t^2 - s_i^2 t - g S4/2 = 0``,
  ``t_c,i = (s_i^2 + sqrt(s_i^4 + 4 g S4 ln N)) / (4 ln N)`` (g = 0: ``s_i^2/(2 ln N)``), and since
  ``t_c,i(t)/t`` decreases in t, ``t < t_c,i(t)`` exactly when t is below this root;
- ``phi_i(t) = max(0, 1/t - 1/t_c,i(t))``, ``phi_0(t) = max(0, 1/t - 1/t_c0)``,
  ``t_c0 = sqrt(g S4/2 / (2 ln N))`` (phi_0 = 0 when g = 0);
- ``F(t) = sum_j s_j^2 / (t^2 (t + s_j^2))``, ``v_i(t) = F(t) (phi_0(t) + phi_i(t))``;
- ``sigma_i(t) = sqrt((1/(t + s_i^2))^2 + v_i(t)^2)``.

``s_i`` are the generator's raw per-direction stds (``model.direction_stds``), as in the paper,
even for normalised data (not the normalised second moments of
:func:`~geomem.theory.population.effective_direction_variances`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import check_int, check_n_train
from .manifold import LinearManifold
from .schedules import VE, Schedule, get_schedule

__all__ = [
    "FIGURE4_DROP_LARGEST",
    "FIGURE4_N_TRAIN",
    "direction_condensation_times",
    "paper_figure_curve",
    "paper_singular_values",
]

#: the authors' Figure-4 theory panel: N, number of largest values dropped, time grid
FIGURE4_N_TRAIN = 1000
FIGURE4_DROP_LARGEST = 7
FIGURE4_TIMES = (1.0, 0.005, 200)


def _check_model(model: Any) -> LinearManifold:
    if not isinstance(model, LinearManifold):
        raise ValueError(f"model must be a LinearManifold, got {type(model).__name__}")
    return model


def _paper_constants(model: LinearManifold) -> tuple[np.ndarray, float]:
    """Raw per-direction variances s_i^2 (d,) and g S4 / 2."""
    s2 = np.array(model.direction_stds, dtype=np.float64) ** 2
    g = 0.0 if model.normalized else 1.0
    return s2, g * float(np.sum(s2**2)) / 2.0


def direction_condensation_times(model: LinearManifold, n_train: Any) -> np.ndarray:
    """Per-direction condensation times ``t_c,i`` (closed-form fixed point of ``t = t_c,i(t)``).

    n_train : N >= 2, any shape. Returns ``n_train.shape + (d,)`` in basis order (direction i of
    the model); direction i is lost (paper's criterion) for ``t < t_c,i``. VE time units.
    Increasing in s_i, decreasing in N.
    """
    model = _check_model(model)
    log_n = np.log(check_n_train(n_train))[..., None]
    s2, half_g_s4 = _paper_constants(model)
    # positive root of 2 lnN t^2 - s2 t - gS4/2 = 0 (both terms >= 0: no cancellation)
    return (s2 + np.sqrt(s2**2 + 8.0 * log_n * half_g_s4)) / (4.0 * log_n)


def paper_singular_values(model: LinearManifold, t: Any, n_train: Any,
                          schedule: Schedule | str | None = None, *, sort: bool = True
                          ) -> np.ndarray:
    """The paper's predicted Jacobian singular values ``sigma_i(t)`` (THEORY §5a).

    t : VE times (> 0), n_train : N >= 2; they broadcast. schedule must be VE (default): the
    formula is derived for a = 1, Delta = t only. Returns ``broadcast(t, n_train).shape + (d,)``,
    sorted descending (``sort=False``: basis order).
    """
    model = _check_model(model)
    schedule = VE() if schedule is None else get_schedule(schedule)
    if not isinstance(schedule, VE):
        raise ValueError(f"schedule must be VE for the published theory (THEORY §5a is derived "
                         f"for a = 1, Delta = t), got {schedule.name}")
    t = schedule.check_time(t)
    log_n = np.log(check_n_train(n_train))
    t, log_n = np.broadcast_arrays(t, log_n)
    t = t[..., None]
    log_n = log_n[..., None]
    s2, half_g_s4 = _paper_constants(model)
    t_ci = np.sqrt((half_g_s4 + t * s2) / (2.0 * log_n))
    with np.errstate(divide="ignore"):
        # t_c,i = 0 (a zero-variance direction with g = 0) means "never lost": phi_i = 0
        phi_i = np.where(t < t_ci, 1.0 / t - 1.0 / t_ci, 0.0)
        t_c0 = np.sqrt(half_g_s4 / (2.0 * log_n))
        phi_0 = np.where(t < t_c0, 1.0 / t - 1.0 / t_c0, 0.0)  # 0 whenever g = 0
    fluct = np.sum(s2 / (t**2 * (t + s2)), axis=-1, keepdims=True)
    values = np.hypot(1.0 / (t + s2), fluct * (phi_0 + phi_i))
    return -np.sort(-values, axis=-1) if sort else values


def paper_figure_curve(model: LinearManifold | None = None, n_train: float = FIGURE4_N_TRAIN,
                       t: Any = None, drop_largest: int = FIGURE4_DROP_LARGEST
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The authors' Figure-4 theory panel: ``(t (T,), curve (T, d - drop_largest))``.

    Defaults: stds (1, 1, 0.3 x5, 1e-6 x23), normalised (``LinearManifold.figure4(theory=True)``),
    N = 1000, t = linspace(1, 0.005, 200). At every t the d values of
    :func:`paper_singular_values` are sorted descending, the ``drop_largest`` largest dropped and
    the rest divided by their maximum (one spectrum per t, like the measured spectra).
    """
    model = LinearManifold.figure4(theory=True) if model is None else _check_model(model)
    drop_largest = check_int("drop_largest", drop_largest, minimum=0, maximum=model.d - 1)
    t = np.linspace(*FIGURE4_TIMES) if t is None else VE().check_time(t)
    if t.ndim != 1:
        raise ValueError(f"t must be one-dimensional, got shape {t.shape}")
    values = paper_singular_values(model, t, n_train)[:, drop_largest:]
    return t, values / values.max(axis=-1, keepdims=True)

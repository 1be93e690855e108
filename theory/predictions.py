"""Predicted singular values of the score Jacobian at finite N, one entry point for every theory.

``predicted_singular_values(model, t, n_train, schedule, method)`` returns an array of shape
``broadcast(t, n_train) + (d,)`` (plus the batch shape of explicit test points), sorted
descending, for

- ``"population"``: N = infinity, ``1/(Delta + a^2 v_i)`` (THEORY §3; ``n_train`` is only
  validated);
- ``"paper"``: the losing-dimensions authors' formula (THEORY §5a), VE schedule only;
- ``"rem"``: the large-deviation REM (THEORY §5b): ``1/(Delta + lam* a^2 v_i)`` per direction,
  with the freezing parameter ``lam*`` of :mod:`geomem.theory.rem`. On normal directions of
  an exact manifold (v_i = 0) this is ``1/Delta``; residual normal variance is treated like any
  other direction, so "rem" tends to "population" exactly once lam* = 1 (large N).

Here ``v_i`` are the effective (exact second-moment) variances of
:func:`geomem.theory.population.effective_direction_variances`. Singular values are in units of
1/variance (the Jacobian of the score has units 1/[y]^2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import as_real, check_choice, show
from .manifold import LinearManifold
from .population import effective_direction_variances, population_singular_values
from .published import paper_singular_values
from .rem import _log_n_fast, annealed_freezing_parameter, freezing_parameter
from .schedules import VE, Schedule, get_schedule

__all__ = ["METHODS", "TEST_POINTS", "predicted_singular_values", "rem_singular_values"]

#: theories understood by :func:`predicted_singular_values`
METHODS = ("population", "paper", "rem")
#: named choices for the REM test point (an explicit (..., d) array is also accepted)
TEST_POINTS = ("average", "annealed")


def rem_singular_values(model: LinearManifold, t: Any, lam: Any, schedule: Schedule | str
                        ) -> np.ndarray:
    """``1/(Delta + lam a^2 v_i)`` per direction, in basis order (unsorted), shape
    ``broadcast(t, lam) + (d,)``; lam in (0, 1] is a freezing parameter."""
    schedule = get_schedule(schedule)
    t = schedule.check_time(t)
    lam = as_real("lam", lam)
    if lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam <= 0) or np.any(lam > 1):
        raise ValueError(f"lam out of range: allowed 0 < lam <= 1, got {show(lam)}")
    v = effective_direction_variances(model)
    a2 = schedule.a(t) ** 2
    delta = schedule.delta(t)
    return 1.0 / (delta[..., None] + (lam * a2)[..., None] * v)


def predicted_singular_values(model: LinearManifold, t: Any, n_train: Any,
                              schedule: Schedule | str, method: str = "rem", *,
                              test_point: str | Any = "average") -> np.ndarray:
    """Predicted Jacobian singular values (..., d), sorted descending.

    t : times (any shape), n_train : N >= 2 (broadcast against t).
    method : "population" | "paper" (VE only) | "rem".
    test_point (method "rem" only) : "average" — lam* averaged over fresh test points
        (quenched, :func:`~geomem.theory.rem.freezing_parameter` with x=None); "annealed" —
        :func:`~geomem.theory.rem.annealed_freezing_parameter` (fast); or an array x (..., d) of
        test points, giving shape broadcast(t, n_train, x.shape[:-1]) + (d,).
    """
    check_choice("method", method, METHODS)
    if not isinstance(model, LinearManifold):
        raise ValueError(f"model must be a LinearManifold, got {type(model).__name__}")
    schedule = get_schedule(schedule)
    t = schedule.check_time(t)
    log_n = _log_n_fast(n_train)
    shape = np.broadcast_shapes(t.shape, log_n.shape)
    if method == "population":
        return population_singular_values(model, np.broadcast_to(t, shape), schedule)
    if method == "paper":
        if not isinstance(schedule, VE):
            raise ValueError(f"schedule must be VE for method 'paper' (THEORY §5a is derived "
                             f"for a = 1, Delta = t), got {schedule.name}")
        n = np.broadcast_to(np.asarray(n_train, dtype=np.float64), shape)
        return paper_singular_values(model, np.broadcast_to(t, shape), n, schedule)
    if isinstance(test_point, str):
        check_choice("test_point", test_point, TEST_POINTS)
        solver = freezing_parameter if test_point == "average" else annealed_freezing_parameter
        lam = solver(model, t, n_train, schedule)
    else:
        lam = freezing_parameter(model, t, n_train, schedule, x=test_point)
    values = rem_singular_values(model, np.broadcast_to(t, lam.shape), lam, schedule)
    return -np.sort(-values, axis=-1)

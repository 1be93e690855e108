"""Speciation time of Biroli, Bonnaire, de Bortoli & Mézard 2024 (docs/theory.md, "Speciation").

Under VP they find ``t_S = (1/2) ln Lambda`` [pub], Lambda the largest eigenvalue of the data
covariance: the reverse dynamics commits to a class when the signal along the top principal
direction, of variance ``a^2 Lambda``, rises to the noise variance.  Written for any schedule
this is ``a(t_S)^2 Lambda = Delta(t_S)``, i.e. ``SNR(t_S) = 1 / Lambda`` [derived]:

- VP:  ``e^{-2t} Lambda = 1 - e^{-2t}``  ->  ``t_S = (1/2) ln(1 + Lambda)``; the published
  ``(1/2) ln Lambda`` is its large-Lambda form (they set Delta ~ 1), and the two differ by
  ``(1/2) ln(1 + 1/Lambda) <= 1/(2 Lambda)``;
- VE:  ``Delta(t_S) = t_S = Lambda``;
- DDPM and the geometric VE of the networks: the root of ``ln SNR(t) = -ln Lambda``.

``form="published"`` returns ``(1/2) ln Lambda`` exactly (VP only).
"""

from __future__ import annotations

import math

import numpy as np

from ._checks import check_choice
from .manifold import LinearManifold
from .mixture import GaussianMixture
from .schedules import VP, Schedule, get_schedule

__all__ = ["largest_covariance_eigenvalue", "speciation_time"]


def largest_covariance_eigenvalue(model: LinearManifold | GaussianMixture) -> float:
    """Largest eigenvalue Lambda of the data covariance (units of y^2).

    LinearManifold: the largest direction variance (normalised models: the exact second
    moments of the normalised generator, `LinearManifold.normalized_direction_variances`);
    GaussianMixture: of the mixture covariance (within plus between components).
    """
    if isinstance(model, LinearManifold):
        v = (model.normalized_direction_variances() if model.normalized
             else model.direction_variances)
        return float(np.max(v))
    if isinstance(model, GaussianMixture):
        return float(np.linalg.eigvalsh(model.covariance())[-1])
    raise ValueError(f"model must be a LinearManifold or a GaussianMixture, got "
                     f"{type(model).__name__}")


def speciation_time(model: LinearManifold | GaussianMixture, schedule: Schedule | str, *,
                    form: str = "snr") -> float:
    """Speciation time t_S (in the schedule's time units).

    Args:
        model: a LinearManifold or a GaussianMixture.
        schedule: a schedule object or name ("vp", "ve", ...).
        form: "snr" (default): the root of ``a(t)^2 Lambda = Delta(t)``, any schedule;
            "published": ``(1/2) ln Lambda``, VP only (Biroli et al. 2024, valid for
            Lambda >> 1).
    Returns:
        t_S as a float.  ValueError (naming the argument) for a model of another type, a
        schedule without the root in its time domain, or "published" with Lambda <= 1 or a
        schedule other than VP.
    """
    check_choice("form", form, ("snr", "published"))
    lam = largest_covariance_eigenvalue(model)
    schedule = get_schedule(schedule)
    if form == "published":
        if not isinstance(schedule, VP):
            raise ValueError(f"form='published' is the VP formula (1/2) ln Lambda; got schedule "
                             f"{schedule!r} (use form='snr')")
        if lam <= 1.0:
            raise ValueError(f"form='published' needs Lambda > 1 (t_S > 0), got Lambda = "
                             f"{lam:.6g} for this model (use form='snr')")
        return 0.5 * math.log(lam)
    t = schedule.time_at_log_snr(-math.log(lam))
    t = float(np.asarray(t, dtype=float))
    try:
        schedule.check_time(t)
    except ValueError as exc:
        raise ValueError(f"schedule: the speciation time (SNR = 1/Lambda, Lambda = {lam:.6g}) "
                         f"lies outside the time domain of {schedule!r}") from exc
    return t


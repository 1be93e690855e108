"""Noising processes ``x_t = a(t) y + sqrt(Delta(t)) xi`` (THEORY §1).

Every schedule is a small immutable object with vectorised methods over an array ``t``
of any shape (broadcasting like numpy ufuncs):

- ``a(t)``          signal scale, dimensionless
- ``delta(t)``      noise variance Delta(t)
- ``log_snr(t)``    ln(a(t)^2 / Delta(t)), strictly decreasing in t
- ``time_at_log_snr(l)``  the inverse of ``log_snr``; accepts ``mpmath.mpf`` for values whose
  time would under/overflow float64 (VE, VP, geometric VE)

No theory formula hard-codes a schedule: they all go through these methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np

from ._checks import as_real, check_choice, check_int, check_positive, show

__all__ = ["DDPM", "DDPM_MAX_STEPS", "VE", "VP", "GeometricVE", "Schedule", "get_schedule"]

#: most DDPM steps accepted: the schedule stores a float64 grid per step (80 MB at 1e7)
DDPM_MAX_STEPS = 10**7


class Schedule:
    """Base class: subclasses define ``_a``, ``_delta``, ``_log_snr``, ``_time_at_log_snr``."""

    name: str = "schedule"
    #: largest admissible time (inclusive); the smallest is always > 0
    t_max: float = np.inf

    def check_time(self, t: Any, name: str = "t") -> np.ndarray:
        """Float64 array of times after checking 0 < t <= t_max."""
        arr = as_real(name, t)
        bad = ~np.isfinite(arr) | (arr <= 0) | (arr > self.t_max)
        if arr.size == 0 or np.any(bad):
            upper = "< inf" if math.isinf(self.t_max) else f"<= {self.t_max:g}"
            got = "an empty array" if arr.size == 0 else (
                show(t) if arr.ndim == 0 else f"{show(arr[bad].ravel()[0])} (first offending "
                "element)")
            raise ValueError(f"{name} out of range for the {self.name} schedule: allowed "
                             f"0 < {name} {upper}, got {got}")
        return arr

    def check_scalar_time(self, t: Any, name: str = "t") -> np.ndarray:
        """:meth:`check_time` for one time: a 0-d float64 array, ValueError for any other
        shape."""
        arr = self.check_time(t, name)
        if arr.ndim != 0:
            raise ValueError(f"{name} must be a scalar time, got shape {arr.shape}")
        return arr

    def a(self, t: Any) -> np.ndarray:
        """Signal scale a(t); same shape as ``t``."""
        return self._a(self.check_time(t))

    def delta(self, t: Any) -> np.ndarray:
        """Noise variance Delta(t); same shape as ``t``."""
        return self._delta(self.check_time(t))

    def snr(self, t: Any) -> np.ndarray:
        """Signal-to-noise ratio a(t)^2 / Delta(t)."""
        return np.exp(self.log_snr(t))

    def log_snr(self, t: Any) -> np.ndarray:
        """ln(a^2/Delta), computed without forming the ratio (stable at both ends)."""
        return self._log_snr(self.check_time(t))

    def time_at_log_snr(self, log_snr: Any) -> Any:
        """The time t at which ln(a^2/Delta) equals ``log_snr`` (inverse of ``log_snr``).

        With an ``mpmath.mpf`` argument the result is an ``mpf`` (for times outside float64);
        otherwise a float64 array of the argument's shape.
        """
        if isinstance(log_snr, mpmath.mpf):
            return self._time_at_log_snr_mp(log_snr)
        arr = as_real("log_snr", log_snr)
        if np.any(np.isnan(arr)):
            raise ValueError("log_snr must not be NaN")
        return self._time_at_log_snr(arr)

    def _time_at_log_snr_mp(self, log_snr: mpmath.mpf) -> mpmath.mpf:
        return mpmath.mpf(float(self._time_at_log_snr(np.asarray(float(log_snr)))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def to_dict(self) -> dict:
        """Parameters for JSON records."""
        return {"name": self.name}


@dataclass(frozen=True, repr=True)
class VE(Schedule):
    """Variance exploding: a = 1, Delta = t (t is the noise variance)."""

    name: str = field(default="VE", init=False, repr=False)

    def _a(self, t):
        return np.ones_like(t)

    def _delta(self, t):
        return t.copy()

    def _log_snr(self, t):
        return -np.log(t)

    def _time_at_log_snr(self, log_snr):
        return np.exp(-log_snr)

    def _time_at_log_snr_mp(self, log_snr):
        return mpmath.exp(-log_snr)


@dataclass(frozen=True, repr=True)
class VP(Schedule):
    """Variance preserving / Ornstein-Uhlenbeck: a = e^-t, Delta = 1 - e^-2t."""

    name: str = field(default="VP", init=False, repr=False)

    def _a(self, t):
        return np.exp(-t)

    def _delta(self, t):
        return -np.expm1(-2.0 * t)

    def _log_snr(self, t):
        # a^2/Delta = 1/(e^{2t} - 1)
        return -np.log(np.expm1(2.0 * t))

    def _time_at_log_snr(self, log_snr):
        # expm1(2t) = e^{-l}; log1p(e^{-l}) computed as logaddexp(0, -l) to avoid overflow
        return 0.5 * np.logaddexp(0.0, -log_snr)

    def _time_at_log_snr_mp(self, log_snr):
        return mpmath.log1p(mpmath.exp(-log_snr)) / 2


@dataclass(frozen=True, repr=True)
class GeometricVE(Schedule):
    """VE with geometric noise std sigma(t) = sigma_min (sigma_max/sigma_min)^t, t in (0, 1].

    The losing-dimensions networks are trained with sigma_min = 0.01, sigma_max = 50
    (THEORY §1). Delta(t) = sigma(t)^2, a = 1.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    name: str = field(default="GeometricVE", init=False, repr=False)
    t_max: float = field(default=1.0, init=False, repr=False)

    def __post_init__(self):
        check_positive("sigma_min", self.sigma_min)
        check_positive("sigma_max", self.sigma_max)
        if not self.sigma_max > self.sigma_min:
            raise ValueError(
                f"sigma_max must exceed sigma_min={self.sigma_min}, got {self.sigma_max}"
            )

    @property
    def _log_ratio(self) -> float:
        return float(np.log(self.sigma_max / self.sigma_min))

    def sigma(self, t: Any) -> np.ndarray:
        """Noise standard deviation sigma(t)."""
        t = self.check_time(t)
        return self.sigma_min * np.exp(self._log_ratio * t)

    def _a(self, t):
        return np.ones_like(t)

    def _delta(self, t):
        return (self.sigma_min * np.exp(self._log_ratio * t)) ** 2

    def _log_snr(self, t):
        return -2.0 * (np.log(self.sigma_min) + self._log_ratio * t)

    def _time_at_log_snr(self, log_snr):
        return (-0.5 * log_snr - np.log(self.sigma_min)) / self._log_ratio

    def _time_at_log_snr_mp(self, log_snr):
        return (-log_snr / 2 - mpmath.log(self.sigma_min)) / self._log_ratio

    def to_dict(self) -> dict:
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class DDPM(Schedule):
    """Discrete DDPM with linear betas; t is measured in steps, 0 < t <= steps.

    a(t) = sqrt(abar_t), Delta(t) = 1 - abar_t with abar_k = prod_{j<=k} (1 - beta_j) and
    beta_j linear from beta_min to beta_max. Between integer steps ln(abar) is interpolated
    linearly, so the schedule is continuous and exactly invertible.
    """

    name = "DDPM"

    def __init__(self, beta_min: float = 1e-4, beta_max: float = 2e-2, steps: int = 1000):
        check_int("steps", steps, minimum=1, maximum=DDPM_MAX_STEPS)
        for label, beta in (("beta_min", beta_min), ("beta_max", beta_max)):
            if isinstance(beta, bool) or not np.isscalar(beta) or isinstance(beta, (str, bytes)):
                raise ValueError(f"{label} must be a real number in (0, 1), got {show(beta)}")
            beta = as_real(label, beta)
        beta_min, beta_max = float(beta_min), float(beta_max)
        if not (0.0 < beta_min <= beta_max < 1.0):
            raise ValueError(
                "beta_min, beta_max out of range: allowed 0 < beta_min <= beta_max < 1, got "
                f"beta_min={beta_min}, beta_max={beta_max}"
            )
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self.steps = int(steps)
        self.t_max = float(steps)
        betas = np.linspace(self.beta_min, self.beta_max, self.steps)
        # ln abar at integer steps 0..steps (step 0: clean data, ln abar = 0)
        self._log_abar_grid = np.concatenate([[0.0], np.cumsum(np.log1p(-betas))])
        self._t_grid = np.arange(self.steps + 1, dtype=np.float64)

    def betas(self) -> np.ndarray:
        """The ``steps`` beta values."""
        return np.linspace(self.beta_min, self.beta_max, self.steps)

    def log_alpha_bar(self, t: Any) -> np.ndarray:
        """ln abar(t), piecewise linear between integer steps."""
        return np.interp(self.check_time(t), self._t_grid, self._log_abar_grid)

    def _log_abar(self, t):
        return np.interp(t, self._t_grid, self._log_abar_grid)

    def _a(self, t):
        return np.exp(0.5 * self._log_abar(t))

    def _delta(self, t):
        return -np.expm1(self._log_abar(t))

    def _log_snr(self, t):
        la = self._log_abar(t)
        return la - np.log(-np.expm1(la))

    def _time_at_log_snr(self, log_snr):
        # abar = sigmoid(l)  =>  ln abar = -log1p(e^{-l}); invert the piecewise-linear ln abar
        target = -np.logaddexp(0.0, -log_snr)
        lo = self._log_abar_grid[-1]
        if np.any(target < lo) or np.any(target >= 0.0):
            raise ValueError(
                "log_snr out of range for this DDPM schedule: allowed "
                f"{float(self._log_snr(np.array(self.t_max))):.6g} <= log_snr < inf"
            )
        # np.interp needs increasing abscissae: reverse the decreasing ln abar grid
        return np.interp(target, self._log_abar_grid[::-1], self._t_grid[::-1])

    def __repr__(self) -> str:
        return f"DDPM(beta_min={self.beta_min}, beta_max={self.beta_max}, steps={self.steps})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DDPM) and (self.beta_min, self.beta_max, self.steps) == (
            other.beta_min, other.beta_max, other.steps)

    def __hash__(self) -> int:
        return hash(("DDPM", self.beta_min, self.beta_max, self.steps))

    def to_dict(self) -> dict:
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max,
                "steps": self.steps}


_BY_NAME = {"VE": VE, "VP": VP, "DDPM": DDPM, "GEOMETRICVE": GeometricVE}


def get_schedule(schedule: str | Schedule) -> Schedule:
    """A schedule object from its name ("VE", "VP", "DDPM", "GeometricVE") or pass-through."""
    if isinstance(schedule, Schedule):
        return schedule
    if not isinstance(schedule, str):
        raise ValueError(f"schedule must be a Schedule or one of ('VE', 'VP', 'DDPM', "
                         f"'GeometricVE'), got {schedule!r}")
    key = schedule.upper()
    check_choice("schedule", key, _BY_NAME)
    return _BY_NAME[key]()

"""Phase diagrams of memorization in the (N, t) plane, per tangent subspace (THEORY §5a, §5b).

:func:`phase_diagram` evaluates one theory on a grid of training-set sizes N and times t and
returns a :class:`PhaseDiagram` of numpy arrays. Definitions (method = "paper" or "rem"):

- *retained fraction* of subspace k's spectral gap, clipped to [0, 1], with ``sigma_k`` the
  method's predicted singular value on subspace k at (N, t) and ``sigma_k^inf`` the same
  method's N = infinity value ("rem": the population value ``1/(Delta + a^2 v_k)`` with the
  effective variance v_k; "paper": ``1/(t + s_k^2)`` with the raw std s_k, the paper's own
  N -> infinity limit), on one of two scales (``gap=``):

  - "linear" (default): ``(1/Delta - sigma_k) / (1/Delta - sigma_k^inf)``; for "rem"
    ``lam* (1 + r_k) / (1 + lam* r_k)`` with ``r_k = a^2 v_k / Delta``;
  - "log": ``ln(1/(Delta sigma_k)) / ln(1/(Delta sigma_k^inf))`` — the gap on the log scale
    of the spectrum plots, the measure of ``geomem score-field``; for "rem"
    ``ln(1 + lam* r_k) / ln(1 + r_k)``.

  On the linear scale the REM keeps most of every gap at small t (``lam* r_k`` tends to a
  constant >> 1, so ``sigma_k << 1/Delta``); on the log scale the same spectra lose their gaps
  as t -> 0. Both scales order the subspaces alike (smaller variance: smaller fraction).
- *subspace k lost* (``condensed[..., k]``; for "rem" where :func:`gap_retained` of the
  retained fraction is False -- the criterion every measurement shares through
  :func:`gap_fraction` / :func:`gap_retained`): "paper": ``t < t_c,k(N)``, the published
  per-direction condensation time (:func:`~geomem.theory.published.direction_condensation_times`);
  "rem": retained fraction < 1/2, i.e. ``lam* < 1/(2 + r_k)`` (linear) or
  ``lam* < 1/(1 + sqrt(1 + r_k))`` (log).
- *globally condensed*: "rem": annealed ``lam* < 1``, i.e. ``t < t_C(N)``
  (:func:`~geomem.theory.rem.collapse_time`); "paper": some tangent subspace is lost (the
  normalised paper model has no separate global transition).
- boundaries ``t_c(N)``: the largest time at which the subspace is lost ("rem": root of
  ``E_x KL(q_lam||p) = ln N`` at the half-gap lam above, located on a fine log-SNR grid and
  refined by bisection; NaN where the subspace is never lost inside the schedule's domain);
  the global boundary is t_C(N) for "rem" and ``max_k t_c,k(N)`` for "paper" (NaN where it
  lies outside the schedule's time domain).

"rem" uses the *annealed* freezing parameter (one closed-form root per grid point), so a
500 x 500 grid takes a fraction of a second (benchmarks/bench_phase_diagram.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._checks import as_real, check_choice
from .manifold import LinearManifold
from .population import effective_direction_variances
from .published import direction_condensation_times, paper_singular_values
from .rem import (
    _group_kl,
    _log_n_fast,
    _variance_groups,
    annealed_freezing_parameter,
    collapse_log_snr,
)
from .schedules import VE, Schedule, get_schedule

__all__ = ["LOSS_FRACTION", "PHASE_METHODS", "PhaseDiagram", "gap_fraction", "gap_retained",
           "phase_diagram"]

#: theories with a phase diagram
PHASE_METHODS = ("paper", "rem")
#: scales on which the retained gap fraction is measured
GAP_SCALES = ("linear", "log")
#: a subspace counts as lost when it keeps less than this fraction of its N = infinity gap
LOSS_FRACTION = 0.5
#: log-SNR grid points used to locate the "rem" per-subspace boundaries (spacing ~0.03)
_BOUNDARY_GRID = 4096
#: half-width (in log-SNR) beyond the extreme variances where the boundary search stops:
#: e^-40 makes every term negligible on one side and saturated on the other
_BOUNDARY_MARGIN = 40.0
#: bisection steps refining a bracketed boundary (grid spacing / 2^60: float64 resolution)
_BISECTION_STEPS = 60
#: smallest time probed for the log-SNR range of schedules that extend to t -> 0
_T_FLOOR = 1e-300


@dataclass(frozen=True)
class PhaseDiagram:
    """One theory's phase diagram on an (N, t) grid; K tangent subspaces.

    Attributes (all numpy arrays, read-only):
    method, schedule : names; gap : "linear" | "log" (scale of the retained fraction).
    n_train (nN,), t (nT,) : the grid.
    subspace_dims (K,), subspace_stds (K,) raw stds, subspace_variances (K,) effective variances.
    condensed (nN, nT, K) bool : subspace k lost (definition in the module docstring).
    retained_fraction (nN, nT, K) in [0, 1].
    globally_condensed (nN, nT) bool.
    freezing_parameter (nN, nT) : annealed lam* ("rem"); None for "paper".
    subspace_boundary (nN, K) : largest t at which subspace k is lost (NaN: never, in domain).
    global_boundary (nN,) : t_C(N) ("rem") or max_k t_c,k(N) ("paper").
    collapse_time (nN,) : the REM collapse time t_C(N) (a shared reference for both methods;
        NaN outside the schedule's domain).
    """

    method: str
    schedule: str
    gap: str
    n_train: np.ndarray
    t: np.ndarray
    subspace_dims: np.ndarray
    subspace_stds: np.ndarray
    subspace_variances: np.ndarray
    condensed: np.ndarray
    retained_fraction: np.ndarray
    globally_condensed: np.ndarray
    freezing_parameter: np.ndarray | None
    subspace_boundary: np.ndarray
    global_boundary: np.ndarray
    collapse_time: np.ndarray

    def __post_init__(self):
        for value in self.__dict__.values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    @property
    def n_subspaces(self) -> int:
        return int(self.subspace_dims.size)

    def to_rows(self) -> list[dict]:
        """Tidy rows (N, t, subspace, method, condensed, retained_fraction), N-major order."""
        n_grid, t_grid, k_grid = np.meshgrid(self.n_train, self.t, np.arange(self.n_subspaces),
                                             indexing="ij")
        return [
            {"N": float(n), "t": float(t), "subspace": int(k), "method": self.method,
             "condensed": bool(c), "retained_fraction": float(f)}
            for n, t, k, c, f in zip(n_grid.ravel(), t_grid.ravel(), k_grid.ravel(),
                                     self.condensed.ravel(), self.retained_fraction.ravel(),
                                     strict=True)
        ]

    def to_dict(self) -> dict:
        """JSON-able dict (lists; NaN kept as float nan); inverse of :meth:`from_dict`."""
        out = {}
        for name, value in self.__dict__.items():
            out[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> PhaseDiagram:
        """Rebuild from :meth:`to_dict` output (e.g. a cached JSON result)."""
        kwargs = dict(data)
        for name in ("n_train", "t", "subspace_stds", "subspace_variances", "retained_fraction",
                     "freezing_parameter", "subspace_boundary", "global_boundary",
                     "collapse_time"):
            if kwargs.get(name) is not None:
                kwargs[name] = np.asarray(kwargs[name], dtype=np.float64)
        kwargs["subspace_dims"] = np.asarray(kwargs["subspace_dims"], dtype=np.int64)
        for name in ("condensed", "globally_condensed"):
            kwargs[name] = np.asarray(kwargs[name], dtype=bool)
        return cls(**kwargs)

    def boundary_rows(self) -> list[dict]:
        """Tidy rows (N, subspace, method, t_c); subspace "global" for the global boundary."""
        rows = []
        for i, n in enumerate(self.n_train):
            for k in range(self.n_subspaces):
                rows.append({"N": float(n), "subspace": str(k), "method": self.method,
                             "t_c": float(self.subspace_boundary[i, k])})
            rows.append({"N": float(n), "subspace": "global", "method": self.method,
                         "t_c": float(self.global_boundary[i])})
        return rows


# ----------------------------------------------------------------------------- gap criterion
def gap_fraction(value: Any, a: Any, delta: Any, variance: Any) -> np.ndarray:
    """Linear-scale fraction of the population gap kept by a Jacobian value (dimensionless).

    ``(1 - Delta sigma) / (1 - Delta/(Delta + a^2 v))`` for a singular value or absolute
    eigenvalue ``sigma`` (1/units^2) of a direction of variance ``v``: 1 at the population
    value ``1/(Delta + a^2 v)``, 0 at the normal value ``1/Delta``. All arguments broadcast.
    At ``sigma = 1/(Delta + lam a^2 v)`` it equals the "rem" retained fraction
    ``lam (1 + r)/(1 + lam r)``, ``r = a^2 v/Delta``. The Monte-Carlo and network measurements
    (:func:`geomem.numerics.retained.subspace_retained_dimension`) call this function.
    """
    value, a, delta = np.asarray(value), np.asarray(a), np.asarray(delta)
    population_gap = 1.0 - delta / (delta + a * a * np.asarray(variance))
    return (1.0 - delta * value) / population_gap


def gap_retained(fraction: Any, threshold: float = LOSS_FRACTION) -> np.ndarray:
    """The phase criterion: a gap fraction counts as retained iff ``fraction >= threshold``
    (bool array). :func:`phase_diagram` marks a subspace lost where this is False, and every
    retained-dimension measurement counts the values for which it is True."""
    return np.asarray(fraction) >= threshold


# ----------------------------------------------------------------------------- helpers
def _times_or_nan(schedule: Schedule, log_snr: np.ndarray) -> np.ndarray:
    """t(l) as float64; NaN where l maps outside (0, t_max] or not to a normal float."""
    out = np.full(log_snr.shape, np.nan)
    finite = np.isfinite(log_snr)
    if not np.any(finite):
        return out
    l_lo = -np.inf if not np.isfinite(schedule.t_max) else float(
        schedule.log_snr(np.asarray(schedule.t_max)))
    inside = finite & (log_snr >= l_lo)
    if np.any(inside):
        try:
            t = np.asarray(schedule.time_at_log_snr(log_snr[inside]), dtype=np.float64)
        except ValueError:  # DDPM refuses out-of-range values as a batch: map one by one
            t = np.array([_safe_time(schedule, lv) for lv in log_snr[inside]])
        t = np.where((t >= np.finfo(np.float64).tiny) & (t <= schedule.t_max), t, np.nan)
        out[inside] = t
    return out


def _safe_time(schedule: Schedule, level: float) -> float:
    try:
        return float(schedule.time_at_log_snr(np.asarray(level)))
    except ValueError:
        return np.nan


def _subspace_variances(model: LinearManifold) -> np.ndarray:
    v = effective_direction_variances(model)
    return np.array([v[model.direction_subspace == k][0] for k in range(model.n_subspaces)])


def _log_snr_range(model: LinearManifold, schedule: Schedule) -> tuple[float, float]:
    v, _, _ = _variance_groups(model)
    lo = -np.log(v.max()) - _BOUNDARY_MARGIN
    hi = -np.log(v.min()) + _BOUNDARY_MARGIN
    if np.isfinite(schedule.t_max):
        lo = max(lo, float(schedule.log_snr(np.asarray(schedule.t_max))))
    hi = min(hi, float(schedule.log_snr(np.asarray(_T_FLOOR))))
    return lo, hi


def _half_gap_lam(r: np.ndarray, gap: str) -> np.ndarray:
    """The lam at which a subspace of SNR r keeps exactly ``LOSS_FRACTION`` of its gap on
    scale ``gap`` (the root of ``_rem_retained(lam, r, gap) = LOSS_FRACTION``; for 1/2:
    ``1/(2 + r)`` linear, ``1/(1 + sqrt(1 + r))`` log)."""
    f = LOSS_FRACTION
    if gap == "linear":
        return f / (1.0 + r * (1.0 - f))
    return np.expm1(f * np.log1p(r)) / r


def _rem_retained(lam: np.ndarray, r: np.ndarray, gap: str) -> np.ndarray:
    """Retained gap fraction of a subspace of SNR r at freezing parameter lam (REM)."""
    if gap == "linear":
        return lam * (1.0 + r) / (1.0 + lam * r)
    return np.log1p(lam * r) / np.log1p(r)


def _rem_loss_kl(v: np.ndarray, m: np.ndarray, level: np.ndarray, k_variance: float, gap: str
                 ) -> np.ndarray:
    """``E_x KL(q_lam||p)`` at the lam where subspace k keeps half its gap, as a function of
    log-SNR ``level`` (...); v, m: the variance groups. Subspace k is lost iff this exceeds
    ln N (KL increases with lam)."""
    r = np.exp(level[..., None] + np.log(v))
    lam = _half_gap_lam(np.exp(level + np.log(k_variance)), gap)
    kl, _ = _group_kl(lam, r, m, m * (1.0 + r))
    return kl


def _rem_subspace_boundaries(model: LinearManifold, schedule: Schedule, log_n: np.ndarray,
                             variances: np.ndarray, gap: str) -> np.ndarray:
    """Largest t at which subspace k is lost under "rem", (nN, K); NaN if never."""
    lo, hi = _log_snr_range(model, schedule)
    v, m, _ = _variance_groups(model)
    grid = np.linspace(lo, hi, _BOUNDARY_GRID)
    out = np.full((log_n.size, variances.size), np.nan)
    for k, vk in enumerate(variances):
        h = _rem_loss_kl(v, m, grid, vk, gap)
        running_max = np.maximum.accumulate(h)
        # first grid index where h exceeds ln N (smallest log-SNR = largest t)
        j = np.searchsorted(running_max, log_n, side="right")
        never = j >= grid.size
        at_edge = j == 0  # lost already at the largest admissible time
        jj = np.clip(j, 1, grid.size - 1)
        left, right = grid[jj - 1], grid[jj]
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (left + right)
            above = _rem_loss_kl(v, m, mid, vk, gap) > log_n
            right = np.where(above, mid, right)
            left = np.where(above, left, mid)
        level = np.where(at_edge, grid[0], right)
        level = np.where(never, np.nan, level)
        out[:, k] = _times_or_nan(schedule, level)
    return out


# ----------------------------------------------------------------------------- public API
def phase_diagram(model: LinearManifold, n_train_values: Any, t_values: Any,
                  schedule: Schedule | str, method: str = "rem", *, gap: str = "linear"
                  ) -> PhaseDiagram:
    """Phase diagram of ``method`` ("paper" | "rem") on the grid n_train_values x t_values.

    gap : "linear" | "log", the scale of the retained gap fraction (module docstring).

    n_train_values : (nN,) training-set sizes >= 2; t_values : (nT,) times in the schedule's
    domain. "paper" requires the VE schedule. See the module docstring for the definitions.
    """
    check_choice("method", method, PHASE_METHODS)
    check_choice("gap", gap, GAP_SCALES)
    if not isinstance(model, LinearManifold):
        raise ValueError(f"model must be a LinearManifold, got {type(model).__name__}")
    schedule = get_schedule(schedule)
    n_train = np.atleast_1d(as_real("n_train_values", n_train_values))
    if n_train.ndim != 1:
        raise ValueError(f"n_train_values must be one-dimensional, got shape {n_train.shape}")
    log_n = _log_n_fast(n_train)
    t = np.atleast_1d(schedule.check_time(t_values, "t_values"))
    if t.ndim != 1:
        raise ValueError(f"t_values must be one-dimensional, got shape {t.shape}")
    if method == "paper" and not isinstance(schedule, VE):
        raise ValueError(f"schedule must be VE for method 'paper' (THEORY §5a), got "
                         f"{schedule.name}")
    variances = _subspace_variances(model)
    stds = np.asarray(model.stds, dtype=np.float64)
    delta = schedule.delta(t)  # (nT,)
    a2 = schedule.a(t) ** 2
    collapse = _times_or_nan(schedule, np.asarray(collapse_log_snr(model, n_train)))

    if method == "rem":
        lam = annealed_freezing_parameter(model, t[None, :], n_train[:, None], schedule)
        r = (a2 / delta)[None, :, None] * variances  # (1, nT, K)
        retained = np.clip(_rem_retained(lam[..., None], r, gap), 0.0, 1.0)
        condensed = ~gap_retained(retained)
        globally = lam < 1.0
        sub_boundary = _rem_subspace_boundaries(model, schedule, log_n, variances, gap)
        global_boundary = collapse
    else:
        lam = None
        sigma = _paper_subspace_values(model, t, n_train)  # (nN, nT, K)
        inv_delta = (1.0 / delta)[None, :, None]
        sigma_inf = 1.0 / (t[None, :, None] + stds**2)
        with np.errstate(divide="ignore", invalid="ignore"):
            if gap == "linear":
                retained = (inv_delta - sigma) / (inv_delta - sigma_inf)
            else:
                retained = np.log(inv_delta / sigma) / np.log(inv_delta / sigma_inf)
        # 0/0 only when a subspace has no gap even at N = infinity: nothing can be lost
        retained = np.clip(np.nan_to_num(retained, nan=1.0), 0.0, 1.0)
        times = np.asarray(direction_condensation_times(model, n_train))  # (nN, d)
        sub_boundary = np.stack([times[:, model.direction_subspace == k].max(axis=-1)
                                 for k in range(model.n_subspaces)], axis=-1)
        condensed = t[None, :, None] < sub_boundary[:, None, :]
        globally = np.any(condensed, axis=-1)
        global_boundary = sub_boundary.max(axis=-1)
    return PhaseDiagram(
        method=method, schedule=schedule.name, gap=gap, n_train=n_train, t=t,
        subspace_dims=np.asarray(model.dims), subspace_stds=stds,
        subspace_variances=variances, condensed=condensed, retained_fraction=retained,
        globally_condensed=globally, freezing_parameter=lam, subspace_boundary=sub_boundary,
        global_boundary=global_boundary, collapse_time=collapse)


def _paper_subspace_values(model: LinearManifold, t: np.ndarray, n_train: np.ndarray
                           ) -> np.ndarray:
    """The paper's predicted singular value on each tangent subspace, (nN, nT, K)."""
    values = paper_singular_values(model, t[None, :], n_train[:, None], VE(), sort=False)
    return np.stack([values[..., model.direction_subspace == k].mean(axis=-1)
                     for k in range(model.n_subspaces)], axis=-1)

"""Helpers shared by the validation commands: option parsing, summary statistics, plotting setup.

Statistics: Monte-Carlo estimates are reported as a mean with a 95% confidence interval taken
over *independent replicates* (fresh training sets), because test points that share a training
set are correlated; heavy-tailed quantities are also summarised by their median and quantiles.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import typer
from scipy import stats

__all__ = [
    "CACHE_ENV",
    "MAX_CI_FRACTION",
    "QUANTILES",
    "REL_TOL",
    "bad_option",
    "checked",
    "checkpoint_dir",
    "default_out",
    "mean_ci",
    "parse_choices",
    "parse_floats",
    "parse_ints",
    "pyplot",
    "summarize",
    "verdict",
]

#: quantiles reported next to means for heavy-tailed estimates
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: coverage of every reported confidence interval
CI_LEVEL = 0.95


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (safe in workers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def default_out(command: str) -> Path:
    """The default output folder ``results/<command>/`` (relative to the working directory)."""
    return Path("results") / command


#: environment variable naming the shared checkpoint folder (see :func:`checkpoint_dir`)
CACHE_ENV = "GEOMEM_CACHE"


def checkpoint_dir(out: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder for trained-network checkpoints of a run writing into ``out``.

    In order: ``cache_dir`` (``--cache-dir``), else ``$GEOMEM_CACHE`` when set and non-empty,
    else ``<out>/checkpoints``. Commands may share one folder (checkpoint names carry a hash
    of everything that determines the network), but it is never the working directory by
    accident: an empty variable counts as unset. ValueError when the folder cannot be written.
    """
    from .options import check_out_path

    if cache_dir is not None and str(cache_dir) != "":
        return check_out_path(cache_dir, "--cache-dir")
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return check_out_path(env, CACHE_ENV)
    return Path(out) / "checkpoints"


def bad_option(name: str, message: str) -> typer.BadParameter:
    """A typer error naming the option (exit status 2, message printed by click)."""
    return typer.BadParameter(message, param_hint=f"'{name}'")


def checked(name: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, turning a ValueError into a typer error naming option ``name``."""
    try:
        return fn(*args, **kwargs)
    except ValueError as err:
        raise bad_option(name, str(err)) from err


EXECUTOR_OPTIONS = "--workers/--scheduler/--dask-workers"


def parse_floats(name: str, text: str, *, positive: bool = True) -> list[float]:
    """A comma-separated list of floats (``"0.3,0.02"``), checked > 0 when ``positive``."""
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError as err:
        raise bad_option(name, f"expected comma-separated numbers, got {text!r}") from err
    if not values:
        raise bad_option(name, f"expected at least one number, got {text!r}")
    if not all(np.isfinite(values)) or (positive and min(values) <= 0):
        raise bad_option(name, f"every value must be finite{' and > 0' if positive else ''}, "
                               f"got {text!r}")
    return values


def parse_choices(name: str, text: str, allowed: Sequence[str]) -> list[str]:
    """A comma-separated list of names, each one of ``allowed``."""
    values = [v.strip() for v in str(text).split(",") if v.strip()]
    if not values:
        raise bad_option(name, f"expected at least one of {tuple(allowed)}, got {text!r}")
    for value in values:
        if value not in allowed:
            raise bad_option(name, f"each must be one of {tuple(allowed)}, got {value!r}")
    return values


def parse_schedule_names(name: str, text: str, allowed: Sequence[str]) -> list[str]:
    """Comma-separated distinct schedule names among ``allowed``, case-insensitive."""
    values = [v.strip().upper() for v in str(text).split(",") if v.strip()]
    if not values or any(v not in allowed for v in values) or len(set(values)) < len(values):
        raise bad_option(name, f"expected distinct names among {', '.join(allowed)}, "
                               f"got {text!r}")
    return values


def parse_ints(name: str, text: str, *, minimum: int = 1, distinct: bool = False
               ) -> list[int]:
    """A comma-separated list of integers >= ``minimum`` (no repeats when ``distinct``)."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError as err:
        raise bad_option(name, f"expected comma-separated integers, got {text!r}") from err
    if not values or min(values) < minimum:
        raise bad_option(name, f"expected integers >= {minimum}, got {text!r}")
    if distinct and len(set(values)) < len(values):
        raise bad_option(name, f"expected distinct values, got {text!r}")
    return values


def positive_finite(name: str, value: float) -> float:
    """``value`` if it is finite and > 0, else the option's one-line error."""
    if not (value > 0 and np.isfinite(value)):
        raise bad_option(name, f"need a finite value > 0, got {value!r}")
    return value


def mean_ci(group_means: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """Mean of independent replicate means and its 95% t-interval ``(mean, low, high)``.

    With one replicate the interval is (nan, nan): no honest error bar exists.
    """
    x = np.asarray(group_means, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if x.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + CI_LEVEL / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half


def summarize(values: np.ndarray, groups: np.ndarray | None = None, prefix: str = ""
              ) -> dict[str, Any]:
    """Mean with 95% CI (over group means), median and quantiles of ``values`` (flat).

    ``groups`` labels the independent replicate of each value (None: all independent).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if groups is None:
        means = v
    else:
        g = np.asarray(groups).ravel()
        means = np.array([v[g == k].mean() for k in np.unique(g)])
    mean, low, high = mean_ci(means)
    out = {f"{prefix}mean": mean, f"{prefix}ci_low": low, f"{prefix}ci_high": high}
    qs = np.quantile(v, QUANTILES) if v.size else np.full(len(QUANTILES), np.nan)
    for q, val in zip(QUANTILES, qs, strict=True):
        out[f"{prefix}q{int(round(q * 100)):02d}"] = float(val)
    return out


#: relative discrepancy accepted as agreement: a large-d theory at d <= 300 is not expected to
#: be closer than ~10%, and a CI narrower than that would flag harmless finite-d corrections
REL_TOL = 0.10
#: a verdict needs a 95% CI no wider (high - low) than this fraction of |MC mean|: a wider
#: interval contains values a factor ~1.3 apart, so "theory inside the CI" would call a 25%
#: miss an agreement; such comparisons are reported as "inconclusive" instead
MAX_CI_FRACTION = 0.5


def verdict(theory: float | None, mc: float, low: float, high: float, *,
            rel_tol: float = REL_TOL, max_ci_fraction: float = MAX_CI_FRACTION
            ) -> tuple[float, str]:
    """(relative discrepancy ``(theory - mc)/|mc|``, verdict) of a theory value against a
    Monte-Carlo mean and its 95% CI ``[low, high]``.

    Verdicts: ``n/a`` (either value missing), ``inconclusive`` (CI missing or wider than
    ``max_ci_fraction * |mc|``), ``agree`` (theory inside the CI or within ``rel_tol``),
    ``disagree`` otherwise.
    """
    if theory is None or not np.isfinite(theory) or not np.isfinite(mc):
        return float("nan"), "n/a"
    rel = (theory - mc) / abs(mc) if mc != 0 else float("inf")
    if not (np.isfinite(low) and np.isfinite(high)) or high - low > max_ci_fraction * abs(mc):
        return rel, "inconclusive"
    inside = low <= theory <= high
    return rel, "agree" if inside or abs(rel) <= rel_tol else "disagree"


# ----------------------------------------------------------------------------- gap-loss times
#: crossing status of one replicate's retained-dimension curve (see :func:`crossing_status`)
CROSSED, NOT_LOST, LOST_AT_START, INVALID = "crossed", "not_lost", "lost_at_start", "invalid"


def crossing_status(t: np.ndarray, retained: np.ndarray, level: float) -> tuple[float, str]:
    """Where ``retained(t)`` (scanned from large t down) first drops below ``level``.

    Returns ``(t_cross, status)``: the root of the curve interpolated linearly in ln t between
    the bracketing grid points and ``"crossed"``; or NaN with a censoring status:
    ``"not_lost"`` (never below the level in the grid: the crossing is below min t),
    ``"lost_at_start"`` (below already at the largest t: the crossing is above max t),
    ``"invalid"`` (a non-finite value on the curve).
    """
    t = np.asarray(t, dtype=np.float64)
    r = np.asarray(retained, dtype=np.float64)
    order = np.argsort(t)[::-1]
    t, r = t[order], r[order]
    if not np.isfinite(r).all():
        return float("nan"), INVALID
    below = np.flatnonzero(r < level)
    if below.size == 0:
        return float("nan"), NOT_LOST
    j = int(below[0])
    if j == 0:
        return float("nan"), LOST_AT_START
    lt0, lt1, r0, r1 = np.log(t[j - 1]), np.log(t[j]), r[j - 1], r[j]
    frac = (r0 - level) / (r0 - r1)  # r0 >= level > r1, so r0 != r1
    return float(np.exp(lt0 + frac * (lt1 - lt0))), CROSSED


def crossing_time(t: np.ndarray, retained: np.ndarray, level: float) -> float:
    """The crossing of :func:`crossing_status`; NaN when censored or invalid."""
    return crossing_status(t, retained, level)[0]


def grid_ratio(t: np.ndarray) -> float:
    """Median ratio of neighbouring times of a log grid (its resolution; NaN for one time)."""
    lt = np.sort(np.log(np.asarray(t, dtype=np.float64)))
    return float(np.exp(np.median(np.diff(lt)))) if lt.size > 1 else float("nan")


def gap_loss_statistics(t: np.ndarray, curves: np.ndarray, level: float) -> dict[str, Any]:
    """Gap-loss time of independent replicate curves ``curves`` (R, T) on the grid ``t`` (T,).

    Each replicate's crossing is the root of its log-interpolated curve
    (:func:`crossing_status`). The point estimate is the geometric mean of the crossing
    replicates and the 95% CI the t-interval of their mean ln t (one statistic for both),
    widened where needed to cover half a grid step either side (``resolution``, the median grid
    ratio t_{i+1}/t_i): the interpolation error is common to all replicates, so a t-interval
    alone can be narrower than what the grid resolves. Replicates that never cross are
    *censored*, counted in ``n_not_lost`` (crossing below min t) and ``n_lost_at_start``
    (above max t), never silently dropped. Keys: t_loss, ci_low, ci_high, n_replicates,
    n_crossed, n_not_lost, n_lost_at_start, n_invalid, resolution, log_crossings (R,).
    """
    t = np.asarray(t, dtype=np.float64)
    curves = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    found = [crossing_status(t, c, level) for c in curves]
    log_t = np.log(np.array([f[0] for f in found]))
    status = [f[1] for f in found]
    resolution = grid_ratio(t)
    out = {"n_replicates": len(found), **{f"n_{name}": status.count(name)
                                          for name in (CROSSED, NOT_LOST, LOST_AT_START,
                                                       INVALID)},
           "resolution": resolution, "log_crossings": log_t}
    mean, low, high = mean_ci(log_t)
    if np.isfinite(low):
        half_step = 0.5 * np.log(resolution)
        low, high = min(low, mean - half_step), max(high, mean + half_step)
    out.update(t_loss=float(np.exp(mean)), ci_low=float(np.exp(low)), ci_high=float(np.exp(high)))
    return out


def paired_log_ratio(log_a: np.ndarray, log_b: np.ndarray, resolution: float = 1.0
                     ) -> dict[str, Any]:
    """Ratio ``t_a / t_b`` of two gap-loss times measured on the same replicates (R,) each:
    geometric mean of the per-replicate ratios with its 95% t-interval, over the replicates
    where both crossed (``n_paired``). Pairing removes the training-set-to-training-set
    variation common to both subspaces. ``resolution`` (the grid ratio of the times, >= 1):
    the interval is widened to at least ``sqrt(2)/2`` grid steps either side, the
    interpolation error of a ratio of two crossings (cf. :func:`gap_loss_statistics`)."""
    diff = np.asarray(log_a, dtype=np.float64) - np.asarray(log_b, dtype=np.float64)
    diff = diff[np.isfinite(diff)]
    mean, low, high = mean_ci(diff)
    if np.isfinite(low):
        half_step = np.sqrt(0.5) * np.log(resolution)
        low, high = min(low, mean - half_step), max(high, mean + half_step)
    return {"ratio": float(np.exp(mean)), "ratio_ci_low": float(np.exp(low)),
            "ratio_ci_high": float(np.exp(high)), "n_paired": int(diff.size)}

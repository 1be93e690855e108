"""Helpers shared by the validation commands: option parsing, summary statistics, plotting setup.

Statistics: Monte-Carlo estimates are reported as a mean with a 95% confidence interval taken
over *independent replicates* (fresh training sets), because test points that share a training
set are correlated; heavy-tailed quantities are also summarised by their median and quantiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import typer
from scipy import stats

__all__ = [
    "QUANTILES",
    "bad_option",
    "checked",
    "default_out",
    "mean_ci",
    "parse_choices",
    "parse_floats",
    "parse_ints",
    "pyplot",
    "summarize",
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


def parse_ints(name: str, text: str, *, minimum: int = 1) -> list[int]:
    """A comma-separated list of integers >= ``minimum``."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError as err:
        raise bad_option(name, f"expected comma-separated integers, got {text!r}") from err
    if not values or min(values) < minimum:
        raise bad_option(name, f"expected integers >= {minimum}, got {text!r}")
    return values


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

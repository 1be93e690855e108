"""Medians, bootstrap confidence intervals and the crossover N* of the two-network experiment.

Shapes: per N, one similarity per sample chain (S,) and a mask (S,) of chains where both
networks' samplers converged. A bootstrap replicate resamples the converged chains of every N
independently (the chains of different N are independent draws), recomputes each median and
the crossover N* of the replicate's median curve; the CI of N* is the percentile interval of
the replicates, with replicates that never cross counted as "beyond the largest N" (so the
upper end can be open, reported as None).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._common import CI_LEVEL

__all__ = ["BOOTSTRAP_REPLICATES", "SIMILARITY_THRESHOLD", "bootstrap_medians",
           "converged_median", "crossover_ci", "crossover_n", "percentile_ci"]

#: the paper's criterion for "the two networks generate the same image"
SIMILARITY_THRESHOLD = 0.9
#: bootstrap replicates: the percentile CI's own Monte Carlo error is then < 1% of its width
BOOTSTRAP_REPLICATES = 2000


def converged_median(values: Sequence[float], ok: Sequence[bool]) -> float:
    """Median over converged chains (NaN when none converged)."""
    values = np.asarray(values, dtype=float)[np.asarray(ok, dtype=bool)]
    return float(np.median(values)) if values.size else float("nan")


def crossover_n(n_values: Sequence[float], medians: Sequence[float],
                threshold: float = SIMILARITY_THRESHOLD) -> float | None:
    """The N beyond which the median similarity stays at or above ``threshold``: interpolated
    linearly in log N between the last grid point below it and the next one; the first N if
    all are above; None if the largest N is below. Crossing after the *last* point below
    ignores a coincidental agreement at tiny N (at N = 1 both networks reproduce their one
    training image, and two training images can happen to be similar).
    NaN medians (no converged chain at that N) are skipped; None when all are NaN."""
    n = np.asarray(n_values, dtype=float)
    m = np.asarray(medians, dtype=float)
    if n.shape != m.shape or n.ndim != 1 or n.size == 0:
        raise ValueError(f"n_values and medians must be 1-d of equal length, got {n.shape}, "
                         f"{m.shape}")
    if np.any(np.diff(n) <= 0) or n[0] <= 0:
        raise ValueError("n_values must be positive and strictly increasing")
    n, m = n[np.isfinite(m)], m[np.isfinite(m)]
    if n.size == 0:                     # no converged chain at any N: nothing to cross
        return None
    below = np.flatnonzero(m < threshold)
    if below.size == 0:
        return float(n[0])
    i = int(below[-1]) + 1
    if i == n.size:
        return None
    frac = (threshold - m[i - 1]) / (m[i] - m[i - 1])
    return float(np.exp(np.log(n[i - 1]) + frac * (np.log(n[i]) - np.log(n[i - 1]))))


def bootstrap_medians(values: Sequence[Sequence[float]], ok: Sequence[Sequence[bool]], *,
                      replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> np.ndarray:
    """Bootstrap medians (replicates, n_N): for each N, the median of a resample (with
    replacement) of its converged chains; NaN columns where no chain converged."""
    rng = np.random.default_rng(seed)
    out = np.full((replicates, len(values)), np.nan)
    for j, (v, k) in enumerate(zip(values, ok, strict=True)):
        kept = np.asarray(v, dtype=float)[np.asarray(k, dtype=bool)]
        if kept.size:
            draws = kept[rng.integers(0, kept.size, size=(replicates, kept.size))]
            out[:, j] = np.median(draws, axis=1)
    return out


def percentile_ci(draws: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap draws, NaN draws (no converged chain) ignored;
    (NaN, NaN) when every draw is NaN."""
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return float(low), float(high)


def crossover_ci(n_values: Sequence[float], boot_medians: np.ndarray,
                 threshold: float = SIMILARITY_THRESHOLD, level: float = CI_LEVEL
                 ) -> dict[str, float | None]:
    """Percentile CI of N* over bootstrap median curves (replicates, n_N). ``low``/``high``
    are None when the quantile falls among replicates that never cross (N* beyond the grid);
    ``fraction_crossing`` is the share of replicates that cross inside the grid."""
    stars = np.array([np.inf if (s := crossover_n(n_values, row, threshold)) is None else s
                      for row in np.asarray(boot_medians, dtype=float)])
    tail = (1 - level) / 2
    low, high = np.quantile(stars, [tail, 1 - tail], method="inverted_cdf")
    return {"low": float(low) if np.isfinite(low) else None,
            "high": float(high) if np.isfinite(high) else None,
            "fraction_crossing": float(np.mean(np.isfinite(stars)))}

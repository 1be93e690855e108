"""Dimension read-off from singular-value spectra of score Jacobians (THEORY §6).

A score Jacobian has large singular values (about 1/Delta) along the directions the score
pulls back to the data (normal directions) and small ones (about 1/(Delta + s^2)) along the
directions it keeps (tangent directions). Sorted descending, the spectrum is a plateau of large
values, a cliff, then the tangent values; the dimension is the number of values *below* the
cliff. One API, three estimators:

- ``"cliff"`` — the losing-dimensions paper's detector: sort descending, drop the ``drop``
  (default 5) largest, second differences ``D_i = |f(i+1) - 2 f(i) + f(i-1)|`` of the remaining
  values ``f(0..n-1)`` (centred at i = 1..n-2), the cliff is the first ``i`` with
  ``D_i > factor x median(D)`` (factor 10), and ``dimension = d - (i + 1 + drop)``.
  Indexing check: with large values at sorted positions 0..L-1 and small ones after, the first
  centre where D jumps is the last large value, i = L - 1 - drop, so the formula gives d - L:
  exactly the number of small values.
- ``"gap"`` — the largest ratio between consecutive sorted values (a gap in log scale) after
  dropping ``drop`` (default 0); dimension = number of values below it.
- ``"ratio"`` — count the values below ``threshold`` (default 0.5) times the largest kept value.
  For a population score, ``Delta/(Delta + s^2) < 1/2`` iff ``s^2 > Delta``: the directions whose
  signal variance exceeds the noise variance. This is a threshold, not a gap: it always returns a
  count (possibly 0).

Failure modes, reported in :class:`DimensionEstimate`:

- **no gap** (flat spectrum: at large noise, and for a fully memorising score whose Jacobian is
  -I/Delta): ``found`` is False and ``dimension`` is ``no_gap`` (default NaN, never a silent
  0 or d; callers that read a flat spectrum as "no resolved dimension" pass ``no_gap=0``).
  ``"cliff"``: no second difference exceeds the threshold; ``"gap"``: the largest consecutive
  ratio is below ``min_ratio``.
- **several gaps** (one per subspace, e.g. stds 1 and 0.3): ``n_gaps`` counts them and
  ``candidates`` (1-D input only) lists the dimension each would give, largest dimension first.
  ``"cliff"`` reports the first cliff from the top (the largest dimension: every subspace that
  still has a gap); ``"gap"`` reports the deepest one.
- **cliff too close to the top**: the paper's detector needs at least ``drop + 2`` values above
  the cliff (the second difference is centred); with fewer it under-counts by one or misses it.
- **noisy plateaus**: a noisy but gap-free spectrum can still have one second difference above
  10 x the median (a false cliff); ``contrast`` close to 1 flags it.

All estimators are vectorised over leading axes: ``singular_values`` of shape (..., d) give
``dimension`` of shape (...). ``float(result)`` works for a single spectrum.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geomem.theory._checks import as_real, check_choice, check_real, show

__all__ = ["CLIFF_DROP", "CLIFF_FACTOR", "DEFAULT_MIN_GAP_RATIO", "DEFAULT_RATIO_THRESHOLD",
           "METHODS", "DimensionEstimate", "estimate_dimension"]

#: THEORY §6: the paper drops the 5 largest singular values before looking for the cliff
CLIFF_DROP = 5
#: THEORY §6: the cliff is where the second difference exceeds 10 x its median
CLIFF_FACTOR = 10.0
#: relative floor of the cliff threshold: with exactly flat plateaus the median second
#: difference is 0 and round-off (~1e-16 relative) must not count as a cliff
CLIFF_FLOOR = 1e-9
#: a consecutive ratio below 1.5 is within the scatter of orthogonal-group spectra estimated
#: from d directions, so it is not reported as a gap
DEFAULT_MIN_GAP_RATIO = 1.5
#: s/s_max < 1/2 <=> signal variance > noise variance for a population score (module doc)
DEFAULT_RATIO_THRESHOLD = 0.5
#: singular values are clipped at this fraction of the largest before taking logs (zeros)
_LOG_FLOOR = 1e-300

METHODS = ("cliff", "gap", "ratio")


@dataclass(frozen=True)
class DimensionEstimate:
    """Result of :func:`estimate_dimension`; arrays have the leading shape (...) of the input.

    Attributes
    ----------
    dimension : float array, number of singular values below the detected gap; NaN when
        ``found`` is False.
    found : bool array, whether a gap/cliff was detected.
    position : int array, number of singular values above the gap (``d - dimension``;
        -1 when not found).
    contrast : float array, strength of the chosen gap: cliff: D_i / threshold (> 1 when
        found); gap: the consecutive ratio s_i/s_(i+1); ratio: s_max / s at the threshold
        crossing (the smallest kept-value ratio above the threshold).
    n_gaps : int array, number of separate gaps/cliffs exceeding the criterion.
    statistic : float array (..., k), the per-position statistic (cliff: D_i for the centres
        i = 1..n-2; gap: log ratios; ratio: s / s_max of the kept values).
    candidates : for 1-D input, the dimensions of every detected gap (largest first); else None.
    method, options : the method and its resolved options.
    """

    dimension: np.ndarray
    found: np.ndarray
    position: np.ndarray
    contrast: np.ndarray
    n_gaps: np.ndarray
    statistic: np.ndarray
    candidates: tuple[int, ...] | None
    method: str
    options: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        if np.ndim(self.dimension) != 0:
            raise TypeError("float() needs a single spectrum; use .dimension for a batch")
        return float(self.dimension)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (without the per-position statistic)."""
        return {"method": self.method, "options": self.options,
                "dimension": np.asarray(self.dimension).tolist(),
                "found": np.asarray(self.found).tolist(),
                "position": np.asarray(self.position).tolist(),
                "contrast": np.asarray(self.contrast).tolist(),
                "n_gaps": np.asarray(self.n_gaps).tolist(),
                "candidates": list(self.candidates) if self.candidates is not None else None}


def estimate_dimension(singular_values: Any, method: str = "cliff", *, drop: int | None = None,
                       factor: float = CLIFF_FACTOR, min_ratio: float = DEFAULT_MIN_GAP_RATIO,
                       threshold: float = DEFAULT_RATIO_THRESHOLD, no_gap: float = np.nan
                       ) -> DimensionEstimate:
    """Dimension (number of small singular values below the gap) of spectra (..., d).

    Parameters
    ----------
    singular_values : array (..., d), non-negative, any order (sorted descending here).
    method : "cliff" (paper, THEORY §6), "gap" (largest log gap) or "ratio" (threshold).
    drop : number of largest values ignored (default 5 for "cliff", 0 otherwise); they count as
        "above the gap".
    factor : cliff threshold = factor x median second difference ("cliff").
    min_ratio : smallest consecutive ratio counted as a gap ("gap"; > 1).
    threshold : values below threshold x largest kept value are counted ("ratio"; in (0, 1)).
    no_gap : the ``dimension`` reported where no gap is found (default NaN).
    """
    check_choice("method", method, METHODS)
    sv = as_real("singular_values", singular_values)
    if sv.ndim == 0:
        raise ValueError("singular_values must have shape (..., d) with d >= 1, got a scalar")
    if not np.all(np.isfinite(sv)) or np.any(sv < 0):
        raise ValueError("singular_values must be finite and >= 0")
    d = sv.shape[-1]
    if drop is None:
        drop = CLIFF_DROP if method == "cliff" else 0
    if isinstance(drop, bool) or not isinstance(drop, (int, np.integer)) or drop < 0:
        raise ValueError(f"drop must be an integer >= 0, got {show(drop)}")
    drop = int(drop)
    needed = drop + (3 if method == "cliff" else 2 if method == "gap" else 1)
    if d < needed:
        raise ValueError(f"singular_values: method {method!r} with drop={drop} needs d >= "
                         f"{needed} values on the last axis, got d = {d}")
    factor, min_ratio, threshold = (check_real(n, v) for n, v in (
        ("factor", factor), ("min_ratio", min_ratio), ("threshold", threshold)))
    no_gap = check_real("no_gap", no_gap, allow_nan=True)
    if method == "cliff" and not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    if method == "gap" and not min_ratio > 1:
        raise ValueError(f"min_ratio must be > 1, got {min_ratio}")
    if method == "ratio" and not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    sv = -np.sort(-sv, axis=-1)                                  # descending
    kept = sv[..., drop:]
    if method == "cliff":
        result = _cliff(kept, d, drop, float(factor))
    elif method == "gap":
        result = _gap(kept, d, drop, float(min_ratio))
    else:
        result = _ratio(kept, d, drop, float(threshold))
    if np.isnan(no_gap):
        return result
    return dataclasses.replace(result, dimension=np.where(result.found, result.dimension,
                                                          float(no_gap)))


def _runs(hits: np.ndarray) -> np.ndarray:
    """Boolean (..., k): True at the first element of each run of consecutive True values."""
    previous = np.zeros_like(hits)
    previous[..., 1:] = hits[..., :-1]
    return hits & ~previous


def _candidates(starts: np.ndarray, dims_of_start: np.ndarray) -> tuple[int, ...] | None:
    if starts.ndim != 1:
        return None
    return tuple(int(x) for x in dims_of_start[starts])


def _cliff(kept: np.ndarray, d: int, drop: int, factor: float) -> DimensionEstimate:
    # second[..., j] is centred at kept index i = j + 1
    second = np.abs(kept[..., 2:] - 2.0 * kept[..., 1:-1] + kept[..., :-2])
    scale = np.max(kept, axis=-1, keepdims=True)
    thr = np.maximum(factor * np.median(second, axis=-1, keepdims=True), CLIFF_FLOOR * scale)
    hits = second > thr
    found = hits.any(axis=-1)
    first = np.argmax(hits, axis=-1)                              # j of the first hit
    # cliff index i = j + 1 (the last large value, in kept indexing): dimension = d - (i+1+drop)
    dims_per_j = d - (np.arange(second.shape[-1]) + 2 + drop)
    dimension = np.where(found, d - (first + 2 + drop), np.nan).astype(np.float64)
    position = np.where(found, first + 2 + drop, -1)
    contrast = np.take_along_axis(second / np.where(thr > 0, thr, 1.0), first[..., None],
                                  axis=-1)[..., 0]
    starts = _runs(hits)
    return DimensionEstimate(dimension=dimension, found=found, position=position,
                             contrast=np.where(found, contrast, np.nan),
                             n_gaps=starts.sum(axis=-1), statistic=second,
                             candidates=_candidates(starts, dims_per_j), method="cliff",
                             options={"drop": drop, "factor": factor})


def _gap(kept: np.ndarray, d: int, drop: int, min_ratio: float) -> DimensionEstimate:
    scale = np.max(kept, axis=-1, keepdims=True)
    logs = np.log(np.maximum(kept, _LOG_FLOOR * np.where(scale > 0, scale, 1.0)))
    log_gaps = logs[..., :-1] - logs[..., 1:]                    # gap j lies below kept[j]
    best = np.argmax(log_gaps, axis=-1)
    ratio = np.exp(np.take_along_axis(log_gaps, best[..., None], axis=-1)[..., 0])
    found = ratio >= min_ratio
    dims_per_j = d - (np.arange(log_gaps.shape[-1]) + 1 + drop)
    dimension = np.where(found, d - (best + 1 + drop), np.nan).astype(np.float64)
    position = np.where(found, best + 1 + drop, -1)
    hits = log_gaps >= np.log(min_ratio)
    return DimensionEstimate(dimension=dimension, found=found, position=position,
                             contrast=ratio, n_gaps=hits.sum(axis=-1), statistic=log_gaps,
                             candidates=_candidates(hits, dims_per_j), method="gap",
                             options={"drop": drop, "min_ratio": min_ratio})


def _ratio(kept: np.ndarray, d: int, drop: int, threshold: float) -> DimensionEstimate:
    scale = np.max(kept, axis=-1, keepdims=True)
    rel = kept / np.where(scale > 0, scale, 1.0)
    below = rel < threshold
    count = below.sum(axis=-1)
    # the smallest ratio still above the threshold, i.e. the value just above the crossing
    above = np.where(below, np.inf, rel)
    contrast = 1.0 / np.min(above, axis=-1)
    found = np.ones(count.shape, dtype=bool)
    return DimensionEstimate(dimension=count.astype(np.float64), found=found,
                             position=d - count, contrast=contrast,
                             n_gaps=(count > 0).astype(np.int64), statistic=rel,
                             candidates=(int(count),) if rel.ndim == 1 else None,
                             method="ratio", options={"drop": drop, "threshold": threshold})

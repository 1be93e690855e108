"""Input validation shared by every public function.

Every check raises ``ValueError`` naming the parameter and the allowed range *before*
any work starts, so a bad call fails fast with a message a researcher can act on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "check_choice",
    "check_finite_array",
    "check_int",
    "check_n_train",
    "check_positive",
    "check_probability",
]


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> np.ndarray:
    """Return ``value`` as a float64 array after checking it is finite and > 0 (>= 0)."""
    arr = np.asarray(value, dtype=np.float64)
    bound = "0 <= {0} < inf" if allow_zero else "0 < {0} < inf"
    if arr.size == 0:
        raise ValueError(f"{name} must be non-empty; allowed range {bound.format(name)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} must be finite; allowed range {bound.format(name)}, got {value!r}"
        )
    bad = arr < 0 if allow_zero else arr <= 0
    if np.any(bad):
        worst = arr[bad].ravel()[0]
        raise ValueError(f"{name} out of range: allowed {bound.format(name)}, got {worst!r}")
    return arr


def check_n_train(value: Any, name: str = "n_train") -> np.ndarray:
    """Training-set sizes: real numbers >= 2 (N may exceed float range only via mpmath)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 2):
        raise ValueError(f"{name} out of range: allowed 2 <= {name} < inf, got {value!r}")
    return arr


def check_int(name: str, value: Any, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        hi = "inf" if maximum is None else str(maximum)
        raise ValueError(f"{name} out of range: allowed {minimum} <= {name} <= {hi}, got {value}")
    return value


def check_probability(name: str, value: Any, *, open_left: bool = True) -> np.ndarray:
    """Numbers in (0, 1] (or [0, 1])."""
    arr = np.asarray(value, dtype=np.float64)
    lo_bad = arr <= 0 if open_left else arr < 0
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(lo_bad) or np.any(arr > 1):
        rng = "0 < {0} <= 1" if open_left else "0 <= {0} <= 1"
        raise ValueError(f"{name} out of range: allowed {rng.format(name)}, got {value!r}")
    return arr


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """One of a fixed set of options."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_finite_array(name: str, value: Any, *, ndim_min: int = 1, last_dim: int | None = None
                       ) -> np.ndarray:
    """A finite float64 array with at least ``ndim_min`` axes and, optionally, a fixed last axis."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim < ndim_min:
        raise ValueError(f"{name} must have at least {ndim_min} axes, got shape {arr.shape}")
    if last_dim is not None and arr.shape[-1] != last_dim:
        raise ValueError(f"{name} must have last axis of length {last_dim}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr

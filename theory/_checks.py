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
    "as_generator",
    "as_real",
    "check_real",
    "check_probability",
    "show",
]

#: largest integer any count accepts (int64: sizes beyond it cannot index an array)
INT_MAX = 2**63 - 1
#: longest rendering of an offending value in a message (longer ones are cut with "...")
_SHOW_CHARS = 60


def show(value: Any) -> str:
    """A value as it reads in an error message: ``-1.0`` rather than ``np.float64(-1.0)``,
    small arrays as ``[1. 2.]``, large ones by shape, long reprs cut."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        text = (np.array2string(value, threshold=6, precision=6) if value.size <= 6
                else f"an array of shape {value.shape}")
    else:
        text = repr(value)
    return text if len(text) <= _SHOW_CHARS else text[:_SHOW_CHARS - 3] + "..."


def as_real(name: str, value: Any) -> np.ndarray:
    """value as a float64 array; ValueError naming ``name`` for strings, complex numbers,
    ragged lists and other non-real input (numpy's own message does not name it)."""
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a real number or array, got the string {show(value)}")
    try:
        arr = np.asarray(value)
        if arr.dtype.kind == "c" or arr.dtype.kind in "SUV":
            raise TypeError
        return np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{name} must be a real number or array, got "
                         f"{type(value).__name__} {show(value)}") from exc


def as_generator(name: str, rng: Any) -> np.random.Generator:
    """``np.random.default_rng(rng)`` with a message naming ``name`` for anything that is not a
    seed (non-negative int or sequence of them), a Generator, a SeedSequence or None."""
    if isinstance(rng, bool):
        raise ValueError(f"{name} must be an integer seed >= 0, a numpy Generator or None, "
                         f"got {show(rng)}")
    try:
        return np.random.default_rng(rng)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{name} must be an integer seed >= 0, a numpy Generator or None, "
                         f"got {show(rng)}") from exc


def check_real(name: str, value: Any, *, allow_nan: bool = False) -> float:
    """A real scalar (a Python or numpy number, not bool or str) as float; NaN only if allowed.
    Range checks are the caller's."""
    arr = None if isinstance(value, (bool, str, bytes)) else as_real(name, value) if np.ndim(
        value) == 0 else None
    if arr is None or (np.isnan(arr) and not allow_nan):
        raise ValueError(f"{name} must be a real number, got {show(value)}")
    return float(arr)


def _first_bad(arr: np.ndarray, bad: np.ndarray, value: Any) -> str:
    """The first offending element (or the whole value when it is a scalar)."""
    if arr.ndim == 0:
        return show(value)
    return show(arr[bad].ravel()[0]) + " (first offending element)"


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> np.ndarray:
    """Return ``value`` as a float64 array after checking it is finite and > 0 (>= 0)."""
    arr = as_real(name, value)
    bound = "0 <= {0} < inf" if allow_zero else "0 < {0} < inf"
    if arr.size == 0:
        raise ValueError(f"{name} must be non-empty; allowed range {bound.format(name)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; allowed range {bound.format(name)}, got "
                         f"{_first_bad(arr, ~np.isfinite(arr), value)}")
    bad = arr < 0 if allow_zero else arr <= 0
    if np.any(bad):
        raise ValueError(f"{name} out of range: allowed {bound.format(name)}, got "
                         f"{_first_bad(arr, bad, value)}")
    return arr


def check_n_train(value: Any, name: str = "n_train") -> np.ndarray:
    """Training-set sizes: real numbers >= 2 (N may exceed float range only via mpmath)."""
    arr = as_real(name, value)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 2):
        raise ValueError(f"{name} out of range: allowed 2 <= {name} < inf, got {show(value)}")
    return arr


def check_int(name: str, value: Any, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {show(value)}")
    value = int(value)
    maximum = INT_MAX if maximum is None else min(maximum, INT_MAX)
    if value < minimum or value > maximum:
        hi = str(maximum)
        raise ValueError(f"{name} out of range: allowed {minimum} <= {name} <= {hi}, got {value}")
    return value


def check_probability(name: str, value: Any, *, open_left: bool = True) -> np.ndarray:
    """Numbers in (0, 1] (or [0, 1])."""
    arr = as_real(name, value)
    lo_bad = arr <= 0 if open_left else arr < 0
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(lo_bad) or np.any(arr > 1):
        rng = "0 < {0} <= 1" if open_left else "0 <= {0} <= 1"
        raise ValueError(f"{name} out of range: allowed {rng.format(name)}, got {show(value)}")
    return arr


def _same(value: Any, option: Any) -> bool:
    """``value == option`` for plain values; arrays and objects whose comparison fails (or is
    not a single truth value) are never an allowed option."""
    if isinstance(value, np.ndarray):
        return False
    try:
        return bool(value == option)
    except (TypeError, ValueError):
        return False


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """One of a fixed set of options."""
    allowed = tuple(allowed)
    if not any(_same(value, option) for option in allowed):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got "
                         f"{show(value)}")
    return value


def check_finite_array(name: str, value: Any, *, ndim_min: int = 1, last_dim: int | None = None
                       ) -> np.ndarray:
    """A finite float64 array with at least ``ndim_min`` axes and, optionally, a fixed last axis."""
    arr = as_real(name, value)
    if arr.ndim < ndim_min:
        raise ValueError(f"{name} must have at least {ndim_min} axes, got shape {arr.shape}")
    if last_dim is not None and arr.shape[-1] != last_dim:
        raise ValueError(f"{name} must have last axis of length {last_dim}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr

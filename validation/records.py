"""Experiment outputs: figures (PNG + PDF), tidy CSV, a JSON run record, and resumable caches.

Every ``geomem`` command writes into one output folder through :class:`RunOutput`:

- ``<stem>.png`` and ``<stem>.pdf`` via :meth:`RunOutput.save_figure`;
- ``<stem>.csv`` (tidy: one row per observation) via :meth:`RunOutput.write_csv`;
- ``record.json`` (parameters, seeds, package versions, git revision, timings) via
  :meth:`RunOutput.write_record`;
- ``cache/<key>.json`` per finished grid point via :meth:`RunOutput.cached`: a re-run skips
  points whose cache file exists, so an interrupted run resumes and loses nothing finished.
  CSVs are assembled from the cache in a canonical order, so a resumed run writes a CSV
  byte-identical to an uninterrupted one.

Strict JSON: every JSON file written here (``record.json`` and the cache) is written with
``allow_nan=False``, so any standard parser reads it. JSON has no NaN or infinity, so a
non-finite float is written as one of the strings ``"nan"`` (not measured / undefined),
``"inf"`` or ``"-inf"`` (e.g. "never lost in the time range"): :func:`to_jsonable` does this,
and :func:`from_jsonable` (applied when a cache entry is read back) turns exactly these three
strings into floats again, so a cached result round-trips to the same floats.
``float(value)`` and ``numpy.asarray(values, dtype=float)`` read the strings too.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NONFINITE", "RunOutput", "dumps", "from_jsonable", "git_revision", "package_versions",
           "to_jsonable"]

_VERSIONED = ("geomem", "numpy", "scipy", "mpmath", "sympy", "numba", "torch", "matplotlib",
              "typer", "dask", "distributed", "scikit-learn", "scikit-dimension")


def package_versions() -> dict[str, str | None]:
    """Installed versions of geomem and its scientific stack (None where absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(path: str | os.PathLike | None = None) -> str | None:
    """The git commit of the source tree (with ``-dirty`` if modified), or None outside git."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty.strip() else "") if rev else None


#: how non-finite floats are spelled in JSON (strict JSON has no NaN or infinity)
NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _float_text(x: float) -> str:
    return "nan" if x != x else ("inf" if x > 0 else "-inf")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and objects with ``to_dict`` for strict json.

    Non-finite floats (python or numpy) become the strings "nan", "inf", "-inf".
    """
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not np.isfinite(obj):
        return _float_text(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_jsonable(obj: Any) -> Any:
    """Inverse of :func:`to_jsonable` for floats: "nan", "inf", "-inf" back to floats."""
    if isinstance(obj, str):
        return NONFINITE.get(obj, obj)
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: from_jsonable(v) for k, v in obj.items()}
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``obj`` (through :func:`to_jsonable`; never a bare NaN)."""
    return json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)


def _cache_key(key: Mapping[str, Any]) -> str:
    text = dumps(key, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


class RunOutput:
    """One output folder of one experiment (created on construction)."""

    def __init__(self, out: str | os.PathLike, command: str):
        self.path = Path(out)
        self.path.mkdir(parents=True, exist_ok=True)
        self.command = command
        self.cache_dir = self.path / "cache"
        self._started = _dt.datetime.now(_dt.timezone.utc)
        self.files: list[str] = []

    # --------------------------------------------------------------- cache / resume
    def cached(self, key: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
        """Return the stored result for ``key`` or compute it, store it atomically, return it.

        ``key`` is a JSON-able mapping that identifies one grid point (parameters and seed);
        the result must be JSON-able (numbers, lists, dicts). Writing goes through a temporary
        file and ``os.replace`` so an interrupted write never leaves a half file behind.
        """
        self.cache_dir.mkdir(exist_ok=True)
        file = self.cache_dir / f"{_cache_key(key)}.json"
        if file.exists():
            return from_jsonable(json.loads(file.read_text())["result"])
        result = to_jsonable(compute())
        tmp = file.with_suffix(".tmp")
        tmp.write_text(dumps({"key": key, "result": result}, sort_keys=True))
        os.replace(tmp, file)
        return from_jsonable(result)

    def is_cached(self, key: Mapping[str, Any]) -> bool:
        """Whether a finished result for ``key`` is stored."""
        return (self.cache_dir / f"{_cache_key(key)}.json").exists()

    # --------------------------------------------------------------- outputs
    def save_figure(self, fig: Any, stem: str, dpi: int = 150) -> list[Path]:
        """Save a matplotlib figure as ``stem.png`` and ``stem.pdf``; returns both paths."""
        paths = [self.path / f"{stem}.png", self.path / f"{stem}.pdf"]
        # lay out and measure the tight box once: bbox_inches="tight" with a layout engine
        # would run the layout and a dry draw again for each file (half of a --quick report's
        # time went into drawing)
        # at the PNG's dpi, as savefig's own first draw was (quiver fixes its scale then)
        screen_dpi = fig.dpi
        fig.set_dpi(dpi)
        fig.draw_without_rendering()
        from matplotlib import rcParams

        bbox = fig.get_tightbbox().padded(rcParams["savefig.pad_inches"])
        engine = fig.get_layout_engine()
        fig.set_layout_engine("none")
        try:
            fig.savefig(paths[0], dpi=dpi, bbox_inches=bbox)
            # fixed metadata so that re-runs give identical PDFs apart from content changes
            fig.savefig(paths[1], bbox_inches=bbox, metadata={"CreationDate": None})
        finally:
            fig.set_layout_engine(engine)
            fig.set_dpi(screen_dpi)
        self.files += [p.name for p in paths]
        return paths

    def write_csv(self, stem: str, rows: Iterable[Mapping[str, Any]],
                  columns: list[str] | None = None) -> Path:
        """Write tidy rows (dicts) to ``stem.csv``; floats in repr (round-trip) precision."""
        rows = list(rows)
        if columns is None:
            columns = list(rows[0].keys()) if rows else []
        path = self.path / f"{stem}.csv"
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_fmt(row.get(c)) for c in columns])
        self.files.append(path.name)
        return path

    def write_record(self, parameters: Mapping[str, Any], seeds: Any = None,
                     extra: Mapping[str, Any] | None = None) -> Path:
        """Write ``record.json``: command, parameters, seeds, versions, git revision, timing."""
        now = _dt.datetime.now(_dt.timezone.utc)
        record = {
            "command": self.command,
            "argv": sys.argv,
            "parameters": to_jsonable(parameters),
            "seeds": to_jsonable(seeds),
            "versions": package_versions(),
            "git_revision": git_revision(),
            "platform": platform.platform(),
            "started_utc": self._started.isoformat(),
            "finished_utc": now.isoformat(),
            "wall_seconds": (now - self._started).total_seconds(),
            "files": sorted(set(self.files)),
        }
        if extra:
            record.update(to_jsonable(extra))
        path = self.path / "record.json"
        path.write_text(dumps(record, indent=2, sort_keys=True))
        return path


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)

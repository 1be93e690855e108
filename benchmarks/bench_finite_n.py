"""Benchmark: the exact finite-N theory (`geomem.theory.finite_n`) before and after the fused
numba contour kernels, per (t, N) point, fresh test points (36 quadrature points at d = 30).

Run: ``python benchmarks/bench_finite_n.py [--dims 30 100 300 1000] [--schedules vp ve]
[--times 1e-5 1e-3 0.01 0.1 1] [--n-train 1e3 1e6 1e12] [--no-old]``.

"Before" is the r-integral module as it was at git revision ``OLD_REVISION``
(``git show OLD_REVISION:theory/_finite_n_bromwich.py``, executed as a temporary module of
the package, so it uses the numpy Newton solves and the `_line_kernels` tau rule); "after"
is the installed one. Both run in this process on the same inputs, each point once (the
old code takes up to a minute per point) after one warm-up call of the new code (which also
loads the cached numba kernels). Geometries: d = 30 with subspaces (2, 5) (the rem-check /
Figure-4 proportions) and d = 100, 300, 1000 with (d // 15, d // 6); stds 1 and 0.3.
Prints the wall time of each, their ratio and the largest relative difference over
E[sum w^2], E[sum w |P_k y|^2] and E[|P_k ybar|^2]; then the overall largest difference.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

import geomem.theory.finite_n as finite_n_module
from geomem.theory import LinearManifold, finite_n_expectations

#: the revision whose r-integral module is "before" (the last one without the fused kernels)
OLD_REVISION = "00739d8"
OLD_PATH = "theory/_finite_n_bromwich.py"
FIELDS = ("sum_w2", "weighted_sq_norm", "mean_sq_norm")


def model_at(d: int) -> LinearManifold:
    dims = (2, 5) if d == 30 else (d // 15, d // 6)
    return LinearManifold(d, dims, stds=(1.0, 0.3))


def load_old_bromwich() -> types.ModuleType:
    """The old module from git, run inside the package (its relative imports resolve)."""
    repo = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{OLD_REVISION}:{OLD_PATH}"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("geomem.theory._finite_n_bromwich_old")
    module.__package__ = "geomem.theory"
    exec(compile(source, f"{OLD_REVISION}:{OLD_PATH}", "exec"), module.__dict__)  # noqa: S102
    return module


def timed(bromwich, model, t, n, schedule):
    """Wall time and result of one fresh-point expectation with the given r integral."""
    saved = finite_n_module.bromwich
    finite_n_module.bromwich = bromwich
    try:
        start = time.perf_counter()
        res = finite_n_expectations(model, t, n, schedule, x="fresh")
        return time.perf_counter() - start, res
    finally:
        finite_n_module.bromwich = saved


def max_rel_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(getattr(a, f)) - getattr(b, f))
                            / np.abs(getattr(a, f)))) for f in FIELDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[30, 100, 300, 1000])
    parser.add_argument("--schedules", nargs="+", default=["vp", "ve"])
    parser.add_argument("--times", type=float, nargs="+", default=[1e-5, 1e-3, 0.01, 0.1, 1.0])
    parser.add_argument("--n-train", type=float, nargs="+", default=[1e3, 1e6, 1e12])
    parser.add_argument("--no-old", action="store_true", help="time the new code only")
    args = parser.parse_args()
    old = None if args.no_old else load_old_bromwich()
    new = finite_n_module.bromwich
    timed(new, model_at(30), 0.1, 10, "vp")  # warm-up: loads the numba cache
    print(f"{'d':>5s} {'sched':5s} {'t':>7s} {'N':>7s} {'old [s]':>8s} {'new [s]':>8s} "
          f"{'ratio':>6s} {'max rel diff':>12s} {'E[sum w^2]':>11s}")
    worst, new_times = 0.0, []
    for d in args.dims:
        model = model_at(d)
        for schedule in args.schedules:
            for t in args.times:
                for n_float in args.n_train:
                    n = int(n_float)
                    t_new, res_new = timed(new, model, t, n, schedule)
                    new_times.append(t_new)
                    cols = f"{'-':>8s} {t_new:8.2f} {'-':>6s} {'-':>12s}"
                    if old is not None:
                        t_old, res_old = timed(old.bromwich, model, t, n, schedule)
                        diff = max_rel_diff(res_old, res_new)
                        worst = max(worst, diff)
                        cols = f"{t_old:8.2f} {t_new:8.2f} {t_old / t_new:6.1f} {diff:12.1e}"
                    print(f"{d:5d} {schedule:5s} {t:7.0e} {n_float:7.0e} {cols} "
                          f"{float(res_new.sum_w2):11.4g}", flush=True)
    print(f"new: median {np.median(new_times):.2f} s, max {max(new_times):.2f} s per point; "
          f"{sum(x < 1.0 for x in new_times)}/{len(new_times)} points under 1 s")
    if old is not None:
        print(f"max relative difference old vs new: {worst:.1e}")


if __name__ == "__main__":
    sys.exit(main())

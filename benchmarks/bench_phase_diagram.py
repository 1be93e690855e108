"""Benchmark: theory phase diagrams and REM solvers on the Figure-4 geometry.

Run: ``python benchmarks/bench_phase_diagram.py [--grid 500] [--repeats 3]``. Prints the best
wall time of each step over the repeats (after one warm-up call):

- ``phase_diagram`` for "rem" (annealed lam*) and "paper" on a grid x grid (N, t) grid;
- ``annealed_freezing_parameter`` alone on the same grid;
- ``freezing_parameter`` (quenched average by tensor-product quadrature) on 200 times;
- ``collapse_time`` for 10^4 values of N at d = 10^6.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from geomem.theory import VE, LinearManifold
from geomem.theory.phase import phase_diagram
from geomem.theory.rem import annealed_freezing_parameter, collapse_time, freezing_parameter


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=500, help="points per axis of the (N, t) grid")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = LinearManifold.figure4(theory=True)
    n_values = np.geomspace(10, 1e6, args.grid)
    t_values = np.geomspace(1e-4, 1, args.grid)
    big = LinearManifold(10**6, (10**5, 2 * 10**5), stds=(1.0, 0.3), residual_std=1e-3)
    cases = {
        f"phase_diagram rem {args.grid}x{args.grid}":
            lambda: phase_diagram(model, n_values, t_values, VE(), "rem"),
        f"phase_diagram paper {args.grid}x{args.grid}":
            lambda: phase_diagram(model, n_values, t_values, VE(), "paper"),
        f"annealed_freezing_parameter {args.grid}x{args.grid}":
            lambda: annealed_freezing_parameter(model, t_values[None, :], n_values[:, None], VE()),
        "freezing_parameter quenched average, 200 t":
            lambda: freezing_parameter(model, np.geomspace(1e-4, 1, 200), 1000, VE()),
        "collapse_time 1e4 N, d=1e6":
            lambda: collapse_time(big, np.geomspace(2, 1e300, 10**4), VE()),
    }
    for name, fn in cases.items():
        print(f"{name:55s} {best_time(fn, args.repeats):8.3f} s")


if __name__ == "__main__":
    main()

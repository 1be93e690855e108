"""Benchmark: one (t, N) point of the exact finite-N theory (`geomem.theory.finite_n`).

Run: ``python benchmarks/bench_finite_n.py [--repeats 2] [--n-train 1000]``. Prints the best
wall time over the repeats (after one warm-up call, which also loads the cached numba kernel)
of ``finite_n_expectations`` at the origin, at one explicit test point and averaged over fresh
test points (default quadrature, 6 nodes per energy group), for the Figure-4 proportions
(subspaces round(2d/30) and round(5d/30), stds 1 and 0.3) at d = 30, 100, 1000, under VP at a
generalization time (t = 1), the crossover (t = 0.1) and deep memorization (t = 0.003).
Beside each time: E[sum w^2] (to show the regime) and, for the fresh average, the number of
quadrature points.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from geomem.theory import VP, LinearManifold, finite_n_expectations

DIMENSIONS = (30, 100, 1000)
TIMES = {"generalization": 1.0, "crossover": 0.1, "memorization": 0.003}


def model_at(d: int) -> LinearManifold:
    return LinearManifold(d, (max(1, round(2 * d / 30)), max(1, round(5 * d / 30))),
                          stds=(1.0, 0.3))


def best_time(fn, repeats: int) -> tuple[float, object]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=1000)
    args = parser.parse_args()
    schedule = VP()
    print(f"{'d':>5s} {'regime':15s} {'test point':10s} {'time [s]':>9s} {'E[sum w^2]':>11s}")
    for d in DIMENSIONS:
        model = model_at(d)
        rng = np.random.default_rng(0)
        for regime, t in TIMES.items():
            a, delta = float(schedule.a(t)), float(schedule.delta(t))
            point = a * model.sample(1, rng)[0] + np.sqrt(delta) * rng.standard_normal(d)
            for label, x in (("origin", "origin"), ("explicit", point), ("fresh", "fresh")):
                seconds, res = best_time(
                    lambda x=x, t=t, model=model: finite_n_expectations(
                        model, t, args.n_train, schedule, x=x), args.repeats)
                print(f"{d:5d} {regime:15s} {label:10s} {seconds:9.3f} "
                      f"{float(np.mean(res.sum_w2)):11.4g}", flush=True)


if __name__ == "__main__":
    main()

"""Large-N per-point Monte Carlo: time per draw and head size against N, beside brute force.

    python benchmarks/bench_large_n.py [--d 30] [--t 1e-3] [--draws 20]

Geometry: the Figure-4 proportions (dims d/15 and d/6, stds 1 and 0.3), VP schedule, fresh
test points, tol 1e-3. For each N in 1e3 ... 1e300, `sample_empirical_jacobians` is timed per
draw (median head size, largest tail error). Where affordable (N <= 1e6), the baseline a user
would write is timed too: draw the N x d training set and run the exact kernel
(`jacobian_spectrum`, numpy float64) on one fresh point. Its flop rate (3 N d flops for the
distances and the weighted moments) is printed as a fraction of the machine's float64 GEMM
rate.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from _bench_harness import matmul_rate  # benchmarks/ is on sys.path when this script runs

from geomem.numerics import jacobian_spectrum, sample_empirical_jacobians
from geomem.theory import LinearManifold
from geomem.theory.schedules import get_schedule

N_VALUES = (1e3, 1e4, 1e5, 1e6, 1e10, 1e30, 1e100, 1e300)
#: brute force only up to here (memory N d floats; time ~ N d)
BRUTE_MAX_N = 1e6


def _brute(model, t, n, draws, rng):
    sch = get_schedule("vp")
    a, delta = float(sch.a(t)), float(sch.delta(t))
    bases = [model.subspace_basis(k) for k in range(model.n_subspaces)]
    t0 = time.perf_counter()
    for _ in range(draws):
        y = model.sample(int(n), rng)
        x = a * model.sample(1, rng) + math.sqrt(delta) * rng.standard_normal((1, model.d))
        jacobian_spectrum(x, y, a=a, delta=delta, subspaces=bases)
    return (time.perf_counter() - t0) / draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=30)
    parser.add_argument("--t", type=float, default=1e-3)
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args()
    d = args.d
    model = LinearManifold(d, dims=(max(1, d // 15), max(1, d // 6)), stds=(1.0, 0.3))
    gflops = matmul_rate("numpy", "float64", "cpu", 1024)
    print(f"d={d} t={args.t} VP, fresh points, {args.draws} draws; float64 GEMM "
          f"{gflops:.1f} GFLOP/s")
    print(f"{'N':>8} {'ms/draw':>9} {'head':>6} {'max err':>8} {'brute ms':>9} {'ratio':>8} "
          f"{'brute GEMM frac':>15}")
    rng = np.random.default_rng(0)
    for n in N_VALUES:
        t0 = time.perf_counter()
        try:
            out = sample_empirical_jacobians(model, args.t, n, "vp", draws=args.draws,
                                             seed=1, max_head=256 if n <= 1e4 else 4096)
        except (ValueError, RuntimeError) as exc:    # not condensed here: say so, go on
            print(f"{n:8.0e} refused: {str(exc)[:70]}", flush=True)
            continue
        per_draw = (time.perf_counter() - t0) / args.draws
        line = (f"{n:8.0e} {per_draw * 1e3:9.2f} {np.median(out.head_size):6.0f} "
                f"{out.tail_error.max():8.1e}")
        if n <= BRUTE_MAX_N:
            brute = _brute(model, args.t, n, max(2, args.draws // 4), rng)
            frac = 3 * n * d / brute / (gflops * 1e9)
            line += f" {brute * 1e3:9.2f} {brute / per_draw:8.1f} {frac:15.3f}"
        else:
            line += f" {'-':>9} {'-':>8} {'-':>15}"
        print(line, flush=True)


if __name__ == "__main__":
    main()

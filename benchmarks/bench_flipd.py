"""Exact empirical FLIPD against the baseline a user would write: autodiff of the trace.

    python benchmarks/bench_flipd.py [--n 1000] [--d 100] [--b 64]

FLIPD(x) = d + delta (tr grad s + |s|^2) at x_t = a x, for the exact empirical score of
Y (N, d) and clean queries X (B, d). Baseline: torch.func.jacrev of the empirical score
(float64), trace of each (d, d) Jacobian. geomem: ``empirical_flipd`` (one O(B N d) pass;
numpy, numba and torch backends).
Prints best-of-3 wall times, the speed-up over the baseline, the largest relative difference,
and the fraction of the machine's float64 GEMM rate the exact pass reaches (its 4 B N d flops:
the distance GEMM and the weighted moments).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _bench_harness import matmul_rate  # benchmarks/ is on sys.path when this script runs

from geomem.numerics import empirical_flipd


def _best(fn, repeats: int = 3) -> tuple[float, np.ndarray]:
    out, best = None, float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, np.asarray(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--b", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    Y, X = rng.standard_normal((args.n, args.d)), rng.standard_normal((args.b, args.d))
    a, delta = 0.9, 0.3
    Yt, Xt = torch.as_tensor(Y), torch.as_tensor(X)

    def score(x):                                      # exact empirical score, float64
        logits = -((x[None] - a * Yt) ** 2).sum(-1) / (2 * delta)
        return (a * torch.softmax(logits, 0) @ Yt - x) / delta

    def baseline():
        jac = torch.vmap(torch.func.jacrev(score))(a * Xt)     # FLIPD reads the score at a x
        s = torch.vmap(score)(a * Xt)
        return (args.d + delta * (torch.diagonal(jac, dim1=1, dim2=2).sum(-1)
                                  + (s ** 2).sum(-1))).numpy()

    t_base, ref = _best(baseline)
    gflops = matmul_rate("numpy", "float64", "cpu", 1024)
    print(f"B={args.b} N={args.n} d={args.d}; float64 GEMM {gflops:.1f} GFLOP/s")
    print(f"autodiff of the trace (torch.func.jacrev): {t_base * 1e3:.2f} ms")
    for backend in ("numpy", "numba", "torch"):
        t, val = _best(lambda backend=backend: empirical_flipd(X, Y, a=a, delta=delta,
                                                                backend=backend))
        err = float(np.max(np.abs(val - ref) / np.abs(ref)))
        rate = 4 * args.b * args.n * args.d / t / 1e9
        print(f"empirical_flipd[{backend}]: {t * 1e3:.2f} ms, {t_base / t:.1f}x the baseline, "
              f"max rel. diff {err:.1e}, {rate:.2f} GFLOP/s = {rate / gflops:.1%} of GEMM")


if __name__ == "__main__":
    main()

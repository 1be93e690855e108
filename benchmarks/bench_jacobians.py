"""Benchmark: empirical-score Jacobian spectra — autodiff vs naive numpy vs geomem kernels.

Run: ``python benchmarks/bench_jacobians.py [--quick] [--cases 1e3x30,1e4x784,1e5x784]
[--device cpu|cuda] [--threads 1] [--budget 2.0] [--batch 64]``.  See benchmarks/README.md.

For every case (N training points, dimension d), regime and method it reports the time to get
the d singular values of the Jacobian of the empirical score at B queries, the time as a
multiple of the method's flop floor at this machine's measured matrix-multiply rate (same dtype,
same library, measured in the same run), peak memory and the error against the float64
reference.  Methods:

- ``autodiff``: what a user would write — a torch empirical score, ``torch.func.vmap(jacrev)``
  chunked over queries to fit memory, then ``torch.linalg.svdvals`` (float32 and float64);
- ``naive``: the closed form in numpy, one query at a time (weights, d x d weighted covariance
  by one GEMM, ``eigvalsh``) in float32 and float64;
- ``geomem <backend> <path>``: ``jacobian_spectrum`` with backends numpy, numba, torch
  (float32/float64) and paths auto/dense/gram/lowrank (gram only when the weight support K < d,
  lowrank only when rank(Y) <= d/2).

Each method gets a time budget: one warm-up query, then as many queries as fit the budget.  When
fewer than B queries were timed, the B-query time is extrapolated with a fixed + per-query cost
model fitted to the 1-query and q-query timings (marked ``*`` in the table).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from _bench_harness import (  # benchmarks/ is on sys.path when this script runs
    Row,
    add_speedups,
    format_table,
    matmul_rate,
    measure,
    targets,
)

from geomem.numerics.empirical import (
    GRAM_MAX_SUPPORT_FRACTION,
    SUPPORT_MASS_TOL,
    jacobian_spectrum,
)

CASES = {"1e3x30": (1_000, 30), "1e4x784": (10_000, 784), "1e5x784": (100_000, 784)}
QUICK_CASES = {"5e2x30": (500, 30), "2e3x128": (2_000, 128)}
REGIMES = ("generalization", "memorization", "rank-r")
#: Intrinsic dimension of the rank-r regime (a linear manifold, r = m = 10 << d = 784).
RANK = 10
#: Noise variance per regime (VE, a = 1; data rows have |y| ~ 1).  Generalisation: Delta = 4
#: spreads the weights over ~80% of N; memorisation: queries sit between 3 training points with
#: Delta = 5e-3, so a handful of points carry the mass; rank-r: an intermediate Delta.
DELTAS = {"generalization": 4.0, "memorization": 5e-3, "rank-r": 0.05}
#: float elements of the (d cotangents x N logits) autodiff temporary per vmap chunk (~256 MB).
AUTODIFF_CHUNK_ELEMENTS = 2**25
RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- data

@dataclass
class Problem:
    case: str
    regime: str
    Y: np.ndarray
    X: np.ndarray
    delta: float
    a: float = 1.0
    support: int = 0            # max over queries of #points with weight > SUPPORT_MASS_TOL / N
    rank: int = 0
    n_eff: float = 0.0          # median participation ratio 1 / sum w^2
    gram_share: float = 0.0     # share of queries with support < GRAM_MAX_SUPPORT_FRACTION d
    gram_support: int = 0       # their largest support
    supports: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # (B,)


def make_problem(case: str, N: int, d: int, regime: str, B: int, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    delta = DELTAS[regime]
    if regime == "rank-r":
        r = min(RANK, d)
        U = np.linalg.qr(rng.standard_normal((d, r)))[0]
        Y = rng.standard_normal((N, r)) / np.sqrt(r) @ U.T
        centres = rng.standard_normal((B, r)) / np.sqrt(r) @ U.T
    else:
        Y = rng.standard_normal((N, d)) / np.sqrt(d)
        if regime == "generalization":
            centres = rng.standard_normal((B, d)) / np.sqrt(d)
        else:                                   # between 3 training points
            centres = Y[rng.integers(0, N, size=(B, 3))].mean(axis=1)
    X = centres + np.sqrt(delta) * rng.standard_normal((B, d))
    problem = Problem(case, regime, Y, X, delta)
    logits = -((X**2).sum(1)[:, None] - 2 * X @ Y.T + (Y**2).sum(1)[None]) / (2 * delta)
    logw = logits - logits.max(1, keepdims=True)
    logw -= np.log(np.exp(logw).sum(1, keepdims=True))
    problem.supports = np.sum(logw > np.log(SUPPORT_MASS_TOL / N), axis=1)
    problem.support = int(np.max(problem.supports))
    # the share of queries `auto` sends to the Gram path and their largest support
    small = problem.supports < GRAM_MAX_SUPPORT_FRACTION * d
    problem.gram_share = float(np.mean(small))
    problem.gram_support = int(np.max(problem.supports[small])) if small.any() else 0
    problem.n_eff = float(np.median(1.0 / np.exp(2 * logw).sum(1)))
    s = np.linalg.svd(Y[: min(N, 4 * d)], compute_uv=False)
    problem.rank = int(np.sum(s > 1e-12 * s[0]))
    return problem


# ----------------------------------------------------------------------------- methods

@dataclass
class Method:
    name: str
    family: str          # autodiff | naive | geomem
    dtype: str
    rate_key: str        # which matmul rate is its peak: "numpy float64", "torch float32", ...
    run: Callable[[np.ndarray], np.ndarray]      # (q, d) queries -> (q, d) singular values
    floor: Callable[[int], float]                # q -> minimal flops for q queries
    path: str = ""
    trace: bool = False  # numpy allocations are visible to tracemalloc
    used: dict = field(default_factory=dict)     # {"path": path actually taken}


def eig_flops(n: int) -> float:
    return 4.0 / 3.0 * n**3     # tridiagonal reduction, eigenvalues only


def dense_floor(N: int, d: int) -> Callable[[int], float]:
    # logits 2Nd, weighted covariance 2Nd^2 (one GEMM-equivalent), eigenvalues (4/3) d^3
    return lambda q: q * (2.0 * N * d + 2.0 * N * d * d + eig_flops(d))


def autodiff_methods(p: Problem, device: str) -> list[Method]:
    N, d = p.Y.shape
    out = []
    for dtype in ("float32", "float64"):
        tdt = getattr(torch, dtype)
        Y = torch.as_tensor(p.Y, dtype=tdt, device=device)
        y_sq = (Y * Y).sum(1)

        def score(x, Y=Y, y_sq=y_sq):                 # one point (d,), the user's torch score
            logits = (p.a * (Y @ x) - 0.5 * p.a**2 * y_sq) / p.delta
            w = torch.softmax(logits, dim=0)
            return (p.a * (w @ Y) - x) / p.delta

        jac = torch.func.vmap(torch.func.jacrev(score))
        chunk = max(1, AUTODIFF_CHUNK_ELEMENTS // (d * N))

        def run(Xq, tdt=tdt, jac=jac, chunk=chunk):
            x = torch.as_tensor(Xq, dtype=tdt, device=device)
            J = torch.cat([jac(x[s:s + chunk]) for s in range(0, x.shape[0], chunk)])
            return torch.linalg.svdvals(J).cpu().numpy().astype(np.float64)

        # forward 4Nd; reverse mode: d cotangents through two (N x d) products: 4Nd^2;
        # svdvals of a d x d matrix: (8/3) d^3 (bidiagonalisation)
        floor = lambda q: q * (4.0 * N * d + 4.0 * N * d * d + 8.0 / 3.0 * d**3)  # noqa: E731
        out.append(Method(f"autodiff torch {dtype}", "autodiff", dtype,
                          f"torch {dtype}", run, floor, path="jacrev+svdvals"))
    return out


def naive_methods(p: Problem) -> list[Method]:
    N, d = p.Y.shape
    out = []
    for dtype in ("float32", "float64"):
        Y = p.Y.astype(dtype)
        eye = np.eye(d, dtype=dtype)

        def run(Xq, Y=Y, eye=eye, dtype=dtype):
            res = []
            for x in Xq.astype(dtype):
                logits = -((x - p.a * Y) ** 2).sum(1) / (2 * p.delta)
                w = np.exp(logits - logits.max())
                w /= w.sum()
                ybar = w @ Y
                C = (Y * w[:, None]).T @ Y - np.outer(ybar, ybar)
                J = (p.a / p.delta) ** 2 * C - eye / p.delta
                res.append(np.abs(np.linalg.eigvalsh(J)))
            return -np.sort(-np.asarray(res, dtype=np.float64), axis=1)

        out.append(Method(f"naive numpy {dtype}", "naive", dtype, f"numpy {dtype}", run,
                          dense_floor(N, d), path="dense", trace=True))
    return out


def geomem_methods(p: Problem, device: str) -> list[Method]:
    N, d = p.Y.shape
    K_i = np.maximum(p.supports, 1).astype(float)
    gram_cost = 2.0 * N * d + 2.0 * K_i**2 * d + eig_flops(K_i)
    r = p.rank
    floors = {
        "dense": dense_floor(N, d),
        # logits 2Nd (shared GEMM) + K x K Gram 2 K^2 d + eigenvalues of K x K
        # each query's own support K_i: logits 2Nd + K_i x K_i Gram 2 K_i^2 d + eigenvalues
        "gram": lambda q: q * float(np.mean(gram_cost)),
        # once per call: QR of Y 2Nd^2 + coordinates 2Ndr; per query: X V 2dr, logits 2Nr,
        # r x r covariance 2Nr^2, eigenvalues of r x r
        "lowrank": lambda q: 2.0 * N * d * d + 2.0 * N * d * r
        + q * (2.0 * d * r + 2.0 * N * r + 2.0 * N * r * r + eig_flops(r)),
    }
    # auto routes each query by its own support: K_i < GRAM_MAX_SUPPORT_FRACTION d to the
    # Gram path, the rest dense (or lowrank)
    small = p.supports < GRAM_MAX_SUPPORT_FRACTION * d
    gram_part = float(np.sum(np.where(small, gram_cost, 0.0))) / len(small)
    floors["gram+dense"] = lambda q: q * (gram_part + (1.0 - small.mean()) * (
        2.0 * N * d + 2.0 * N * d * d + eig_flops(d)))
    floors["gram+lowrank"] = lambda q: (floors["lowrank"](q) * (1.0 - small.mean())
                                        + q * gram_part)
    paths = ["auto", "dense"]
    if p.support < d:
        paths.append("gram")
    if r <= d // 2:
        paths.append("lowrank")
    backends = [("numpy", "float64", {}, "numpy float64"),
                ("numba", "float64", {}, "numpy float64"),
                ("torch", "float32", {"dtype": "float32", "device": device}, "torch float32"),
                ("torch", "float64", {"dtype": "float64", "device": device}, "torch float64")]
    out = []
    for backend, dtype, opts, rate_key in backends:
        for path in paths:
            used = {"path": path}                      # the path `auto` picked, per method

            def run(Xq, backend=backend, path=path, opts=opts, used=used):
                spec = jacobian_spectrum(Xq, p.Y, a=p.a, delta=p.delta, backend=backend,
                                         path=path, **opts)
                used["path"] = spec.path
                return spec.singular_values

            out.append(Method(f"geomem {backend} {dtype}", "geomem", dtype, rate_key, run,
                              lambda q, used=used: floors[used["path"]](q), path=path,
                              trace=backend == "numpy", used=used))
    return out


def numba_compile_times() -> dict[str, float]:
    """First call (compile, or load from numba's on-disk cache) minus a second call, tiny data."""
    from geomem.numerics.empirical import empirical_score, weight_statistics
    rng = np.random.default_rng(0)
    Y, X = rng.standard_normal((20, 3)), rng.standard_normal((2, 3))
    calls = {
        "jacobian_spectrum (covariance kernel)":
            lambda: jacobian_spectrum(X, Y, a=1.0, delta=1.0, backend="numba", path="dense"),
        "empirical_score": lambda: empirical_score(X, Y, a=1.0, delta=1.0, backend="numba"),
        "weight_statistics": lambda: weight_statistics(X, Y, a=1.0, delta=1.0, backend="numba"),
    }
    out = {}
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        first = time.perf_counter() - start
        start = time.perf_counter()
        call()
        out[name] = first - (time.perf_counter() - start)
    return out


# ----------------------------------------------------------------------------- main

def parse_cases(text: str, quick: bool) -> dict[str, tuple[int, int]]:
    table = QUICK_CASES if quick else CASES
    if text is None:
        return table
    out = {}
    for name in text.split(","):
        name = name.strip()
        if name in CASES or name in QUICK_CASES:
            out[name] = {**CASES, **QUICK_CASES}[name]
            continue
        try:
            n_text, d_text = name.lower().split("x")
            out[name] = (int(float(n_text)), int(d_text))
        except ValueError:
            raise SystemExit(  # noqa: B904 (a usage message, no traceback wanted)
               f"--cases: expected NxD items such as 1e4x784, got {name!r}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (seconds)")
    parser.add_argument("--cases", default=None,
                        help=f"comma-separated NxD cases, default {','.join(CASES)}")
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--device", default="cpu", help="cpu or cuda (torch methods)")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS/torch/numba threads (default 1: stable on a shared machine)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timing per method (default 2, --quick 0.2)")
    parser.add_argument("--batch", type=int, default=None, help="queries B (default 64)")
    parser.add_argument("--skip", default="", help="comma-separated method-name substrings")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    regimes = [r.strip() for r in args.regimes.split(",")]
    if not set(regimes) <= set(REGIMES):
        raise SystemExit(f"--regimes must be a subset of {REGIMES}")
    budget = args.budget if args.budget is not None else (0.2 if args.quick else 2.0)
    B = args.batch or (8 if args.quick else 64)
    cases = parse_cases(args.cases, args.quick)
    skip = [s for s in args.skip.split(",") if s]

    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    torch.set_num_threads(args.threads)
    import numba
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))

    started = time.time()
    load_start = os.getloadavg()
    # torch.func's first jacrev call in a process costs ~1 s of tracing: pay it here
    torch.func.vmap(torch.func.jacrev(torch.sin))(torch.ones(2, 3))
    compile_times = numba_compile_times()
    n_rate = 4096 if args.device.startswith("cuda") else 1024
    rates = {f"numpy {dt}": matmul_rate("numpy", dt, "cpu", 1024)
             for dt in ("float32", "float64")}
    rates.update({f"torch {dt}": matmul_rate("torch", dt, args.device, n_rate)
                  for dt in ("float32", "float64")})
    print(f"threads {args.threads}, device {args.device}, B = {B}, budget {budget} s/method, "
          f"load average {load_start[0]:.1f}")
    print("matmul GFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
    print("numba first-call overhead (compile or cache load), s: "
          + ", ".join(f"{k} {v:.2f}" for k, v in compile_times.items()))

    rows: list[Row] = []
    problems = []
    for case, (N, d) in cases.items():
        for regime in regimes:
            p = make_problem(case, N, d, regime, B, args.seed)
            problems.append({"case": case, "regime": regime, "N": N, "d": d, "delta": p.delta,
                             "support_max": p.support, "rank": p.rank,
                             "median_participation_ratio": p.n_eff})
            print(f"\n{case} {regime}: N = {N}, d = {d}, Delta = {p.delta}, median N_eff = "
                  f"{p.n_eff:.1f}, max support K = {p.support}, rank(Y) = {p.rank}, "
                  f"{100 * p.gram_share:.0f}% of queries with K < "
                  f"{GRAM_MAX_SUPPORT_FRACTION:g} d (largest {p.gram_support})", flush=True)
            naive = naive_methods(p)
            reference = naive[1].run(p.X[:1])[0]                # float64 closed form, query 0
            methods = autodiff_methods(p, args.device) + naive + geomem_methods(p, args.device)
            for m in methods:
                label = f"{m.name} {m.path}"
                if any(s in label for s in skip):
                    continue
                row = measure(m, p, budget, args.device, reference, rates)
                rows.append(row)
                how = f" (extrapolated from {row.n_timed})" if row.extrapolated else ""
                print(f"  {label:40} {row.per_query_ms:10.2f} ms/query{how}"
                      f"  x{row.x_floor:.1f} floor  {row.peak_rss_mb:.0f} MB  "
                      f"err {row.rel_error:.1e}", flush=True)
    add_speedups(rows)
    elapsed = time.time() - started
    load_end = os.getloadavg()
    table = format_table(rows)
    goals = targets(rows)
    print("\n" + table)
    print("\n* = B-query time extrapolated from 'timed' queries (fixed + per-query model)."
          "\nGF/q: flop floor per query (GFLOP); xfloor: time / (floor / matmul rate of the "
          "same library and dtype); vs AD / vs naive: speedup over the autodiff / naive "
          "baseline of the same dtype; peakMB: peak RSS increase (CUDA: device memory); "
          "relerr: max |sv - sv_ref| / max sv_ref on query 0 against naive float64.")
    print("\n".join(goals))
    print(f"total {elapsed:.0f} s; load average {load_start[0]:.1f} -> {load_end[0]:.1f} "
          "(shared machine: timings are noisy)")

    args.out.mkdir(parents=True, exist_ok=True)
    stem = "bench_jacobians_quick" if args.quick else "bench_jacobians"
    records = [{k: v for k, v in asdict(r).items() if k != "extra"} for r in rows]
    with open(args.out / f"{stem}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    meta = {"threads": args.threads, "device": args.device, "batch": B, "budget_s": budget,
            "matmul_gflops": rates, "numba_first_call_s": compile_times,
            "load_average_start_end": [load_start[0], load_end[0]], "elapsed_s": elapsed,
            "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "versions": {"numpy": np.__version__, "torch": torch.__version__,
                         "numba": numba.__version__},
            "problems": problems, "targets": goals, "rows": records}
    (args.out / f"{stem}.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {args.out / (stem + '.csv')} and .json")


if __name__ == "__main__":
    main()

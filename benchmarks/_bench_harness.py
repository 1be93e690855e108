"""Measuring harness of benchmarks/bench_jacobians.py: machine rates, peak memory, timing
with a budget and extrapolation, and the report (speed-ups, table, the issue's targets).

The benchmark script itself defines the problems and the methods; this module only measures
and reports them, so either side can change without touching the other.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import torch

__all__ = ["PeakMemory", "Row", "add_speedups", "format_table", "matmul_rate", "measure",
           "sync", "targets", "timed"]

#: RSS sampling period of the peak-memory monitor (s).
RSS_PERIOD = 0.005
#: regimes reported by `targets` (same names as the benchmark's problems)
REGIMES = ("generalization", "memorization", "rank-r")


# ----------------------------------------------------------------------------- machine

def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_rate(lib: str, dtype: str, device: str, n: int) -> float:
    """Best-of-3 GFLOP/s of an n x n matrix product (2 n^3 flops)."""
    if lib == "numpy":
        A = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
        run = lambda: A @ A  # noqa: E731
    else:
        A = torch.randn(n, n, dtype=getattr(torch, dtype), device=device)
        run = lambda: A @ A  # noqa: E731
    run()
    sync(device)
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        run()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


class PeakMemory:
    """Peak resident-memory increase (MB) over a block, sampled by a thread; CUDA peak too."""

    def __init__(self, device: str, trace: bool):
        self.device, self.trace = device, trace
        self.proc = psutil.Process()

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        if self.trace:
            tracemalloc.start()
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self.cuda_base = torch.cuda.memory_allocated()
        return self

    def _sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(RSS_PERIOD)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.rss_mb = (self.peak - self.base) / 2**20
        self.trace_mb = None
        if self.trace:
            self.trace_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        self.cuda_mb = None
        if self.device.startswith("cuda"):
            self.cuda_mb = (torch.cuda.max_memory_allocated() - self.cuda_base) / 2**20


# ----------------------------------------------------------------------------- timing

@dataclass
class Row:
    case: str
    regime: str
    method: str
    family: str
    dtype: str
    path: str
    n_queries: int               # B
    n_timed: int                 # queries actually timed (0 = skipped)
    extrapolated: bool
    time_B_s: float              # time for B queries (measured or extrapolated)
    per_query_ms: float
    floor_gflop_per_query: float
    gflops_rate: float           # matmul rate of the same library / dtype
    x_floor: float               # time / (floor / rate)
    peak_rss_mb: float
    peak_tracemalloc_mb: float | None
    peak_cuda_mb: float | None
    rel_error: float             # max |sv - sv_ref| / max sv_ref on query 0
    speedup_vs_autodiff: float | None = None
    speedup_vs_naive: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def timed(method: Any, X: np.ndarray, device: str) -> tuple[float, np.ndarray, PeakMemory]:
    with PeakMemory(device, method.trace) as mem:
        start = time.perf_counter()
        sv = method.run(X)
        sync(device)
        elapsed = time.perf_counter() - start
    return elapsed, sv, mem


def measure(method: Any, p: Any, budget: float, device: str, reference: np.ndarray | None,
            rates: dict[str, float]) -> Row:
    B = p.X.shape[0]
    t_warm, sv, mem = timed(method, p.X[:1], device)           # warm-up (first call)
    mems = [mem]
    if t_warm > 2 * budget and method.family != "geomem":        # too slow to time again
        q, t_B, extrapolated = 1, t_warm * B, True                 # (per-query loops)
    elif t_warm > 2 * budget:
        # batched geomem calls carry a fixed per-call cost (one QR of Y: ~6 s at N = 1e5):
        # time 4 and 16 queries, whose difference cancels the fixed cost
        q_lo, q, extrapolated = min(4, B), min(16, B), True
        t_lo, _, m_lo = timed(method, p.X[:q_lo], device)
        t_q, sv, mq = timed(method, p.X[:q], device)
        mems += [m_lo, mq]
        slope = (t_q - t_lo) / (q - q_lo) if q > q_lo else t_q / q
        t_B = t_q + slope * (B - q) if slope > 0 else t_q
    else:
        t_1, sv, m1 = timed(method, p.X[:1], device)
        mems.append(m1)
        if t_1 * B <= budget:
            q, extrapolated = B, False
            t_B, _, mq = timed(method, p.X, device)
        else:
            # at least 8 queries when one fits the budget: with a large fixed per-call cost
            # (one SVD of Y) a two-point fit of the per-query slope is dominated by noise
            q_min = 8 if t_1 <= budget else 2
            q, extrapolated = int(min(B - 1, max(q_min, budget // t_1))), True
            t_q, _, mq = timed(method, p.X[:q], device)
            slope = (t_q - t_1) / (q - 1)
            t_B = (t_1 - slope) + slope * B if slope > 0 else t_q * B / q
            # a large fixed per-call cost (one SVD of Y) makes the two-point fit noisy: when
            # the whole batch is affordable, time it instead of extrapolating
            if t_B <= 3 * budget:
                q, extrapolated = B, False
                t_B, _, mq = timed(method, p.X, device)
        mems.append(mq)
    used = method.used.get("path", method.path)
    floor_B = method.floor(B)
    rate = rates[method.rate_key]
    ref_err = np.nan
    if reference is not None:
        ref_err = float(np.max(np.abs(sv[0] - reference)) / np.max(reference))
    cuda = [m.cuda_mb for m in mems if m.cuda_mb is not None]
    trace = [m.trace_mb for m in mems if m.trace_mb is not None]
    return Row(p.case, p.regime, method.name, method.family, method.dtype, used, B, q,
               extrapolated, t_B, 1e3 * t_B / B, floor_B / B / 1e9, rate,
               t_B / (floor_B / (rate * 1e9)), max(m.rss_mb for m in mems),
               max(trace) if trace else None, max(cuda) if cuda else None, ref_err,
               note="" if used == method.path else f"auto -> {used}")


# ----------------------------------------------------------------------------- report

def add_speedups(rows: list[Row]) -> None:
    base = {}
    for r in rows:
        if r.family in ("autodiff", "naive"):
            base[(r.case, r.regime, r.family, r.dtype)] = r.time_B_s
    for r in rows:
        if r.family != "geomem":
            continue
        for family in ("autodiff", "naive"):
            t = base.get((r.case, r.regime, family, r.dtype))
            if t:
                setattr(r, f"speedup_vs_{family}", t / r.time_B_s)


def format_table(rows: list[Row]) -> str:
    head = (f"{'case':8} {'regime':14} {'method':24} {'path':15} {'ms/query':>10} "
            f"{'timed':>6} {'GF/q':>7} {'xfloor':>7} {'vs AD':>7} {'vs naive':>8} "
            f"{'peakMB':>8} {'relerr':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        mark = "*" if r.extrapolated else " "
        vs_ad = f"{r.speedup_vs_autodiff:7.1f}" if r.speedup_vs_autodiff else f"{'':7}"
        vs_nv = f"{r.speedup_vs_naive:8.1f}" if r.speedup_vs_naive else f"{'':8}"
        peak = r.peak_cuda_mb if r.peak_cuda_mb is not None else r.peak_rss_mb
        path = r.path if r.path.startswith(("jacrev", "dense", "gram", "lowrank")) else r.path
        if r.note:
            path = f"auto->{r.path}"
        lines.append(f"{r.case:8} {r.regime:14} {r.method:24} {path:15} "
                     f"{r.per_query_ms:10.2f}{mark}{r.n_timed:6d} {r.floor_gflop_per_query:7.2f} "
                     f"{r.x_floor:7.1f} {vs_ad} {vs_nv} {peak:8.0f} {r.rel_error:8.1e}")
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    """The issue's targets, each with the best geomem method that addresses it."""
    def best(pred):
        cands = [r for r in rows if r.family == "geomem" and pred(r)]
        return min(cands, key=lambda r: r.time_B_s) if cands else None

    def base(case, regime, family, dtype):
        for r in rows:
            if (r.case, r.regime, r.family, r.dtype) == (case, regime, family, dtype):
                return r
        return None

    out = []
    cases = sorted({r.case for r in rows})
    for regime in REGIMES:
        for dtype in ("float32", "float64"):
            g = best(lambda r, regime=regime, dtype=dtype: r.case == "1e4x784"
                     and r.regime == regime and r.dtype == dtype)
            ad = base("1e4x784", regime, "autodiff", dtype)
            if g and ad:
                s = ad.time_B_s / g.time_B_s
                out.append(f"[{'MET ' if s >= 100 else 'MISS'}] >=100x vs autodiff at 1e4x784, "
                           f"{regime} {dtype}: {s:.1f}x ({g.method} {g.path})")
    goals = {"generalization": (2.0, None), "memorization": (20.0, "gram"),
             "rank-r": (10.0, None)}
    for case in cases:
        for regime, (goal, path) in goals.items():
            for dtype in ("float32", "float64"):
                g = best(lambda r, case=case, regime=regime, dtype=dtype, path=path:
                         r.case == case and r.regime == regime and r.dtype == dtype
                         and (path is None or r.path == path))
                nv = base(case, regime, "naive", dtype)
                if g and nv:
                    s = nv.time_B_s / g.time_B_s
                    out.append(f"[{'MET ' if s >= goal else 'MISS'}] >={goal:g}x vs naive, "
                               f"{case} {regime} {dtype}: {s:.1f}x ({g.method} {g.path})")
    big = [r for r in rows if r.case == "1e5x784" and r.family == "geomem"]
    if big:
        worst = max(big, key=lambda r: r.peak_rss_mb)
        ok = worst.peak_rss_mb < 4096
        out.append(f"[{'MET ' if ok else 'MISS'}] 1e5x784 peak memory < 4 GB: worst geomem "
                   f"{worst.peak_rss_mb:.0f} MB ({worst.method} {worst.path} {worst.regime}, "
                   f"{worst.n_timed} queries timed)")
    return out

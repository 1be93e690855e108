"""Training throughput of score networks on this machine (geomem.numerics.training).

Prints steps per second *per network* for:

- ``baseline``: today's (pre-engine) loop, the one a user would write from the paper: the
  paper's ScoreMLP (width 128, 2 residual blocks, 128 -> 512 time MLP), RAdam, EMA 0.999, batch
  128, one network per process;
- ``fast x1/proc``: the fast protocol (3 x 256 MLP), one network per process;
- ``fast stacked E/proc``: stacked ensembles of E networks, one per process;
- ``fast stacked all``: one stacked ensemble of every network in one process using all threads;

each with ``--procs`` processes at once (default 2 = the cores), and the ratio to the flop
floor ``6 x parameters x batch`` per step at the float32 GEMM rate measured in the same run
(one thread, a 1024^3 product). Usage: ``python benchmarks/bench_training.py [--steps 2000]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import numpy as np
import torch

from geomem.numerics.score_mlp import MLPConfig, ScoreMLP, torch_a_delta
from geomem.numerics.torch_utils import EMA
from geomem.numerics.training import TrainingConfig, build_network, train_ensemble
from geomem.theory.manifold import LinearManifold

D, BATCH = 30, 128


def gemm_rate(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """float32 GEMM FLOP/s at ``threads`` threads (best of ``repeats``)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _data(n: int, seed: int) -> np.ndarray:
    return LinearManifold.figure4().sample(n, np.random.default_rng(seed))


def _baseline(steps: int, seed: int) -> float:
    """The pre-engine loop (ScoreMLP, RAdam 1e-3, EMA 0.999): seconds for ``steps``."""
    torch.manual_seed(seed)
    data = torch.as_tensor(_data(256, seed), dtype=torch.float32)
    model = ScoreMLP(MLPConfig(d=D, data_std=float(data.pow(2).mean().sqrt())))
    opt = torch.optim.RAdam(model.parameters(), lr=1e-3, foreach=True)
    ema = EMA(model, 0.999)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, data.shape[0], (BATCH,), generator=gen)
        t = 1e-5 + (1 - 1e-5) * torch.rand(BATCH, generator=gen)
        z = torch.randn(BATCH, D, generator=gen)
        a, delta = torch_a_delta(model.schedule, t)
        x = a[:, None] * data[idx] + torch.sqrt(delta)[:, None] * z
        loss = torch.mean(torch.sum((model(x, t) - z) ** 2, dim=1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(model)
    return time.perf_counter() - start


def _fast(steps: int, members: int, seed: int) -> float:
    data = [_data(256, seed + i) for i in range(members)]
    start = time.perf_counter()
    train_ensemble(data, TrainingConfig(steps=steps), [seed + i for i in range(members)])
    return time.perf_counter() - start


def _worker(args: tuple) -> float:
    kind, steps, members, seed, threads = args
    torch.set_num_threads(threads)
    return _baseline(steps, seed) if kind == "baseline" else _fast(steps, members, seed)


def _parallel(kind: str, steps: int, members: int, procs: int, threads: int) -> float:
    """Network-steps per second per network with ``procs`` processes running at once."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs) as pool:
        seconds = pool.map(_worker, [(kind, steps, members, 10 * i, threads)
                                     for i in range(procs)])
    return steps / max(seconds)   # every network advanced `steps` steps in that wall time


def parameters(config: TrainingConfig | None = None) -> int:
    if config is None:
        return sum(p.numel() for p in ScoreMLP(MLPConfig(d=D)).parameters())
    net = build_network(config, D, [1.0], [0])
    return sum(p[0].numel() for p in net.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    rate1 = gemm_rate(1)
    rate_all = gemm_rate(args.procs)
    p_base, p_fast = parameters(), parameters(TrainingConfig())
    floor_base = rate1 / (6 * p_base * BATCH)     # steps/s of one network on one thread
    floor_fast = rate1 / (6 * p_fast * BATCH)
    rows = []

    def report(name: str, per_net: float, floor: float, networks: int) -> None:
        rows.append({"method": name, "steps_per_s_per_network": per_net,
                     "networks_at_once": networks, "flop_floor_ratio": per_net / floor})
        print(f"{name:28s} {per_net:9.1f} steps/s per network ({networks} networks at once) "
              f"{per_net / floor:6.1%} of the 1-thread flop floor", flush=True)

    print(f"GEMM float32: {rate1 / 1e9:.1f} GFLOP/s (1 thread), {rate_all / 1e9:.1f} "
          f"({args.procs} threads); parameters: baseline {p_base}, fast {p_fast}; batch {BATCH}")
    n = args.procs
    base = _parallel("baseline", args.steps, 1, n, 1)
    report("baseline x1/proc", base, floor_base, n)
    fast1 = _parallel("fast", args.steps, 1, n, 1)
    report("fast x1/proc", fast1, floor_fast, n)
    for members in (2, 4):
        r = _parallel("fast", args.steps // members * 2, members, n, 1) * 1.0
        report(f"fast stacked {members}/proc", r, floor_fast, n * members)
    torch.set_num_threads(n)
    seconds = _fast(args.steps, 2 * n, 0)
    report(f"fast stacked all ({2 * n}, {n} thr)", args.steps / seconds, floor_fast, 2 * n)
    best = max(rows[1:], key=lambda r: r["steps_per_s_per_network"] * r["networks_at_once"])
    print(f"speed-up of the fast protocol over the baseline, per network: "
          f"{fast1 / base:.2f}x (one network per process); best network-steps/s: "
          f"{best['method']} ({best['steps_per_s_per_network'] * best['networks_at_once']:.0f}"
          f" vs baseline {base * n:.0f})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"gemm_flops_1thread": rate1, "gemm_flops_all": rate_all,
                       "parameters": {"baseline": p_base, "fast": p_fast}, "rows": rows,
                       "steps": args.steps, "procs": n, "torch": torch.__version__}, fh,
                      indent=2)


if __name__ == "__main__":
    main()

"""Memorization per training step of protocol variants (the evidence behind the fast protocol's
defaults in geomem.numerics.training_config).

For each variant, networks are trained on Figure-4 generator data (normalised, d = 30) with
N = 64 and N = 256 points (one seed) for ``--steps`` steps; at snapshots near 1k, 2k, 5k and
10k steps it prints the mean number of singular values > 0.5 of the denoiser Jacobian
``I + sigma^2 J`` at 32 training points + noise, sigma = 0.02 (7 = the tangent dimension:
nothing memorized; 0 = fully memorized), and the wall time. Variants: ``today`` (the
pre-engine default: the paper's ScoreMLP, sigma in [0.01, 50], RAdam 1e-3, EMA 0.999 without
warm-up), ``fast`` (the defaults) and one change of the fast protocol each.

Usage: ``python benchmarks/protocol_ablation.py [--steps 10000] [--only fast,today]``.
Stored runs: benchmarks/results/protocol_ablation_*.log.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from geomem.numerics.memorization import denoiser_rank, score_jacobians, time_of_sigma
from geomem.numerics.training import TrainingConfig, load_ensemble, train_ensemble
from geomem.theory.manifold import LinearManifold

SIGMA = 0.02
N_VALUES = (64, 256)


def variants(steps: int) -> dict[str, TrainingConfig]:
    return {"today": TrainingConfig.paper(steps=steps, lr=1e-3, ema_decay=0.999),
            "fast": TrainingConfig(steps=steps),
            "fast_sigma_max_50": TrainingConfig(steps=steps, sigma_max=50.0),
            "fast_width_128": TrainingConfig(steps=steps, width=128),
            "fast_no_ema_warmup": TrainingConfig(steps=steps, ema_warmup=False),
            "fast_batch_64": TrainingConfig(steps=steps, batch_size=64),
            "fast_lr_3e-3": TrainingConfig(steps=steps, lr=3e-3)}


def kept_directions(folder: str, step: int, member: int, Y: np.ndarray) -> float:
    net = load_ensemble(folder, step).member(member)
    X = Y[:32] + SIGMA * np.random.default_rng(1).standard_normal((32, Y.shape[1]))
    J = score_jacobians(net.score, X, time_of_sigma(net.schedule, SIGMA))
    return float(denoiser_rank(J, 1.0, SIGMA**2).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = LinearManifold.figure4()
    data = [model.sample(n, np.random.default_rng(n)) for n in N_VALUES]
    chosen = [v for v in args.only.split(",") if v]
    for name, cfg in variants(args.steps).items():
        if chosen and name not in chosen:
            continue
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            run = train_ensemble(data, cfg, [0, 0], folder=folder)
            seconds = time.perf_counter() - start
            table = {}
            for target in (1000, 2000, 5000, 10_000):
                step = min(run.snapshots, key=lambda s, t=target: abs(s - t))
                table[step] = [kept_directions(folder, step, i, Y) for i, Y in enumerate(data)]
        print(f"{name}: {seconds:.0f} s for {args.steps} steps of N = {N_VALUES}; kept "
              f"directions at sigma = {SIGMA}: "
              + ", ".join(f"{s}: {v[0]:.2f} / {v[1]:.2f}" for s, v in table.items()),
              flush=True)


if __name__ == "__main__":
    main()

"""Blind-denoiser recipe check (issue 16): train one BF-CNN on digits S1 (N = 898) with a
``TrainConfig`` given as JSON, then print its per-pixel MSE on 256 held-out images against the
identity (sigma^2) and the Wiener denoiser of the same training images, at sigma in [0.01, 1],
for every saved EMA snapshot (log-spaced steps), and the loss drift over the last 20%.

    python benchmarks/denoiser_recipe.py '{"steps": 6000}' --cache /tmp/denoiser-recipe
    python benchmarks/denoiser_recipe.py '{"steps": 6000, "noise": "paper", "loss_weight": 0,
        "lr_schedule": "step"}'                                    # the old recipe
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from geomem.numerics.denoiser_training import (
    TrainConfig,
    checkpoint_folder,
    loss_drift,
    train_or_load,
)
from geomem.numerics.denoisers import build_denoiser
from geomem.numerics.linear_denoiser import WienerDenoiser
from geomem.validation.image_networks import dataset_pool

SIGMAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def table(model: torch.nn.Module, train: np.ndarray, test: np.ndarray) -> list[tuple]:
    wiener, gen = WienerDenoiser(train), torch.Generator().manual_seed(123)
    x, rows = torch.as_tensor(test, dtype=torch.float32), []
    for s in SIGMAS:
        y = x + s * torch.randn(x.shape, generator=gen)
        with torch.no_grad():
            net = float(((model(y) - x) ** 2).mean())
        lin = float(((wiener(y.double().numpy(), s) - test) ** 2).mean())
        rows.append((s, s * s, lin, net))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="{}", help="TrainConfig fields as JSON")
    parser.add_argument("--cache", default="/tmp/denoiser-recipe", help="checkpoint folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig(**json.loads(args.config))
    pool = dataset_pool("digits")
    n = len(pool) // 2
    train, test = pool[:n], pool[-256:]
    model, info = train_or_load(args.cache, "digits", train, 0, cfg, seed=0,
                                extra={"data_seed": 0})
    print(cfg)
    print(f"wall {info['wall_seconds']:.0f} s, loss drift over the last 20%: "
          f"{loss_drift(info['loss_trace']):+.4f}")
    print("sigma  identity  wiener    network   net/identity  net/wiener")
    for s, ident, lin, net in table(model, train, test):
        print(f"{s:<5}  {ident:.2e}  {lin:.2e}  {net:.2e}  {net / ident:6.2f}  {net / lin:10.2f}")
    folder = checkpoint_folder(args.cache, "digits", n, 0, cfg, 0, {"data_seed": 0})
    print("step     " + "  ".join(f"{s:>5}" for s in SIGMAS) + "   net / min(identity, Wiener)")
    for snap in sorted((folder / "snapshots").glob("step_*.pt")):
        net = build_denoiser(cfg.arch, 1, cfg.width, cfg.depth, cfg.levels, cfg.padding)
        net.load_state_dict(torch.load(snap, weights_only=True))
        ratios = [m / min(i, w) for _, i, w, m in table(net.eval(), train, test)]
        print(f"{int(snap.stem[5:]):<8} " + "  ".join(f"{r:5.2f}" for r in ratios))


if __name__ == "__main__":
    main()

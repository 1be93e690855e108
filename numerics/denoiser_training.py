"""Training of blind denoisers: the recipe (``TrainConfig``), the loop with log-spaced EMA
snapshots and resume, and the checkpoint cache shared by the image commands.

Defaults (the CPU recipe, docs/images.md "Why the old denoisers floored"): images in [0, 1];
noise levels log-uniform on [0.005, 1]; loss = squared error of the predicted noise divided by
sigma (balancing the decades); Adam with a cosine-decayed learning rate; EMA of the weights.
``TrainConfig.paper()`` is the paper's recipe (UNet, per-image ``sigma = u^2`` with
``u ~ U(0, 1)``, unweighted loss, Adam 1e-3 halved).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .denoisers import ARCHITECTURES, PADDINGS, BlindDenoiser, build_denoiser
from .torch_utils import EMA, load_checkpoint, save_checkpoint, seed_everything

__all__ = [
    "LR_SCHEDULES",
    "NOISE_DISTRIBUTIONS",
    "TrainConfig",
    "checkpoint_folder",
    "checkpoint_key",
    "loss_drift",
    "train_denoiser",
    "train_or_load",
]

#: noise-level distributions for training: "log_uniform" sigma = sigma_min (sigma_max /
#: sigma_min)^u (every decade of [sigma_min, sigma_max] equally often), "paper" sigma =
#: sigma_max u^2 (THEORY 8)
NOISE_DISTRIBUTIONS = ("log_uniform", "paper")
LR_SCHEDULES = ("cosine", "step")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Architecture + training recipe (JSON-able; every field enters the checkpoint key).

    Defaults: the CPU recipe that beats the identity and the Wiener denoiser at every sigma in
    [0.01, 1] (docs/images.md, "Why the old denoisers floored"): noise levels log-uniform on
    [sigma_min, max_train_sigma], per-image loss ``|net(y) - sigma z|^2 / sigma^loss_weight``
    (``loss_weight`` 1 balances the decades: the unweighted loss, 0, is dominated by the
    large noise levels and leaves an absolute error floor at small sigma), Adam with a cosine
    decay of the learning rate to ``lr_final_fraction`` of ``lr`` (so the loss curve is flat
    at the end), EMA of the weights. :meth:`paper` is the paper's UNet recipe (GPU).
    ``log_every``: loss-curve resolution (mean over the preceding steps);
    ``checkpoints_per_decade`` / ``first_checkpoint``: log-spaced EMA snapshots and resume
    states written by :func:`train_or_load`.
    """

    arch: str = "bfcnn"
    width: int = 32
    depth: int = 6
    levels: int = 3
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    ema_decay: float = 0.99
    max_train_sigma: float = 1.0
    noise: str = "log_uniform"
    sigma_min: float = 0.005
    loss_weight: float = 1.0
    lr_schedule: str = "cosine"
    lr_final_fraction: float = 0.02
    log_every: int = 50
    checkpoints_per_decade: int = 4
    first_checkpoint: int = 100
    padding: str = "zeros"

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        for name in ("width", "steps", "batch_size", "log_every", "checkpoints_per_decade",
                     "first_checkpoint"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} out of range: allowed >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr out of range: allowed 0 < lr < 1, got {self.lr}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.noise not in NOISE_DISTRIBUTIONS:
            raise ValueError(f"noise must be one of {NOISE_DISTRIBUTIONS}, got {self.noise!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got "
                             f"{self.lr_schedule!r}")
        if not 0 < self.sigma_min < self.max_train_sigma < math.inf:
            raise ValueError(f"need 0 < sigma_min < max_train_sigma, got {self.sigma_min}, "
                             f"{self.max_train_sigma}")
        if not 0 <= self.loss_weight <= 2:
            raise ValueError(f"loss_weight out of range: allowed [0, 2], got {self.loss_weight}")
        if not 0 < self.lr_final_fraction <= 1:
            raise ValueError(f"lr_final_fraction out of range: allowed (0, 1], got "
                             f"{self.lr_final_fraction}")
        if self.noise == "paper" and self.loss_weight > 0:
            raise ValueError("noise='paper' draws sigma near 0, where a sigma-weighted loss "
                             "diverges: use loss_weight=0 with it")

    @classmethod
    def paper(cls, **overrides: Any) -> TrainConfig:
        """The seed paper's recipe (THEORY 8), for GPU users: UNet, 3 levels, 64 channels
        doubling, sigma = u^2, unweighted loss, Adam 1e-3 halved (here at 50% and 75% of
        ``steps``); 100k steps of batch 64."""
        base = dict(arch="unet", width=64, levels=3, steps=100_000, batch_size=64, lr=1e-3,
                    ema_decay=0.999, noise="paper", loss_weight=0.0, lr_schedule="step")
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def learning_rate(self, step: int) -> float:
        """Learning rate at optimiser step ``step`` (0-based)."""
        if self.lr_schedule == "step":
            return self.lr * 0.5 ** ((step >= self.steps // 2) + (step >= 3 * self.steps // 4))
        frac = min(step, self.steps) / self.steps
        low = self.lr_final_fraction
        return self.lr * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * frac)))

    def draw_sigma(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """n training noise levels (n, 1, 1, 1) from ``noise``."""
        u = torch.rand(n, 1, 1, 1, generator=gen)
        if self.noise == "paper":
            return self.max_train_sigma * u ** 2
        return self.sigma_min * (self.max_train_sigma / self.sigma_min) ** u


def loss_drift(loss_trace: Any, fraction: float = 0.2) -> float:
    """Flatness of a loss curve at its end: (mean loss over the last half of the final
    ``fraction`` of the logged steps - mean over its first half) / mean over the window; NaN
    with fewer than 4 logged points in the window."""
    trace = np.asarray(loss_trace, dtype=float).reshape(-1, 2)
    window = trace[trace[:, 0] > trace[-1, 0] * (1 - fraction)] if trace.size else trace
    if len(window) < 4:
        return float("nan")
    half = len(window) // 2
    first, last = window[:half, 1].mean(), window[half:, 1].mean()
    return float((last - first) / window[:, 1].mean())


def train_denoiser(images: np.ndarray, config: TrainConfig, seed: int = 0,
                   device: str | torch.device = "cpu") -> tuple[BlindDenoiser, dict[str, Any]]:
    """Train a blind denoiser on ``images`` (N, C, H, W) in [0, 1]; returns the EMA model (eval
    mode, float32) and a summary (loss trace every ``log_every`` steps, wall time)."""
    _, ema, summary = _train(images, config, seed, device)
    return ema.model.eval(), summary


def _train(images: np.ndarray, config: TrainConfig, seed: int, device,
           folder: Path | None = None, progress: Any = None
           ) -> tuple[BlindDenoiser, EMA, dict[str, Any]]:
    """The training loop; with ``folder``, EMA snapshots at log-spaced steps and a resume
    state (``state.pt``) are written there, and an existing state is resumed (same result as
    an uninterrupted run). ``progress(step, loss)`` is called every ``log_every`` steps."""
    from .training import checkpoint_steps  # the memorization engine's snapshot grid

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"images must have shape (N, C, H, W) with N >= 1, got {images.shape}")
    gen = seed_everything(seed)
    data = torch.as_tensor(images, dtype=torch.float32, device=device)
    model = build_denoiser(config.arch, images.shape[1], config.width, config.depth,
                           config.levels, config.padding).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate(0))
    ema = EMA(model, config.ema_decay)
    losses, step, seconds_before, running, counted = [], 0, 0.0, 0.0, 0
    state_file = folder / "state.pt" if folder is not None else None
    if state_file is not None and state_file.exists():
        state = torch.load(state_file, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, losses = int(state["step"]), [tuple(p) for p in state["losses"]]
        running, counted = float(state["running"]), int(state["counted"])
        seconds_before = float(state["seconds"])
    snapshots = [s for s in checkpoint_steps(config.steps, config.checkpoints_per_decade,
                                             config.first_checkpoint) if s > step]
    start = time.monotonic()

    def save_state() -> None:
        if state_file is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_name("state.pt.tmp")
        torch.save({"model": model.state_dict(), "ema": ema.model.state_dict(),
                    "optimizer": opt.state_dict(), "generator": gen.get_state(), "step": step,
                    "losses": losses, "running": running, "counted": counted,
                    "seconds": seconds_before + time.monotonic() - start}, tmp)
        tmp.replace(state_file)

    model.train()
    try:
        while step < config.steps:
            for group in opt.param_groups:
                group["lr"] = config.learning_rate(step)
            idx = torch.randint(0, data.shape[0], (config.batch_size,), generator=gen)
            x = data[idx.to(device)]
            sigma = config.draw_sigma(config.batch_size, gen).to(device)
            noise = torch.randn(x.shape, generator=gen).to(device) * sigma
            err = ((model.net(x + noise) - noise) ** 2).mean(dim=(1, 2, 3))
            loss = (err / sigma.reshape(-1) ** config.loss_weight).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update(model)
            step += 1
            running += float(loss.detach())
            counted += 1
            if step % config.log_every == 0 or step == config.steps:
                losses.append((step, running / counted))
                running, counted = 0.0, 0
                if progress is not None:
                    progress(step, losses[-1][1])
            if snapshots and step == snapshots[0]:
                snapshots.pop(0)
                if folder is not None:
                    (folder / "snapshots").mkdir(parents=True, exist_ok=True)
                    torch.save(ema.model.state_dict(),
                               folder / "snapshots" / f"step_{step:09d}.pt")
                save_state()
    except KeyboardInterrupt:
        save_state()      # an interrupted run resumes from here
        raise
    summary = {"loss_trace": [list(p) for p in losses],
               "wall_seconds": seconds_before + time.monotonic() - start,
               "n_train": int(images.shape[0]), "loss_drift_last_20pct": loss_drift(losses),
               "torch_threads": torch.get_num_threads()}
    return model.eval(), ema, summary


def checkpoint_key(dataset: str, n_train: int, subset: int, config: TrainConfig, seed: int,
                   extra: dict[str, Any] | None = None) -> str:
    """Folder name of a cached checkpoint: readable prefix + hash of the full configuration."""
    fields = config.to_dict()
    if fields["padding"] == "zeros":
        del fields["padding"]    # the key of every network trained before padding was a field
    blob = json.dumps({"dataset": dataset, "n": n_train, "subset": subset, "seed": seed,
                       "config": fields, "extra": extra or {}}, sort_keys=True)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
    return (f"{dataset}_N{n_train}_S{subset}_{config.arch}_w{config.width}_seed{seed}"
            f"_steps{config.steps}_{digest}")


def checkpoint_folder(cache_dir: str | Path, dataset: str, n_train: int, subset: int,
                      config: TrainConfig, seed: int, extra: dict[str, Any] | None = None
                      ) -> Path:
    """The folder of one network's checkpoint in ``cache_dir`` (see :func:`checkpoint_key`)."""
    return Path(cache_dir) / checkpoint_key(dataset, n_train, subset, config, seed, extra)


def train_or_load(cache_dir: str | Path, dataset: str, images: np.ndarray, subset: int,
                  config: TrainConfig, seed: int = 0, extra: dict[str, Any] | None = None,
                  device: str | torch.device = "cpu", progress: Any = None
                  ) -> tuple[BlindDenoiser, dict[str, Any]]:
    """Load the checkpoint for (dataset, N, subset, config, seed) from ``cache_dir`` or train
    it and save it there (shared by the generalization / gahb / image-dimensions commands);
    an interrupted training resumes from its last state in the same folder.
    ``extra`` must identify the exact training images (e.g. the data seed);
    ``progress(step, loss)`` is called every ``config.log_every`` training steps."""
    folder = checkpoint_folder(cache_dir, dataset, len(images), subset, config, seed, extra)
    model = build_denoiser(config.arch, images.shape[1], config.width, config.depth,
                           config.levels, config.padding)
    if (folder / "model.pt").exists():
        return load_checkpoint(folder, model, use_ema=True)
    raw, ema, summary = _train(images, config, seed, device, folder=folder, progress=progress)
    cfg = {"dataset": dataset, "n_train": len(images), "subset": subset, "seed": seed,
           "train": config.to_dict(), "extra": extra or {}, **summary}
    save_checkpoint(folder, raw, cfg, ema=ema)
    (folder / "state.pt").unlink(missing_ok=True)     # finished: model.pt holds the weights
    return ema.model.eval(), cfg

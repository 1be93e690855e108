"""Blind, bias-free denoisers (Kadkhodaie et al.; THEORY section 8) and their training.

A denoiser maps a noisy image y (B, C, H, W) to an estimate D(y) of the clean image. The
networks here predict the noise (residual) and return ``D(y) = y - net(y)``. They have no
additive constant anywhere (convolutions without bias, a batch-norm that only divides by a
standard deviation and multiplies by a learned scale, ReLU, average pooling, nearest
upsampling), so in eval mode D is positively homogeneous and piecewise linear:
``D(y) = J_D(y) y`` exactly (up to float rounding). They are *blind*: no noise-level input.

Training (``TrainConfig``): images in [0, 1]; by default noise levels log-uniform on
[0.005, 1], loss = squared error of the predicted noise divided by sigma (balancing the
decades), Adam with a cosine-decayed learning rate, EMA; checkpoints at log-spaced steps and
resume (``train_or_load``). ``TrainConfig.paper()`` is the paper's recipe (UNet, per-image
``sigma = u^2`` with ``u ~ U(0, 1)``, unweighted loss, Adam 1e-3 halved).

``EmpiricalDenoiser`` is the exact posterior-mean denoiser of the empirical distribution of a
training set with a blind noise-level estimate: a reference with no training noise (tests).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geomem.theory._checks import check_choice, check_int

from .torch_utils import EMA, load_checkpoint, save_checkpoint, seed_everything

__all__ = [
    "ARCHITECTURES",
    "BFCNN",
    "BFUNet",
    "BiasFreeBatchNorm",
    "BlindDenoiser",
    "EmpiricalDenoiser",
    "LR_SCHEDULES",
    "NOISE_DISTRIBUTIONS",
    "TrainConfig",
    "build_denoiser",
    "checkpoint_key",
    "denoiser_jacobian",
    "effective_noise",
    "loss_drift",
    "train_denoiser",
    "train_or_load",
]

ARCHITECTURES = ("bfcnn", "unet")
#: added to the batch variance before the square root (fixed, so eval-mode stays homogeneous)
BN_EPS = 1e-5
#: momentum of the running standard deviation used in eval mode
BN_MOMENTUM = 0.1


class BiasFreeBatchNorm(nn.Module):
    """Scale-only batch norm: ``x / sd_c * gamma_c`` (no mean subtraction, no shift).

    Train mode uses the batch standard deviation over (B, H, W); eval mode a running one."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.register_buffer("running_sd", torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            sd = torch.sqrt(x.var(dim=(0, 2, 3), keepdim=True) + BN_EPS)
            with torch.no_grad():
                self.running_sd.mul_(1 - BN_MOMENTUM).add_(sd.detach(), alpha=BN_MOMENTUM)
        else:
            sd = self.running_sd
        return x / sd * self.gamma


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(_conv(c_in, c_out), BiasFreeBatchNorm(c_out), nn.ReLU())


class BFCNN(nn.Module):
    """Bias-free CNN (residual predictor): conv-ReLU, ``depth - 2`` x (conv-BN-ReLU), conv."""

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 6):
        super().__init__()
        if depth < 3:
            raise ValueError(f"depth out of range: allowed >= 3, got {depth}")
        layers: list[nn.Module] = [_conv(channels, width), nn.ReLU()]
        layers += [_block(width, width) for _ in range(depth - 2)]
        layers.append(_conv(width, channels))
        self.net = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class BFUNet(nn.Module):
    """Small bias-free UNet (residual predictor): ``levels`` resolutions, channels doubling,
    two conv-BN-ReLU blocks per level, average-pool down, nearest-neighbour up, concatenated
    skips. Image sides must be divisible by ``2**(levels-1)``."""

    def __init__(self, channels: int = 1, width: int = 32, levels: int = 3):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels out of range: allowed >= 1, got {levels}")
        self.levels = levels
        widths = [width * 2 ** i for i in range(levels)]
        self.inc = nn.Sequential(_conv(channels, widths[0]), nn.ReLU(),
                                 _block(widths[0], widths[0]))
        self.down = nn.ModuleList(nn.Sequential(_block(widths[i - 1], widths[i]),
                                                _block(widths[i], widths[i]))
                                  for i in range(1, levels))
        self.up = nn.ModuleList(nn.Sequential(_block(widths[i] + widths[i - 1], widths[i - 1]),
                                              _block(widths[i - 1], widths[i - 1]))
                                for i in range(levels - 1, 0, -1))
        self.out = _conv(widths[0], channels)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (self.levels - 1)
        if y.shape[-1] % factor or y.shape[-2] % factor:
            raise ValueError(f"image sides must be divisible by {factor}, got {tuple(y.shape)}")
        skips = [self.inc(y)]
        for block in self.down:
            skips.append(block(nn.functional.avg_pool2d(skips[-1], 2)))
        x = skips.pop()
        for block in self.up:
            x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skips.pop()], dim=1))
        return self.out(x)


class BlindDenoiser(nn.Module):
    """``D(y) = y - net(y)`` for a residual network ``net``; input/output (B, C, H, W)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y - self.net(y)


def build_denoiser(arch: str = "bfcnn", channels: int = 1, width: int = 32, depth: int = 6,
                   levels: int = 3) -> BlindDenoiser:
    """A blind bias-free denoiser: ``arch`` in ``ARCHITECTURES`` ("bfcnn" uses ``depth``,
    "unet" uses ``levels``)."""
    check_choice("arch", arch, ARCHITECTURES)
    for name, value, most in (("channels", channels, 64), ("width", width, 4096),
                              ("depth", depth, 256), ("levels", levels, 8)):
        check_int(name, value, minimum=1, maximum=most)  # beyond: no CPU or GPU memory fits
    net = BFCNN(channels, width, depth) if arch == "bfcnn" else BFUNet(channels, width, levels)
    return BlindDenoiser(net)


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

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        for name in ("width", "steps", "batch_size", "log_every", "checkpoints_per_decade",
                     "first_checkpoint"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} out of range: allowed >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr out of range: allowed 0 < lr < 1, got {self.lr}")
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
                           config.levels).to(device)
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
    blob = json.dumps({"dataset": dataset, "n": n_train, "subset": subset, "seed": seed,
                       "config": config.to_dict(), "extra": extra or {}}, sort_keys=True)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
    return (f"{dataset}_N{n_train}_S{subset}_{config.arch}_w{config.width}_seed{seed}"
            f"_steps{config.steps}_{digest}")


def train_or_load(cache_dir: str | Path, dataset: str, images: np.ndarray, subset: int,
                  config: TrainConfig, seed: int = 0, extra: dict[str, Any] | None = None,
                  device: str | torch.device = "cpu", progress: Any = None
                  ) -> tuple[BlindDenoiser, dict[str, Any]]:
    """Load the checkpoint for (dataset, N, subset, config, seed) from ``cache_dir`` or train
    it and save it there (shared by the generalization / gahb / image-dimensions commands);
    an interrupted training resumes from its last state in the same folder.
    ``extra`` must identify the exact training images (e.g. the data seed);
    ``progress(step, loss)`` is called every ``config.log_every`` training steps."""
    folder = Path(cache_dir) / checkpoint_key(dataset, len(images), subset, config, seed, extra)
    model = build_denoiser(config.arch, images.shape[1], config.width, config.depth,
                           config.levels)
    if (folder / "model.pt").exists():
        return load_checkpoint(folder, model, use_ema=True)
    raw, ema, summary = _train(images, config, seed, device, folder=folder, progress=progress)
    cfg = {"dataset": dataset, "n_train": len(images), "subset": subset, "seed": seed,
           "train": config.to_dict(), "extra": extra or {}, **summary}
    save_checkpoint(folder, raw, cfg, ema=ema)
    (folder / "state.pt").unlink(missing_ok=True)     # finished: model.pt holds the weights
    return ema.model.eval(), cfg


class EmpiricalDenoiser(nn.Module):
    """Exact posterior mean ``E[x | y]`` for x uniform on the training images X (N, C, H, W)
    and Gaussian noise, with the noise level estimated blindly as the fixed point of
    ``sigma^2 = ||y - D_sigma(y)||^2 / d`` (started at ``||y - mean(X)||^2 / d``).

    Float64 reference; log-space weights (softmax of ``-|y - x|^2 / (2 sigma^2)``)."""

    def __init__(self, images: np.ndarray | torch.Tensor, iterations: int = 20,
                 min_sigma: float = 1e-4):
        super().__init__()
        x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
        if x.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(x.shape)}")
        self.register_buffer("flat", x.reshape(x.shape[0], -1))
        self.iterations, self.min_sigma = iterations, min_sigma

    def posterior_mean(self, y_flat: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        dist2 = torch.cdist(y_flat, self.flat) ** 2                          # (B, N)
        weights = torch.softmax(-dist2 / (2 * sigma[:, None] ** 2), dim=1)
        return weights @ self.flat

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y_flat = y.reshape(y.shape[0], -1).to(torch.float64)
        d = y_flat.shape[1]
        sigma = ((y_flat - self.flat.mean(0)) ** 2).sum(1).div(d).sqrt().clamp_min(self.min_sigma)
        for _ in range(self.iterations):
            den = self.posterior_mean(y_flat, sigma)
            sigma = ((y_flat - den) ** 2).sum(1).div(d).sqrt().clamp_min(self.min_sigma)
        return self.posterior_mean(y_flat, sigma).reshape(y.shape).to(y.dtype)


def effective_noise(denoiser: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """``||y - D(y)|| / sqrt(d)`` per image (B,): the sampler's blind noise estimate."""
    with torch.no_grad():
        r = (y - denoiser(y)).reshape(y.shape[0], -1)
    return r.norm(dim=1) / math.sqrt(r.shape[1])


def denoiser_jacobian(denoiser: nn.Module, y: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Exact Jacobian ``dD/dy`` at each image of y (B, C, H, W): (B, d, d) float64, d = C H W,
    by reverse-mode autodiff (torch.func.jacrev, vmapped) on a float64 copy of the network.

    For a bias-free denoiser it is symmetric up to training error and ``J y = D(y)``; its
    eigenvalues are the shrinkage factors of the adaptive basis (GAHB). The Tweedie score
    Jacobian is ``(J - I) / sigma^2``."""
    model = copy.deepcopy(denoiser).to(torch.float64).eval()
    y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y, dtype=torch.float64)
    if y.ndim != 4:
        raise ValueError(f"y must have shape (B, C, H, W), got {tuple(y.shape)}")
    shape = y.shape[1:]

    def flat(v: torch.Tensor) -> torch.Tensor:
        return model(v.reshape(1, *shape)).reshape(-1)

    return torch.func.vmap(torch.func.jacrev(flat))(y.reshape(y.shape[0], -1)).detach()

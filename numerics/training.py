"""Denoising score matching for :class:`~geomem.numerics.score_mlp.ScoreMLP` (THEORY §7).

Loss per step: ``mean |eps_theta(a y + sqrt(Delta) z, t) - z|^2`` over a batch of training
points ``y`` (drawn with replacement), ``t ~ U(t_min, t_max)`` and ``z ~ N(0, I)``. Defaults
follow the paper (GeometricVE sigma(t) = 0.01 * 5000^t, t ~ U(1e-5, 1), batch 128, RAdam, EMA)
except the step budget: the paper trains 2M steps at learning rate 1e-4 with EMA 0.9999; on CPU
we train ``steps`` (default 20k) at learning rate 1e-3 with EMA 0.999 (an EMA over ~1k steps:
0.9999 would still remember the initialisation after 20k steps). Every checkpoint and output
records ``steps / PAPER_STEPS`` as ``scale_down``.

Determinism: one seed fixes the initialisation (torch global generator, via
``seed_everything``) and the batches, times and noises (a dedicated ``torch.Generator``), so a
run on the same machine, thread count and torch version is bit-reproducible.

Caching: :func:`train_or_load` keys a checkpoint folder by a hash of (config, seed, training
data); an existing folder is loaded instead of trained. The folder holds ``model.pt``,
``config.json`` (architecture, training config, data seed and hash, scale-down, timing) and
``loss.csv`` (step, mean loss over the preceding ``log_every`` steps).
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .score_mlp import ARCHITECTURE_DEFAULTS, TORCH_SCHEDULES, MLPConfig, ScoreMLP, torch_a_delta
from .torch_utils import EMA, load_checkpoint, save_checkpoint, seed_everything

__all__ = ["PAPER_STEPS", "TrainedScore", "TrainingConfig", "checkpoint_key", "data_hash",
           "load_score_model",
           "train_or_load", "train_score_model"]

#: the paper's step budget (THEORY §7); outputs record steps / PAPER_STEPS
PAPER_STEPS = 2_000_000
#: the paper's learning rate and EMA decay, recorded beside the values used
PAPER_LR = 1e-4
PAPER_EMA = 0.9999


@dataclass(frozen=True)
class TrainingConfig:
    """Training hyper-parameters (JSON-able). Architecture fields mirror :class:`MLPConfig`.

    steps : optimiser steps; batch_size : points per step; lr : RAdam learning rate;
    ema_decay : EMA retention per step; t_min, t_max : training-time range (t_max None: 1 for
    GeometricVE, 3 for VP, 2500 for VE); log_every : loss-curve resolution (steps).
    """

    steps: int = 20_000
    batch_size: int = 128
    lr: float = 1e-3
    ema_decay: float = 0.999
    schedule: str = "GeometricVE"
    t_min: float = 1e-5
    t_max: float | None = None
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    width: int = ARCHITECTURE_DEFAULTS["width"]
    n_blocks: int = ARCHITECTURE_DEFAULTS["n_blocks"]
    embed_dim: int = ARCHITECTURE_DEFAULTS["embed_dim"]
    time_dim: int = ARCHITECTURE_DEFAULTS["time_dim"]
    input_scaling: bool = True
    log_every: int = 100

    def __post_init__(self):
        for name, minimum in (("steps", 1), ("batch_size", 1), ("log_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.schedule not in TORCH_SCHEDULES:
            raise ValueError(f"schedule must be one of {TORCH_SCHEDULES}, got {self.schedule!r}")
        t_max = self.time_range[1]
        if not 0 < self.t_min < t_max:
            raise ValueError(f"t_min must satisfy 0 < t_min < t_max = {t_max}, got {self.t_min}")
        if self.schedule == "GeometricVE" and t_max > 1:
            raise ValueError(f"t_max must be <= 1 for GeometricVE, got {t_max}")

    @property
    def time_range(self) -> tuple[float, float]:
        default = {"GeometricVE": 1.0, "VP": 3.0, "VE": 2500.0}[self.schedule]
        return float(self.t_min), float(default if self.t_max is None else self.t_max)

    @property
    def scale_down(self) -> float:
        """steps / PAPER_STEPS."""
        return self.steps / PAPER_STEPS

    def mlp_config(self, d: int, data_std: float) -> MLPConfig:
        return MLPConfig(d=d, width=self.width, n_blocks=self.n_blocks,
                         embed_dim=self.embed_dim, time_dim=self.time_dim,
                         schedule=self.schedule, sigma_min=self.sigma_min,
                         sigma_max=self.sigma_max, data_std=data_std,
                         input_scaling=self.input_scaling)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["scale_down"] = self.scale_down
        out["paper"] = {"steps": PAPER_STEPS, "lr": PAPER_LR, "ema_decay": PAPER_EMA}
        return out


@dataclass
class TrainedScore:
    """A trained (or loaded) network: ``model`` holds the EMA weights, in eval mode.

    losses : (n_logs, 2) array of (step, mean loss over the preceding log_every steps);
    config : the stored JSON config; path : checkpoint folder (None if not saved);
    loaded : True when read from an existing checkpoint.
    """

    model: ScoreMLP
    losses: np.ndarray
    config: dict[str, Any]
    path: Path | None = None
    loaded: bool = False

    def score(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return self.model.score(x, t)


def _data_tensor(Y: Any) -> torch.Tensor:
    arr = np.asarray(Y, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"Y must be a (N, d) training set with N, d >= 1, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("Y must be finite")
    return torch.as_tensor(arr, dtype=torch.float32)


def data_hash(Y: Any) -> str:
    """Short sha1 of the float64 training set (identifies the data in checkpoint keys)."""
    arr = np.ascontiguousarray(np.asarray(Y, dtype=np.float64))
    return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()[:16]


def train_score_model(Y: Any, config: TrainingConfig = TrainingConfig(), seed: int = 0, *,
                      progress: Any = None) -> TrainedScore:
    """Train a ScoreMLP on the rows of ``Y`` (N, d) by denoising score matching (CPU, float32).

    ``progress(step, loss)`` is called every ``log_every`` steps when given. Returns the EMA
    model (eval mode) and the loss curve; nothing is written (see :func:`train_or_load`).
    """
    data = _data_tensor(Y)
    n, d = data.shape
    data_std = float(torch.sqrt(torch.mean(data.double() ** 2)))
    seed_everything(seed)
    model = ScoreMLP(config.mlp_config(d, data_std if data_std > 0 else 1.0))
    generator = torch.Generator().manual_seed(seed + 1)   # batches/times/noise, apart from init
    optimizer = torch.optim.RAdam(model.parameters(), lr=config.lr, foreach=True)
    ema = EMA(model, config.ema_decay)
    t_lo, t_hi = config.time_range
    logs: list[tuple[int, float]] = []
    running = 0.0
    start = time.perf_counter()
    model.train()
    for step in range(1, config.steps + 1):
        idx = torch.randint(0, n, (config.batch_size,), generator=generator)
        t = t_lo + (t_hi - t_lo) * torch.rand(config.batch_size, generator=generator)
        z = torch.randn(config.batch_size, d, generator=generator)
        a, delta = torch_a_delta(model.schedule, t)
        x = a[:, None] * data[idx] + torch.sqrt(delta)[:, None] * z
        loss = torch.mean(torch.sum((model(x, t) - z) ** 2, dim=1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(model)
        running += float(loss.detach())
        if step % config.log_every == 0 or step == config.steps:
            count = (step - 1) % config.log_every + 1
            logs.append((step, running / count))
            running = 0.0
            if progress is not None:
                progress(step, logs[-1][1])
    seconds = time.perf_counter() - start
    stored = {"architecture": model.config.to_dict(), "training": config.to_dict(),
              "seed": seed, "n_train": n, "data_hash": data_hash(Y),
              "train_seconds": seconds, "steps_per_second": config.steps / seconds,
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    result = TrainedScore(model=ema.model.eval(), losses=np.asarray(logs, dtype=np.float64),
                          config=stored)
    result._raw = (model, ema, optimizer)  # kept for saving; not part of the public API
    return result


def checkpoint_key(config: TrainingConfig, seed: int, Y: Any) -> str:
    """Folder name of the checkpoint for (config, seed, data): sha1 of their JSON."""
    text = json.dumps({"config": config.to_dict(), "seed": seed, "data": data_hash(Y)},
                      sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _write_losses(path: Path, losses: np.ndarray) -> None:
    with (path / "loss.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["step", "loss"])
        for step, loss in losses:
            writer.writerow([int(step), repr(float(loss))])


def _read_losses(path: Path) -> np.ndarray:
    file = path / "loss.csv"
    if not file.exists():
        return np.zeros((0, 2))
    return np.loadtxt(file, delimiter=",", skiprows=1, ndmin=2)


def load_score_model(path: str | Path, use_ema: bool = True) -> TrainedScore:
    """Rebuild the network from ``config.json`` and load its (EMA) weights."""
    folder = Path(path)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no checkpoint at {folder} (config.json missing)")
    stored = json.loads((folder / "config.json").read_text())
    model = ScoreMLP(MLPConfig(**stored["architecture"]))
    model, stored = load_checkpoint(folder, model, use_ema=use_ema)
    return TrainedScore(model=model, losses=_read_losses(folder), config=stored, path=folder,
                        loaded=True)


def train_or_load(checkpoint_root: str | Path, Y: Any, config: TrainingConfig = TrainingConfig(),
                  seed: int = 0, *, data_seed: int | None = None, progress: Any = None
                  ) -> TrainedScore:
    """Load the checkpoint of (config, seed, Y) under ``checkpoint_root`` or train and save it.

    data_seed : the seed that generated ``Y`` (recorded in config.json for provenance).
    """
    folder = Path(checkpoint_root) / checkpoint_key(config, seed, Y)
    if (folder / "model.pt").exists() and (folder / "config.json").exists():
        return load_score_model(folder)
    result = train_score_model(Y, config, seed, progress=progress)
    result.config["data_seed"] = data_seed
    raw, ema, optimizer = result._raw
    save_checkpoint(folder, raw, result.config, ema=ema, optimizer=optimizer)
    _write_losses(folder, result.losses)
    result.path = folder
    return result

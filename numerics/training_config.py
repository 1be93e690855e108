"""Training protocols for score networks (:class:`TrainingConfig`: the fast protocol and the
paper's preset) and the log-spaced snapshot schedule (:func:`checkpoint_steps`).

Separate from :mod:`geomem.numerics.training` (the loop and its storage) so that commands can
build, validate and hash configurations without the training machinery. Every field is
JSON-able; :meth:`TrainingConfig.to_dict` adds the scale-down against the paper's budget.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .score_mlp import TORCH_SCHEDULES, MLPConfig

__all__ = ["PAPER_EMA", "PAPER_LR", "PAPER_STEPS", "TrainingConfig", "checkpoint_steps"]

#: the paper's step budget, learning rate and EMA decay (THEORY §7)
PAPER_STEPS = 2_000_000
PAPER_LR = 1e-4
PAPER_EMA = 0.9999
_ARCHITECTURES = ("mlp", "paper")
_OPTIMIZERS = ("adam", "radam")


@dataclass(frozen=True)
class TrainingConfig:
    """Training protocol (JSON-able). Defaults: the fast protocol (module docstring).

    steps : optimiser steps; batch_size : points per member and step; lr, optimizer : "adam"
    or "radam"; ema_decay : EMA retention per step, ema_warmup : use min(decay, (1+k)/(10+k));
    architecture : "mlp" (StackedMLP: width, depth hidden layers, embed_dim) or "paper"
    (ScoreMLP: width, depth residual blocks, embed_dim, time_dim); schedule : name of the
    schedule that maps t to the noise (GeometricVE: sigma_min (sigma_max/sigma_min)^t; VP;
    VE); t_min, t_max : training-time range (t_max None: 1 for GeometricVE, 3 for VP, 2500 for
    VE); log_every : loss-curve resolution; checkpoints_per_decade, first_checkpoint : the
    log-spaced snapshot steps; save_seconds : wall-clock interval of resume-state saves.
    """

    steps: int = 10_000
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    ema_decay: float = 0.999
    ema_warmup: bool = True
    architecture: str = "mlp"
    width: int = 256
    depth: int = 3
    embed_dim: int = 16
    time_dim: int = 512
    schedule: str = "GeometricVE"
    sigma_min: float = 0.01
    sigma_max: float = 2.0
    t_min: float = 0.0
    t_max: float | None = None
    log_every: int = 100
    checkpoints_per_decade: int = 8
    first_checkpoint: int = 100
    save_seconds: float = 60.0

    def __post_init__(self):
        for name, minimum in (("steps", 1), ("batch_size", 1), ("log_every", 1),
                              ("width", 1), ("depth", 0), ("embed_dim", 2), ("time_dim", 1),
                              ("checkpoints_per_decade", 1), ("first_checkpoint", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.embed_dim % 2:
            raise ValueError(f"embed_dim must be even, got {self.embed_dim}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for name, allowed in (("optimizer", _OPTIMIZERS), ("architecture", _ARCHITECTURES),
                              ("schedule", TORCH_SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0 < self.sigma_min < self.sigma_max < math.inf:
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got sigma_min="
                             f"{self.sigma_min}, sigma_max={self.sigma_max}")
        lo, hi = self.time_range
        if not 0 <= lo < hi:
            raise ValueError(f"t_min must satisfy 0 <= t_min < t_max = {hi}, got {lo}")
        if self.schedule == "GeometricVE" and hi > 1:
            raise ValueError(f"t_max must be <= 1 for GeometricVE, got {hi}")
        if self.schedule != "GeometricVE" and lo <= 0:
            raise ValueError(f"t_min must be > 0 for schedule {self.schedule}, got {lo}")
        if not self.save_seconds > 0:
            raise ValueError(f"save_seconds must be > 0, got {self.save_seconds}")

    @classmethod
    def paper(cls, **overrides: Any) -> TrainingConfig:
        """The losing-dimensions paper's recipe (THEORY §7): ScoreMLP, RAdam 1e-4, EMA 0.9999,
        2M steps, GeometricVE sigma in [0.01, 50], t ~ U(1e-5, 1)."""
        base = dict(steps=PAPER_STEPS, lr=PAPER_LR, optimizer="radam", ema_decay=PAPER_EMA,
                    ema_warmup=False, architecture="paper", width=128, depth=2, embed_dim=128,
                    time_dim=512, sigma_max=50.0, t_min=1e-5)
        base.update(overrides)
        return cls(**base)

    @property
    def time_range(self) -> tuple[float, float]:
        default = {"GeometricVE": 1.0, "VP": 3.0, "VE": 2500.0}[self.schedule]
        return float(self.t_min), float(default if self.t_max is None else self.t_max)

    @property
    def scale_down(self) -> float:
        """steps / PAPER_STEPS."""
        return self.steps / PAPER_STEPS

    def schedule_object(self):
        return MLPConfig(d=1, schedule=self.schedule, sigma_min=self.sigma_min,
                         sigma_max=self.sigma_max).schedule_object()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["scale_down"] = self.scale_down
        out["paper"] = {"steps": PAPER_STEPS, "lr": PAPER_LR, "ema_decay": PAPER_EMA}
        return out


def checkpoint_steps(steps: int, per_decade: int = 8, first: int = 100) -> list[int]:
    """Log-spaced snapshot steps: round(10^(k/per_decade)) in [first, steps], plus ``steps``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    lo = math.ceil(per_decade * math.log10(first) - 1e-9)
    hi = math.floor(per_decade * math.log10(steps) + 1e-9)
    out = sorted({int(round(10 ** (k / per_decade))) for k in range(lo, hi + 1)} | {steps})
    return [s for s in out if first <= s <= steps] or [steps]

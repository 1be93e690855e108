"""The losing-dimensions synthetic score network (THEORY §7) and its noise schedules in torch.

``ScoreMLP`` predicts the noise ``eps`` of ``x_t = a(t) y + sqrt(Delta(t)) eps``:

- sinusoidal embedding (``embed_dim``, default 128) of the noise level ``log(sqrt(Delta)/a)``,
  then Linear(embed_dim -> time_dim) + SiLU (default 512; the paper's "128 -> 512");
- Linear(d -> width) (default 128) on the input ``c_in(t) x`` with
  ``c_in = 1/sqrt(a^2 data_std^2 + Delta)`` (unit-variance input at every noise level; keeps
  the first layer well conditioned at sigma = 50 — an addition to the paper's architecture,
  switched off with ``input_scaling=False``);
- ``n_blocks`` (default 2) residual blocks ``h <- h + Linear(SiLU(LayerNorm(h)) + P_k(temb))``
  (time projection ``P_k``: Linear(time_dim -> width));
- output LayerNorm, SiLU, Linear(width -> d).

The score is ``s(x, t) = -eps(x, t) / sqrt(Delta(t))`` (:meth:`ScoreMLP.score`); it is a pure
function of ``(x, t)`` so ``torch.func`` Jacobians apply directly. Shapes: x (B, d), t (B,) or
a scalar; outputs (B, d). Time units are those of the schedule (GeometricVE: t in (0, 1],
sigma(t) = sigma_min (sigma_max/sigma_min)^t).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from geomem.theory.schedules import VE, VP, GeometricVE, Schedule, get_schedule

__all__ = ["ARCHITECTURE_DEFAULTS", "TORCH_SCHEDULES", "MLPConfig", "ScoreMLP",
           "SinusoidalEmbedding", "torch_a_delta"]

#: schedules with a torch implementation here (a(t) and Delta(t) differentiable in t)
TORCH_SCHEDULES = ("GeometricVE", "VP", "VE")
#: the paper's synthetic network (THEORY §7)
ARCHITECTURE_DEFAULTS = {"width": 128, "n_blocks": 2, "embed_dim": 128, "time_dim": 512}
#: largest period of the sinusoidal embedding, in units of log-noise (covers log(1e-5)..log(1e5)
#: without aliasing)
_MAX_PERIOD = 1e4


def torch_a_delta(schedule: Schedule, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a(t), Delta(t)) as tensors of t's shape and dtype, for the schedules in TORCH_SCHEDULES
    (same formulas as geomem.theory.schedules, in torch)."""
    if isinstance(schedule, GeometricVE):
        log_ratio = math.log(schedule.sigma_max / schedule.sigma_min)
        return torch.ones_like(t), (schedule.sigma_min * torch.exp(log_ratio * t)) ** 2
    if isinstance(schedule, VP):
        return torch.exp(-t), -torch.expm1(-2.0 * t)
    if isinstance(schedule, VE):
        return torch.ones_like(t), t.clone()
    raise ValueError(f"schedule must be one of {TORCH_SCHEDULES}, got {schedule!r}")


class SinusoidalEmbedding(nn.Module):
    """Transformer-style embedding of a scalar (B,) -> (B, dim): [sin(v f_k), cos(v f_k)]."""

    def __init__(self, dim: int):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"embed_dim must be an even integer >= 2, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(_MAX_PERIOD) * torch.arange(half) / half) * 2 * math.pi
        # log-noise spans ~20 units: scale the fastest frequency to about one cycle per unit
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        args = v[:, None] * self.freqs.to(v.dtype)
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, time_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.time = nn.Linear(time_dim, width)
        self.linear = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return h + self.linear(nn.functional.silu(self.norm(h)) + self.time(temb))


@dataclass(frozen=True)
class MLPConfig:
    """Architecture of :class:`ScoreMLP` (JSON-able; stored with every checkpoint).

    d : data dimension; width, n_blocks, embed_dim, time_dim : see the module docstring;
    schedule : a name in TORCH_SCHEDULES; sigma_min, sigma_max : GeometricVE parameters;
    data_std : per-coordinate RMS of the training data (for c_in); input_scaling : use c_in.
    """

    d: int
    width: int = ARCHITECTURE_DEFAULTS["width"]
    n_blocks: int = ARCHITECTURE_DEFAULTS["n_blocks"]
    embed_dim: int = ARCHITECTURE_DEFAULTS["embed_dim"]
    time_dim: int = ARCHITECTURE_DEFAULTS["time_dim"]
    schedule: str = "GeometricVE"
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    data_std: float = 1.0
    input_scaling: bool = True

    def __post_init__(self):
        for name in ("d", "width", "embed_dim", "time_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.n_blocks, bool) or not isinstance(self.n_blocks, int) or \
                self.n_blocks < 0:
            raise ValueError(f"n_blocks must be an integer >= 0, got {self.n_blocks!r}")
        if self.schedule not in TORCH_SCHEDULES:
            raise ValueError(f"schedule must be one of {TORCH_SCHEDULES}, got {self.schedule!r}")
        if not self.data_std > 0:
            raise ValueError(f"data_std must be > 0, got {self.data_std}")

    def schedule_object(self) -> Schedule:
        if self.schedule == "GeometricVE":
            return GeometricVE(self.sigma_min, self.sigma_max)
        return get_schedule(self.schedule)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScoreMLP(nn.Module):
    """Noise-predicting MLP with sinusoidal time embedding and residual blocks (THEORY §7)."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        self.schedule = config.schedule_object()
        self.embed = SinusoidalEmbedding(config.embed_dim)
        self.time_mlp = nn.Sequential(nn.Linear(config.embed_dim, config.time_dim), nn.SiLU())
        self.input = nn.Linear(config.d, config.width)
        self.blocks = nn.ModuleList(_ResidualBlock(config.width, config.time_dim)
                                    for _ in range(config.n_blocks))
        self.output = nn.Sequential(nn.LayerNorm(config.width), nn.SiLU(),
                                    nn.Linear(config.width, config.d))
        # a (non-persistent) buffer, not the config's float: stacked ensembles
        # (score_ensemble.StackedModules) vmap over buffers, each member with its own value
        self.register_buffer("data_std", torch.tensor(float(config.data_std)),
                             persistent=False)

    def _times(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        return t.expand(x.shape[0]) if t.ndim == 0 else t

    def forward(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Predicted noise eps (B, d) at noisy points x (B, d) and times t (B,) or scalar."""
        t = self._times(x, t)
        a, delta = torch_a_delta(self.schedule, t)
        noise_level = 0.5 * torch.log(delta) - torch.log(a)           # log(sqrt(Delta)/a)
        temb = self.time_mlp(self.embed(noise_level))
        if self.config.input_scaling:
            x = x / torch.sqrt(a**2 * self.data_std.to(x.dtype) ** 2 + delta)[:, None]
        h = self.input(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.output(h)

    def score(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Score s(x, t) = -eps(x, t)/sqrt(Delta(t)), shape (B, d)."""
        t = self._times(x, t)
        _, delta = torch_a_delta(self.schedule, t)
        return -self(x, t) / torch.sqrt(delta)[:, None]

"""Stacked ensembles of score networks: E independent networks trained in one set of tensors.

Shapes (E members, B points per member, d data dimensions):

- ``x`` (E, B, d) noisy points, ``t`` (E, B) schedule times; outputs ``eps`` (E, B, d), the
  predicted noise of ``x_t = a(t) y + sqrt(Delta(t)) eps``; the score is
  ``s = -eps / sqrt(Delta)``.

Two architectures share that interface:

- :class:`StackedMLP` (the fast protocol's network, ``architecture="mlp"``): a plain MLP on
  ``[c_in x, phi(log sigma)]`` with ``c_in = 1/sqrt(a^2 data_std^2 + Delta)`` and ``phi`` a
  sinusoidal embedding of the log noise level; ``depth`` hidden layers of ``width`` units with
  SiLU. Every linear layer is one batched matrix product (``torch.baddbmm``) over the members,
  so the members never mix: member ``i`` of an ensemble is the network that training member
  ``i`` alone would give (same seed, same batches), up to float rounding.
- :class:`StackedModules` (``architecture="paper"``): any per-member ``nn.Module`` (here the
  paper's :class:`~geomem.numerics.score_mlp.ScoreMLP`), stacked with ``torch.func`` and
  evaluated with ``vmap(functional_call)``.

Each member has its own initialisation seed: the weights of member ``i`` are drawn from a
``torch.Generator`` seeded with ``seeds[i]`` (StackedMLP) or from the global generator seeded
with ``seeds[i]`` just before building the module (StackedModules).
:meth:`member` returns one member as a module of its own, with ``score(x, t)`` on (B, d).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..theory.schedules import GeometricVE, Schedule
from .score_mlp import torch_a_delta

__all__ = ["MemberScore", "StackedMLP", "StackedModules"]

#: frequencies of the log-noise embedding span periods from ~0.5 to ~40 log-units: the
#: training range ln(sigma_max/sigma_min) is ~5-9 units, so the slowest term is monotone on it
_EMBED_FREQUENCIES = (0.025, 2.0)


def _noise_embedding(log_sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features (..., dim) of the log noise level (...,)."""
    half = dim // 2
    freqs = 2 * math.pi * torch.logspace(math.log10(_EMBED_FREQUENCIES[0]),
                                         math.log10(_EMBED_FREQUENCIES[1]), half,
                                         dtype=log_sigma.dtype, device=log_sigma.device)
    args = log_sigma[..., None] * freqs
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class StackedMLP(nn.Module):
    """E plain MLP noise predictors held in stacked (E, fan_in, fan_out) weights.

    data_std : (E,) per-coordinate RMS of each member's training data (for ``c_in``);
    schedule : a :class:`GeometricVE` (a = 1, sigma(t) = sigma_min (sigma_max/sigma_min)^t).
    """

    def __init__(self, d: int, data_std: Sequence[float], seeds: Sequence[int], *,
                 width: int = 256, depth: int = 3, embed_dim: int = 16,
                 schedule: Schedule | None = None):
        super().__init__()
        if len(data_std) != len(seeds) or not seeds:
            raise ValueError(f"data_std and seeds must have the same length >= 1, got "
                             f"{len(data_std)} and {len(seeds)}")
        if embed_dim < 2 or embed_dim % 2:
            raise ValueError(f"embed_dim must be an even integer >= 2, got {embed_dim}")
        self.d, self.width, self.depth, self.embed_dim = int(d), int(width), int(depth), \
            int(embed_dim)
        self.schedule = schedule if schedule is not None else GeometricVE(0.01, 2.0)
        self.seeds = [int(s) for s in seeds]
        self.register_buffer("data_std", torch.as_tensor(list(data_std), dtype=torch.float32))
        sizes = [d + embed_dim] + [width] * depth + [d]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            w = torch.empty(len(seeds), fan_in, fan_out)
            b = torch.empty(len(seeds), 1, fan_out)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
        self._initialise()

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    @torch.no_grad()
    def _initialise(self) -> None:
        # torch.nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases,
        # drawn layer by layer from each member's own generator
        for i, seed in enumerate(self.seeds):
            gen = torch.Generator().manual_seed(seed)
            for w, b in zip(self.weights, self.biases, strict=True):
                bound = 1.0 / math.sqrt(w.shape[1])
                w[i].uniform_(-bound, bound, generator=gen)
                b[i].uniform_(-bound, bound, generator=gen)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise (E, B, d) at points x (E, B, d) and times t (E, B)."""
        a, delta = torch_a_delta(self.schedule, t)
        c_in = 1.0 / torch.sqrt(a**2 * self.data_std.to(x.dtype)[:, None] ** 2 + delta)
        log_sigma = 0.5 * torch.log(delta) - torch.log(a)
        h = torch.cat([x * c_in[..., None], _noise_embedding(log_sigma, self.embed_dim)], -1)
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b.to(h.dtype), h, w.to(h.dtype))
            if k < last:
                h = nn.functional.silu(h)
        return h

    def member(self, i: int) -> MemberScore:
        """Member ``i`` as a single network (a copy: later training does not change it)."""
        single = copy.deepcopy(self)
        with torch.no_grad():
            for w, b in zip(single.weights, single.biases, strict=True):
                w.data = w.data[i:i + 1].clone()
                b.data = b.data[i:i + 1].clone()
            single.data_std = single.data_std[i:i + 1].clone()
        single.seeds = [self.seeds[i]]
        return MemberScore(single)

    def describe(self) -> dict[str, Any]:
        return {"architecture": "mlp", "d": self.d, "width": self.width, "depth": self.depth,
                "embed_dim": self.embed_dim,
                "parameters_per_member": sum(p[0].numel() for p in self.parameters())}


class StackedModules(nn.Module):
    """E copies of a per-member module ``build(i)`` (seeded with ``seeds[i]``), stacked with
    ``torch.func.stack_module_state`` and evaluated with ``vmap`` over the members.

    Members may differ only in tensors (parameters and buffers): non-tensor attributes (the
    config, the schedule) are member 0's, since one template module is called functionally.
    """

    def __init__(self, build: Callable[[int], nn.Module], seeds: Sequence[int]):
        super().__init__()
        from torch.func import stack_module_state

        members = []
        for i, seed in enumerate(seeds):
            torch.manual_seed(int(seed))
            members.append(build(i))
        self.seeds = [int(s) for s in seeds]
        # lists: neither is a submodule. The meta template is called functionally; the
        # prototype (real tensors, non-persistent buffers included) is copied by member()
        self._template = [copy.deepcopy(members[0]).to("meta")]
        self._prototype = [copy.deepcopy(members[0])]
        self.schedule = members[0].schedule
        params, buffers = stack_module_state(members)
        self.names = list(params)
        self.stacked = nn.ParameterList(nn.Parameter(params[k]) for k in self.names)
        self._buffers_stacked = buffers
        self._config = getattr(members[0], "config", None)

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    def _call(self, params: dict, buffers: dict, x: torch.Tensor, t: torch.Tensor):
        from torch.func import functional_call

        return functional_call(self._template[0], (params, buffers), (x, t))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        from torch.func import vmap

        params = dict(zip(self.names, self.stacked, strict=True))
        buffers = {k: b.to(x.device) for k, b in self._buffers_stacked.items()}
        if self.n_members == 1:   # no vmap: its per-call overhead dominates small networks
            return self._call({k: p[0] for k, p in params.items()},
                              {k: b[0] for k, b in buffers.items()}, x[0], t[0])[None]
        return vmap(self._call)(params, buffers, x, t)

    def member(self, i: int) -> MemberScore:
        module = copy.deepcopy(self._prototype[0])
        stacked = dict(zip(self.names, self.stacked, strict=True))
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(stacked[name][i])
            for name, b in module.named_buffers():
                b.copy_(self._buffers_stacked[name][i])
        return MemberScore(module, stacked=False)

    def describe(self) -> dict[str, Any]:
        out = {"architecture": "paper",
               "parameters_per_member": sum(p[0].numel() for p in self.stacked)}
        if self._config is not None and hasattr(self._config, "to_dict"):
            out.update(self._config.to_dict())
        return out


class MemberScore(nn.Module):
    """One trained network: ``forward(x, t)`` predicts eps (B, d) and ``score(x, t)`` returns
    ``-eps/sqrt(Delta)`` (B, d), for x (B, d) and t (B,) or a scalar (schedule units)."""

    def __init__(self, net: nn.Module, stacked: bool = True):
        super().__init__()
        self.net = net.eval()
        self.stacked = stacked
        self.schedule = net.schedule
        for p in self.net.parameters():
            p.requires_grad_(False)

    def _times(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        return t.expand(x.shape[0]) if t.ndim == 0 else t

    def forward(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        t = self._times(x, t)
        if self.stacked:
            return self.net(x[None], t[None])[0]
        return self.net(x, t)

    def score(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        t = self._times(x, t)
        _, delta = torch_a_delta(self.schedule, t)
        return -self(x, t) / torch.sqrt(delta)[:, None]

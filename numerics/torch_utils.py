"""Small torch helpers shared by the training code: seeding, EMA, checkpoints.

A checkpoint is a folder with ``model.pt`` (state dict of the raw and EMA weights and of the
optimiser), ``config.json`` (architecture + training configuration, data seed, scale-down of
the step budget) and, optionally, ``loss.csv`` written by the trainer.
"""

from __future__ import annotations

import copy
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["EMA", "load_checkpoint", "resolve_device", "save_checkpoint", "seed_everything"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python's and torch's global generators (torch initialises modules from its global
    generator); return a torch.Generator seeded the same way. numpy code in geomem takes
    explicit ``np.random.Generator`` objects, so numpy's legacy global state is left alone."""
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" -> CUDA when available else CPU; otherwise the given device."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class EMA:
    """Exponential moving average of a module's parameters and buffers.

    ``decay`` is the per-step retention (the paper uses 0.9999 for 2M steps; short CPU runs
    need a smaller value so the average forgets the random initialisation).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay out of range: allowed 0 <= decay < 1, got {decay}")
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, config: dict[str, Any],
                    ema: EMA | None = None, optimizer: torch.optim.Optimizer | None = None
                    ) -> Path:
    """Write ``model.pt`` and ``config.json`` into folder ``path`` (atomically per file)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(),
             "ema": ema.model.state_dict() if ema is not None else None,
             "ema_decay": ema.decay if ema is not None else None,
             "optimizer": optimizer.state_dict() if optimizer is not None else None}
    tmp = folder / "model.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / "model.pt")
    tmp = folder / "config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True, default=_json_default))
    os.replace(tmp, folder / "config.json")
    return folder


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module, use_ema: bool = True,
                    map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Load weights into ``model`` (EMA weights when stored and ``use_ema``); return it and the
    config. ``model`` must be built with the stored config first (see the trainers)."""
    folder = Path(path)
    if not (folder / "model.pt").exists():
        raise FileNotFoundError(f"no checkpoint at {folder} (model.pt missing)")
    state = torch.load(folder / "model.pt", map_location=map_location, weights_only=True)
    weights = state["ema"] if use_ema and state.get("ema") is not None else state["model"]
    model.load_state_dict(weights)
    config = json.loads((folder / "config.json").read_text())
    return model.eval(), config


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON serialisable: {type(obj)}")

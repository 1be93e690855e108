"""Denoising score matching for stacked ensembles of score networks (THEORY §7).

Loss per member and step: ``mean_b |eps_theta(a y_b + sqrt(Delta) z_b, t_b) - z_b|^2`` over a
batch of the member's training points ``y_b`` (drawn with replacement), times ``t_b`` uniform
on the schedule's training range and ``z_b ~ N(0, I)``; the ensemble minimises the sum over
members, so every member gets exactly the gradient it would get alone (Adam is elementwise).

Two presets (:class:`TrainingConfig`):

- the **fast protocol** (the defaults): a plain 3 x 256 SiLU MLP on ``[c_in x, phi(log
  sigma)]`` (:class:`~geomem.numerics.score_ensemble.StackedMLP`), GeometricVE
  ``sigma(t) = 0.01 (2/0.01)^t`` with t ~ U(0, 1) (log-uniform sigma on [0.01, 2]: the noise
  levels where a training set of unit-norm points can be memorized, none far above the data
  scale), Adam at lr 1e-3, batch 128, EMA 0.999 with warm-up ``min(0.999, (1 + k)/(10 + k))``
  at step k (so early checkpoints are not dominated by the initialisation), constant learning
  rate (so the network at step k does not depend on the budget: runs can be extended);
- ``TrainingConfig.paper()``: the paper's network (:class:`~geomem.numerics.score_mlp.ScoreMLP`),
  GeometricVE sigma in [0.01, 50], RAdam at lr 1e-4, EMA 0.9999, 2M steps (for GPU users).

Checkpoints (:func:`train_ensemble` with a folder): the EMA weights are saved at log-spaced
steps (``checkpoints_per_decade``, default 8, from ``first_checkpoint`` to ``steps``), so
every measurement can be made along training time; the full training state (weights, EMA,
optimiser, random generators, loss log) is saved at each of them, every ``save_seconds`` and
on KeyboardInterrupt, so an interrupted run resumes where it stopped and gives the same
networks as an uninterrupted one. The folder key excludes ``steps``: a larger budget extends
an existing run.

Determinism: member i's initial weights and its batches/times/noises come from two
``torch.Generator`` streams derived from ``seeds[i]`` (numpy SeedSequence), independent of the
other members; runs on the same machine, thread count and torch version are bit-reproducible.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .score_ensemble import MemberScore, StackedMLP, StackedModules
from .score_mlp import MLPConfig, ScoreMLP, torch_a_delta
from .torch_utils import EMA, resolve_device
from .training_config import PAPER_EMA, PAPER_LR, PAPER_STEPS, TrainingConfig, checkpoint_steps

__all__ = ["PAPER_EMA", "PAPER_LR", "PAPER_STEPS", "EnsembleRun", "TrainedScore",
           "TrainingConfig", "build_network", "checkpoint_key", "checkpoint_steps", "data_hash",
           "load_ensemble", "load_score_model", "train_ensemble", "train_or_load",
           "train_score_model"]

def data_hash(Y: Any) -> str:
    """Short sha1 of the float64 training set (identifies the data in checkpoint keys)."""
    arr = np.ascontiguousarray(np.asarray(Y, dtype=np.float64))
    return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()[:16]


def checkpoint_key(config: TrainingConfig, seeds: int | Sequence[int], datasets: Any) -> str:
    """Folder name of a run: sha1 of (config without ``steps``, seeds, data hashes)."""
    seeds = [seeds] if isinstance(seeds, (int, np.integer)) else list(seeds)
    if isinstance(datasets, np.ndarray) or (datasets and np.ndim(datasets[0]) == 1):
        datasets = [datasets]
    cfg = {k: v for k, v in asdict(config).items() if k not in ("steps", "save_seconds")}
    text = json.dumps({"config": cfg, "seeds": [int(s) for s in seeds],
                       "data": [data_hash(Y) for Y in datasets]}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _data_tensors(datasets: Sequence[Any]) -> list[torch.Tensor]:
    out = []
    for i, Y in enumerate(datasets):
        arr = np.asarray(Y, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"Y[{i}] must be a (N, d) training set with N, d >= 1, got shape "
                             f"{arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"Y[{i}] must be finite")
        out.append(torch.as_tensor(arr, dtype=torch.float32))
    if len({t.shape[1] for t in out}) != 1:
        raise ValueError(f"all training sets need the same d, got {[t.shape[1] for t in out]}")
    return out


def _member_streams(seed: int) -> tuple[int, int]:
    """Two independent 32-bit seeds (initialisation, batches) derived from ``seed``."""
    init, batches = np.random.SeedSequence(int(seed)).generate_state(4, dtype=np.uint32)[:4:2]
    return int(init), int(batches)


def build_network(config: TrainingConfig, d: int, data_std: Sequence[float],
                  seeds: Sequence[int]) -> torch.nn.Module:
    """The stacked network of ``config.architecture`` for members with these seeds."""
    init_seeds = [_member_streams(s)[0] for s in seeds]
    if config.architecture == "mlp":
        return StackedMLP(d, data_std, init_seeds, width=config.width, depth=config.depth,
                          embed_dim=config.embed_dim, schedule=config.schedule_object())

    def build(i: int) -> ScoreMLP:
        return ScoreMLP(MLPConfig(d=d, width=config.width, n_blocks=config.depth,
                                  embed_dim=config.embed_dim, time_dim=config.time_dim,
                                  schedule=config.schedule, sigma_min=config.sigma_min,
                                  sigma_max=config.sigma_max, data_std=data_std[i]))

    return StackedModules(build, init_seeds)


@dataclass
class TrainedScore:
    """One trained network: ``model`` (EMA weights, eval mode) with ``score(x, t)``.

    losses : (n_logs, 2) (step, mean loss over the preceding log_every steps); config : the
    stored run description; path : the run folder (None when not saved); loaded : True when
    no training step was needed; step : the training step of these weights.
    """

    model: MemberScore
    losses: np.ndarray
    config: dict[str, Any]
    path: Path | None = None
    loaded: bool = False
    step: int = 0

    @property
    def schedule(self):
        return self.model.schedule

    def score(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        """Score (B, d) at x (B, d), time t (B,) or scalar, in the schedule's time units."""
        return self.model.score(x, t)


@dataclass
class EnsembleRun:
    """A trained ensemble: ``network`` holds the EMA weights at ``step``; ``losses`` is
    (n_logs, 1 + E) (step, loss of each member); ``snapshots`` the saved EMA steps."""

    network: torch.nn.Module
    losses: np.ndarray
    config: dict[str, Any]
    step: int
    snapshots: list[int] = field(default_factory=list)
    path: Path | None = None
    trained_steps: int = 0

    def member(self, i: int) -> TrainedScore:
        """Member ``i`` at this run's step, as a :class:`TrainedScore`."""
        if not 0 <= i < self.network.n_members:
            raise ValueError(f"member must be in [0, {self.network.n_members}), got {i}")
        info = dict(self.config)
        info.update(self.config.get("members", [{}] * (i + 1))[i])
        return TrainedScore(model=self.network.member(i),
                            losses=self.losses[:, [0, 1 + i]] if len(self.losses) else
                            np.zeros((0, 2)), config=info, path=self.path,
                            loaded=self.trained_steps == 0, step=self.step)


# ----------------------------------------------------------------------------- the loop
def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False))
    os.replace(tmp, path)


def _write_losses(path: Path, losses: np.ndarray) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["step", *(f"loss_{i}" for i in range(losses.shape[1] - 1))])
        for row in losses:
            writer.writerow([int(row[0]), *(repr(float(v)) for v in row[1:])])


def _make_optimizer(config: TrainingConfig, params) -> torch.optim.Optimizer:
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.RAdam
    return cls(params, lr=config.lr, foreach=True)


def train_ensemble(datasets: Sequence[Any], config: TrainingConfig | None = None,
                   seeds: Sequence[int] = (0,), *, folder: str | Path | None = None,
                   device: str | torch.device = "cpu",
                   progress: Callable[[int, np.ndarray, float], None] | None = None
                   ) -> EnsembleRun:
    """Train one network per training set ``datasets[i]`` (N_i, d) with seed ``seeds[i]``.

    folder : run folder (snapshots, resume state, ``run.json``, ``loss.csv``); an existing
    state is resumed and training continues up to ``config.steps``.
    progress(step, last logged loss per member (E,), steps per second) : called every
    ``log_every`` steps; config None: ``TrainingConfig()`` (the fast protocol). Returns the EMA
    ensemble at ``config.steps`` (a run folder already
    trained further is returned as it is: its snapshots at or below the budget are the
    networks of this budget).
    """
    config = TrainingConfig() if config is None else config
    data = _data_tensors(datasets)
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(data):
        raise ValueError(f"seeds needs one entry per training set ({len(data)}), got "
                         f"{len(seeds)}")
    device = resolve_device(device)
    E, d = len(data), data[0].shape[1]
    data_std = [float(torch.sqrt(torch.mean(y.double() ** 2))) or 1.0 for y in data]
    net = build_network(config, d, data_std, seeds).to(device)
    params = list(net.parameters())
    optimizer = _make_optimizer(config, params)
    ema = EMA(net, config.ema_decay)
    gens = [torch.Generator().manual_seed(_member_streams(s)[1]) for s in seeds]
    data = [y.to(device) for y in data]
    step, logs, running, counted = 0, [], torch.zeros(E, dtype=torch.float64), 0
    elapsed_before = 0.0
    root = Path(folder) if folder is not None else None
    meta = {"training": config.to_dict(), "network": net.describe(), "d": d,
            "members": [{"n_train": int(y.shape[0]), "seed": s, "data_hash": data_hash(Y),
                         "data_std": std} for y, s, Y, std in zip(data, seeds, datasets,
                                                                   data_std, strict=True)],
            "torch": torch.__version__, "device": str(device)}
    snapshots: list[int] = []
    if root is not None:
        (root / "snapshots").mkdir(parents=True, exist_ok=True)
        state_file = root / "state.pt"
        if state_file.exists():
            state = torch.load(state_file, map_location=device, weights_only=False)
            net.load_state_dict(state["model"])
            ema.model.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            for g, s in zip(gens, state["generators"], strict=True):
                g.set_state(s)
            step, logs = int(state["step"]), list(state["logs"])
            running, counted = state["running"], int(state["counted"])
            elapsed_before = float(state["seconds"])
            snapshots = list(state["snapshots"])
    targets = [s for s in checkpoint_steps(config.steps, config.checkpoints_per_decade,
                                           config.first_checkpoint) if s > step]
    start_step, start = step, time.perf_counter()
    last_save, saved_step = start, step

    def save_state() -> None:
        nonlocal last_save, saved_step
        last_save, saved_step = time.perf_counter(), step
        if root is None:
            return
        meta.update({"step": step, "snapshots": snapshots,
                     "train_seconds": elapsed_before + time.perf_counter() - start,
                     "torch_threads": torch.get_num_threads()})
        _save_atomic({"model": net.state_dict(), "ema": ema.model.state_dict(),
                      "optimizer": optimizer.state_dict(),
                      "generators": [g.get_state() for g in gens], "step": step,
                      "logs": logs, "running": running, "counted": counted,
                      "seconds": meta["train_seconds"], "snapshots": snapshots},
                     root / "state.pt")
        _write_json(meta, root / "run.json")
        if logs:
            _write_losses(root / "loss.csv", np.asarray(logs))

    t_lo, t_hi = config.time_range
    batch = config.batch_size

    net.train()
    try:
        while step < config.steps:
            idx = [torch.randint(0, y.shape[0], (batch,), generator=g) for y, g in
                   zip(data, gens, strict=True)]
            t = torch.stack([t_lo + (t_hi - t_lo) * torch.rand(batch, generator=g)
                             for g in gens]).to(device)
            z = torch.stack([torch.randn(batch, d, generator=g) for g in gens]).to(device)
            y = torch.stack([y[i.to(device)] for y, i in zip(data, idx, strict=True)])
            a, delta = torch_a_delta(net.schedule, t)
            x = a[..., None] * y + torch.sqrt(delta)[..., None] * z
            per_member = torch.mean(torch.sum((net(x, t) - z) ** 2, dim=-1), dim=-1)
            optimizer.zero_grad(set_to_none=True)
            per_member.sum().backward()
            optimizer.step()
            step += 1
            if config.ema_warmup:
                ema.decay = min(config.ema_decay, (1.0 + step) / (10.0 + step))
            ema.update(net)
            running += per_member.detach().to("cpu", torch.float64)
            counted += 1
            if step % config.log_every == 0 or step == config.steps:
                logs.append([step, *(running / counted).tolist()])
                running, counted = torch.zeros(E, dtype=torch.float64), 0
                if progress is not None:
                    rate = (step - start_step) / max(time.perf_counter() - start, 1e-9)
                    progress(step, np.asarray(logs[-1][1:]), rate)
            if targets and step == targets[0]:
                targets.pop(0)
                if root is not None:
                    _save_atomic(ema.model.state_dict(),
                                 root / "snapshots" / f"step_{step:09d}.pt")
                snapshots.append(step)
                save_state()
            elif root is not None and time.perf_counter() - last_save > config.save_seconds:
                save_state()
    except KeyboardInterrupt:
        save_state()   # an interrupted run resumes from here, losing nothing
        raise
    if step != saved_step:   # the last step is a snapshot step, saved already
        save_state()
    meta.setdefault("train_seconds", elapsed_before)   # a reloaded run: its stored time
    meta.update({"step": step, "snapshots": snapshots})
    seconds = time.perf_counter() - start
    meta["session_steps_per_second"] = (step - start_step) / seconds if step > start_step \
        else None
    return EnsembleRun(network=ema.model.eval(), losses=np.asarray(logs, dtype=np.float64)
                       .reshape(-1, 1 + E), config=meta, step=step, snapshots=snapshots,
                       path=root, trained_steps=step - start_step)


def load_ensemble(folder: str | Path, step: int | None = None,
                  device: str | torch.device = "cpu") -> EnsembleRun:
    """The EMA ensemble of a run folder at snapshot ``step`` (default: the latest state)."""
    root = Path(folder)
    if not (root / "run.json").exists():
        raise FileNotFoundError(f"no training run at {root} (run.json missing)")
    meta = json.loads((root / "run.json").read_text())
    cfg = {k: v for k, v in meta["training"].items() if k not in ("scale_down", "paper")}
    config = TrainingConfig(**cfg)
    members = meta["members"]
    net = build_network(config, meta["d"], [m["data_std"] for m in members],
                        [m["seed"] for m in members]).to(resolve_device(device))
    if step is None:
        state = torch.load(root / "state.pt", map_location=device, weights_only=False)
        weights, step = state["ema"], int(state["step"])
    else:
        file = root / "snapshots" / f"step_{int(step):09d}.pt"
        if not file.exists():
            raise ValueError(f"step must be a saved snapshot of {root}: "
                             f"{meta.get('snapshots')}, got {step}")
        weights = torch.load(file, map_location=device, weights_only=True)
    net.load_state_dict(weights)
    losses = np.loadtxt(root / "loss.csv", delimiter=",", skiprows=1, ndmin=2) \
        if (root / "loss.csv").exists() else np.zeros((0, 1 + len(members)))
    return EnsembleRun(network=net.eval(), losses=losses, config=meta, step=int(step),
                       snapshots=list(meta.get("snapshots", [])), path=root)


def train_score_model(Y: Any, config: TrainingConfig | None = None, seed: int = 0, *,
                      device: str | torch.device = "cpu",
                      progress: Callable[[int, float], None] | None = None) -> TrainedScore:
    """Train one network on the rows of ``Y`` (N, d); nothing is written. ``progress(step,
    loss)`` is called every ``log_every`` steps. Returns the EMA network."""
    hook = None if progress is None else (lambda step, loss, rate: progress(step,
                                                                            float(loss[0])))
    run = train_ensemble([Y], config, [seed], device=device, progress=hook)
    return run.member(0)


def train_or_load(checkpoint_root: str | Path, Y: Any, config: TrainingConfig | None = None,
                  seed: int = 0, *, data_seed: int | None = None,
                  progress: Callable[[int, float], None] | None = None) -> TrainedScore:
    """Train (resuming or extending a run under ``checkpoint_root``) one network on ``Y``."""
    config = TrainingConfig() if config is None else config
    folder = Path(checkpoint_root) / checkpoint_key(config, [seed], [Y])
    hook = None if progress is None else (lambda step, loss, rate: progress(step,
                                                                            float(loss[0])))
    run = train_ensemble([Y], config, [seed], folder=folder, progress=hook)
    result = run.member(0)
    result.config["data_seed"] = data_seed
    return result


def load_score_model(path: str | Path, step: int | None = None, member: int = 0
                     ) -> TrainedScore:
    """Member ``member`` of the run in ``path`` at snapshot ``step`` (default: latest)."""
    run = load_ensemble(path, step)
    out = run.member(member)
    out.loaded = True
    return out


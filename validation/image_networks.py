"""The blind denoisers the image commands share: CPU training configurations, data pools,
disjoint subsets, and training -- one network at a time with a step bar, or many in parallel
through an executor -- into the checkpoint folder that ``generalization``, ``gahb`` and
``image-dimensions`` read (the same data set, N, subset, configuration and seed give the same
folder, so whichever command runs first trains and the others reuse).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geomem.numerics.denoiser_training import TrainConfig, checkpoint_folder, train_or_load
from geomem.numerics.denoisers import BlindDenoiser
from geomem.numerics.images import load_dataset

from .executors import run_grid
from .progress import resumed, training_progress

__all__ = [
    "DATA_SEED",
    "DEFAULT_CONFIG",
    "QUICK_CONFIG",
    "SYNTHETIC_CONFIG",
    "SYNTHETIC_DATASETS",
    "SYNTHETIC_POOL",
    "Recipe",
    "config_for",
    "configs_with",
    "dataset_pool",
    "default_n_values",
    "disjoint_subsets",
    "is_trained",
    "pair_jobs",
    "plan_pairs",
    "pool_record",
    "pretrain_networks",
    "scale_down_note",
    "train_with_progress",
    "trained_pair",
    "training_record",
]

#: CPU scale-down of the paper's UNet (64 channels doubling, 3 levels, ~1e5 images, long Adam):
#: the bias-free UNet, 32 channels, 3 levels (8x8 -> 2x2: every output pixel sees the whole
#: image), 2000 steps of batch 64 -- ~17 steps/s on one torch thread, so the 16 networks of a
#: default `generalization` run take ~18 min on two workers (docs/images.md, item 7)
DEFAULT_CONFIG = TrainConfig(arch="unet", width=32, levels=3, steps=2000, batch_size=64,
                             ema_decay=0.99)
#: 16x16 synthetic images cost 4x more per pixel-step: the same UNet at 16 channels (~14
#: steps/s on one thread), same steps and batch
SYNTHETIC_CONFIG = TrainConfig(arch="unet", width=16, levels=3, steps=2000, batch_size=64,
                               ema_decay=0.99)
SYNTHETIC_DATASETS = ("disks", "calpha1", "calpha2", "calpha3")
QUICK_CONFIG = TrainConfig(arch="bfcnn", width=8, depth=4, steps=300, batch_size=16,
                           ema_decay=0.9)
#: the largest synthetic pool drawn (so "max available" is finite for generated data)
SYNTHETIC_POOL = 2000
DATA_SEED = 0
#: the commands' default image side; a real data set keeps its own side and records this one
DEFAULT_SIDE = 16


def dataset_pool(name: str, *, size: int = 16, data_dir: str | None = None,
                 pool: int = SYNTHETIC_POOL, seed: int = DATA_SEED) -> np.ndarray:
    """All images available for ``name`` (synthetic data: ``pool`` draws), shuffled by seed."""
    images = load_dataset(name, None if name in ("digits", "mnist", "cifar10") else pool,
                          size=size, data_dir=data_dir, rng=seed + 1)
    return images[np.random.default_rng(seed).permutation(len(images))]


def pool_record(name: str, images: np.ndarray, size: int) -> dict[str, Any]:
    """What identifies the pool ``images`` of ``name`` in checkpoint keys and result caches.
    ``size`` only shapes synthetic images, so a real data set records ``DEFAULT_SIDE``
    whatever ``--size`` says: its networks stay shared between commands and sizes."""
    side = size if name in SYNTHETIC_DATASETS else DEFAULT_SIDE
    return {"data_seed": DATA_SEED, "size": side, "pool": len(images)}


#: what the image commands accept as a training recipe: one for every data set, one per data
#: set (from `configs_with`), or None for each data set's CPU default
Recipe = TrainConfig | Mapping[str, TrainConfig] | None


def config_for(name: str, config: Recipe = None) -> TrainConfig:
    """The recipe of data set ``name``: ``config`` itself, its entry for ``name``, or the CPU
    default for ``name`` when None."""
    if isinstance(config, Mapping):
        return config[name]
    if config is not None:
        return config
    return SYNTHETIC_CONFIG if name in SYNTHETIC_DATASETS else DEFAULT_CONFIG


def configs_with(names: Sequence[str], changes: Mapping[str, Any],
                 base: TrainConfig | None = None) -> dict[str, TrainConfig] | None:
    """Each data set's recipe (``base`` for all when given, e.g. the quick one) with the fields
    of ``changes`` that are not None replaced, so that ``--steps`` changes only the steps
    (the synthetic sets keep their narrower network); None when nothing changes and there is
    no base. Raises ValueError (naming the field) for an invalid value."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes and base is None:
        return None
    return {name: dataclasses.replace(config_for(name, base), **changes) for name in names}


def scale_down_note(configs: dict[str, TrainConfig]) -> str:
    """The record's ``scale_down`` line: each data set's network and budget against the paper's
    (THEORY 8: 64-channel UNet, ~1e5 images, 100k Adam steps)."""
    parts = []
    for name, cfg in configs.items():
        shape = f"{cfg.levels} levels" if cfg.arch == "unet" else f"depth {cfg.depth}"
        parts.append(f"{name}: bias-free {cfg.arch} {cfg.width} channels ({shape}), "
                     f"{cfg.steps} Adam steps of batch {cfg.batch_size}")
    return ("CPU: " + "; ".join(parts) + " -- instead of the paper's 64-channel UNet trained "
            "100k steps on ~1e5 images; N up to the pool size / 2")


def default_n_values(pool_size: int) -> list[int]:
    """{1, 10, 100, 1000, max available} with max = pool_size // 2 (two disjoint subsets)."""
    top = pool_size // 2
    return sorted({n for n in (1, 10, 100, 1000) if n < top} | {top})


def disjoint_subsets(pool: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """S1 = pool[:n], S2 = pool[n:2n] (the pool is already shuffled)."""
    if not 1 <= n <= len(pool) // 2:
        raise ValueError(f"n out of range: allowed 1..{len(pool) // 2}, got {n}")
    return pool[:n], pool[n:2 * n]


def trained_pair(cache_dir: Path, dataset: str, pool: np.ndarray, n: int, config: TrainConfig,
                 seed: int, pool_info: dict[str, Any]
                 ) -> tuple[list[BlindDenoiser], tuple[np.ndarray, np.ndarray]]:
    """The two denoisers (trained or loaded from the cache) for subsets S1, S2 of size n;
    network k is initialised with seed ``seed + k``."""
    subsets = disjoint_subsets(pool, n)
    models = [train_with_progress(cache_dir, dataset, images, k, config, seed + k, pool_info)
              for k, images in enumerate(subsets)]
    return models, subsets


def training_record(cache_dir: Path, dataset: str, n_train: int, subset: int,
                    config: TrainConfig, seed: int, pool_info: dict[str, Any]) -> dict[str, Any]:
    """Wall time and loss-curve flatness (drift over the last 20%) of a finished network,
    read from its checkpoint folder; {} when it is not there."""
    path = checkpoint_folder(cache_dir, dataset, n_train, subset, config, seed,
                             pool_info) / "config.json"
    if not path.exists():
        return {}
    info = json.loads(path.read_text())
    return {"dataset": dataset, "N": n_train, "network": "AB"[subset],
            "wall_seconds": info.get("wall_seconds"), "steps": config.steps,
            "loss_drift_last_20pct": info.get("loss_drift_last_20pct")}


def is_trained(cache_dir: Path, dataset: str, n_train: int, subset: int, config: TrainConfig,
               seed: int, pool_info: dict[str, Any]) -> bool:
    """Whether the network's checkpoint folder holds a finished model."""
    return (checkpoint_folder(cache_dir, dataset, n_train, subset, config, seed, pool_info)
            / "model.pt").exists()


def train_with_progress(cache_dir: Path, dataset: str, images: np.ndarray, subset: int,
                        config: TrainConfig, seed: int, pool_info: dict[str, Any]
                        ) -> BlindDenoiser:
    """:func:`~geomem.numerics.denoiser_training.train_or_load` with a training progress bar (none
    when the checkpoint is already complete)."""
    if is_trained(cache_dir, dataset, len(images), subset, config, seed, pool_info):
        return train_or_load(cache_dir, dataset, images, subset, config, seed,
                             extra=pool_info)[0]
    bar = training_progress(config.steps, f"{dataset} N={len(images)} network {subset}")
    done = [0]

    def hook(step: int, loss: float) -> None:
        bar.step(step - done[0], loss)
        done[0] = step

    try:
        return train_or_load(cache_dir, dataset, images, subset, config, seed, extra=pool_info,
                             progress=hook)[0]
    finally:
        bar.close()


def _train_network(point: dict[str, Any], seed_sequence: Any = None) -> dict[str, Any]:
    """Executor task: train (or resume) one network of a pair into its checkpoint folder.
    The point names everything (data set, pool, N, subset, config, seed, cache folder), so the
    task rebuilds the same training images in a worker process; the training seed is the
    point's own, never the executor's ``seed_sequence``."""
    if multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)   # one core per worker: workers do not oversubscribe
    images = dataset_pool(point["dataset"], size=point["size"], data_dir=point["data_dir"],
                          pool=point["pool_request"])
    subset = disjoint_subsets(images, point["n"])[point["subset"]]
    train_or_load(Path(point["cache_dir"]), point["dataset"], subset, point["subset"],
                  TrainConfig(**point["config"]), point["seed"], extra=point["pool_info"])
    return {}    # the checkpoint folder is the result (the commands read it from there)


def pretrain_networks(cache_dir: Path, jobs: Sequence[dict[str, Any]], executor: Any) -> None:
    """Train the networks ``jobs`` (dicts: dataset, n, subset, config, seed, size, data_dir,
    pool_request, pool_info) in parallel through ``executor`` (one torch thread per worker:
    on 2 cores one UNet step takes as long on one thread as on two, so two workers double
    the throughput). Finished checkpoints are reused and reported; with no executor, or a
    serial one, nothing is done here (the commands then train in order, with a step bar)."""
    if executor is None or getattr(executor, "name", "serial") == "serial":
        return
    pending = [dict(job, cache_dir=str(cache_dir)) for job in jobs
               if not is_trained(cache_dir, job["dataset"], job["n"], job["subset"],
                                 TrainConfig(**job["config"]), job["seed"], job["pool_info"])]
    if len(pending) < len(jobs):
        resumed("networks (checkpoints reused)", len(jobs) - len(pending), len(jobs))
    if pending:
        run_grid(_train_network, pending, seed=0, executor=executor, label="networks trained")


def pair_jobs(dataset: str, grid: Sequence[int], config: TrainConfig, seed: int, *,
              size: int, data_dir: str | None, pool_request: int, pool_info: dict[str, Any],
              subsets: Sequence[int] = (0, 1)) -> list[dict[str, Any]]:
    """The :func:`pretrain_networks` jobs of :func:`trained_pair` for every N of ``grid``."""
    return [{"dataset": dataset, "n": int(n), "subset": k, "config": config.to_dict(),
             "seed": seed + k, "size": size, "data_dir": data_dir,
             "pool_request": pool_request, "pool_info": pool_info}
            for n in grid for k in subsets]


def plan_pairs(datasets: Sequence[str], n_values: Sequence[int] | None,
               config: Recipe, seed: int, *, size: int, pool: int,
               data_dir: str | None = None, reserved: int = 0
               ) -> tuple[dict[str, tuple[np.ndarray, dict[str, Any], list[int]]],
                          list[dict[str, Any]]]:
    """Each data set's pool, pool record and N grid (``n_values`` or `default_n_values`), and the
    :func:`pretrain_networks` jobs of every pair; ``reserved`` images of the pool are kept out of
    reach of the largest N (held-out test points). ValueError when an N does not fit."""
    pools, jobs = {}, []
    for name in datasets:
        images = dataset_pool(name, size=size, data_dir=data_dir, pool=pool)
        pool_info = pool_record(name, images, size)
        grid = sorted(n_values) if n_values is not None else default_n_values(len(images))
        largest = min(len(images) - reserved, len(images) // 2)
        if grid[-1] > largest:
            raise ValueError(f"n_values: largest N for {name} is {largest}, got {grid[-1]}")
        pools[name] = images, pool_info, grid
        jobs += pair_jobs(name, grid, config_for(name, config), seed, size=size,
                          data_dir=data_dir, pool_request=pool, pool_info=pool_info)
    return pools, jobs

"""Trained score networks in ``geomem lid-benchmark`` (the memorization engine's networks).

For the data sets of one ambient dimension (``NETWORK_DIM``) and every N, one ensemble of the
memorization engine's fast protocol (`geomem.numerics.training.train_ensemble`: 3 x 256 SiLU
MLP, GeometricVE sigma in [0.01, 2], Adam, EMA) is trained for ``NETWORK_STEPS`` steps, one
member per (data set, N), on the same training points as the empirical score. Each member is
read at two training times (``read_steps``): the saved snapshot nearest a tenth of the budget
(an early, smooth network) and the end of the budget, which lies beyond the memorization time
of the fast protocol at N = 100 (tau_mem ~ 17k steps, docs/findings.md section 5) and far below
it at N = 1000. Its score at noise ``delta`` (VE, a = 1) is read at sigma = sqrt(delta) through
``time_of_sigma`` and given to the score-based estimators as a float64 torch callable (exact
derivatives by torch.func). The closed-form LID is defined by the training set itself, so it
has no network version.

Checkpoints: ``<cache>/score-ensembles/<key>`` (the memorization engine's layout; the key hashes
the config, seeds and data), resumed when interrupted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geomem.numerics.lid_estimators import (
    FlipdEstimator,
    NormalBundleEstimator,
    SpectralGapEstimator,
)
from geomem.numerics.memorization import time_of_sigma
from geomem.numerics.training import (
    TrainingConfig,
    checkpoint_key,
    checkpoint_steps,
    load_ensemble,
    train_ensemble,
)

from .progress import note, training_progress

__all__ = ["NETWORK_DIM", "NETWORK_METHODS", "NETWORK_STEPS", "network_datasets",
           "network_rows", "read_steps"]

#: the ambient dimension of the data sets given to networks (one ensemble holds them all)
NETWORK_DIM = 20
#: Adam steps of every network: at N = 100 about twice the fast protocol's memorization time
#: (so the last read-out sees a memorizing network), at N = 1000 a fifth of it
NETWORK_STEPS = 30_000
QUICK_STEPS = 200
NETWORK_METHODS = ("flipd", "normal_bundle", "spectral_gap")
_ESTIMATORS: dict[str, Callable[..., Any]] = {
    "flipd": FlipdEstimator, "normal_bundle": NormalBundleEstimator,
    "spectral_gap": SpectralGapEstimator}


def network_datasets(datasets: Sequence[str], dims: dict[str, int]) -> list[str]:
    """The data sets of dimension NETWORK_DIM, in order."""
    return [name for name in datasets if dims[name] == NETWORK_DIM]


def _config(quick: bool) -> TrainingConfig:
    if quick:
        return TrainingConfig(steps=QUICK_STEPS, width=32, depth=2, first_checkpoint=20,
                              log_every=20)
    return TrainingConfig(steps=NETWORK_STEPS)


def read_steps(config: TrainingConfig) -> tuple[int, int]:
    """The two read-out steps: the snapshot nearest (in ln step) a tenth of the budget, and
    the budget."""
    saved = checkpoint_steps(config.steps, config.checkpoints_per_decade,
                             config.first_checkpoint)
    early = min(saved, key=lambda s: abs(math.log(s / (config.steps / 10))))
    return early, config.steps


def network_rows(jobs: Sequence[tuple[str, int, np.ndarray, np.ndarray, float]],
                 deltas: Sequence[float], checkpoints: Path, *, seed: int, quick: bool
                 ) -> list[dict[str, Any]]:
    """Train (or load) one ensemble over ``jobs`` = (dataset, N, train (N, d), test (B, d),
    scale) and estimate at the test points for every delta fraction and read-out step;
    returns tidy rows as the empirical ones (method names with the suffix ``_network``, and
    ``train_step``)."""
    if not jobs:
        return []
    config = _config(quick)
    data = [j[2] for j in jobs]
    seeds = [seed + i for i in range(len(jobs))]
    folder = checkpoints / "score-ensembles" / checkpoint_key(config, seeds, data)
    bar = training_progress(config.steps, f"lid networks ({len(jobs)})",
                            initial=_finished_steps(folder))
    try:
        run = train_ensemble(data, config, seeds, folder=folder,
                             progress=lambda step, loss, rate: bar.step(
                                 step - bar.n, loss=float(np.mean(loss))))
    finally:
        bar.close()
    if run.trained_steps == 0:
        note(f"lid networks: reused trained networks in {folder}")
    rows = []
    for step in read_steps(config):
        ensemble = load_ensemble(folder, step)
        for i, (name, n, _, test, scale) in enumerate(jobs):
            member = ensemble.member(i)
            for frac in deltas:
                delta = frac * scale
                score = _score_at(member, time_of_sigma(member.schedule, math.sqrt(delta)))
                for method in NETWORK_METHODS:
                    est = _ESTIMATORS[method](score, 1.0, delta, torch_fn=True).fit_pw(test)
                    rows += [{"dataset": name, "N": n, "delta_fraction": frac, "delta": delta,
                              "method": f"{method}_network", "train_step": step, "point": p,
                              "estimate": float(v)} for p, v in enumerate(est.dimension_pw_)]
    return rows


def _score_at(member, t: float) -> Callable[[torch.Tensor], torch.Tensor]:
    model = member.model.double()

    def score(x: torch.Tensor) -> torch.Tensor:
        return model.score(x, t)
    return score


def _finished_steps(folder: Path) -> int:
    """Steps already trained in ``folder`` (0 when new), for the progress bar."""
    meta = folder / "run.json"
    return int(json.loads(meta.read_text()).get("step", 0)) if meta.exists() else 0

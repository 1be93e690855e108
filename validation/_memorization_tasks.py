"""Worker task of ``geomem memorization``: train one ensemble (one N, several seeds) and measure
every EMA snapshot (see :mod:`geomem.validation.memorization` for what is measured).

The task is a module-level function of (point, seed sequence), so it runs in a worker process
or on a Dask worker; the point carries everything (N, seeds, budget, geometry, noise levels,
checkpoint folder). Training resumes from the run folder's state, so a killed task loses at
most the steps since the last save. Rows are plain dicts (JSON-able) for the tidy CSVs.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..numerics.empirical import empirical_jacobian
from ..numerics.memorization import (
    empirical_score_fn,
    memorized_fraction,
    population_score_fn,
    relative_score_distance,
    retained_dimensions,
    reverse_samples,
    score_jacobians,
    time_of_sigma,
)
from ..numerics.retained import effective_subspace_variances
from ..numerics.training import TrainingConfig, checkpoint_key, load_ensemble, train_ensemble
from ..theory.manifold import LinearManifold
from .progress import note, training_progress

__all__ = ["GEOMETRIES", "MEASURE_POINTS", "SAMPLES", "group_budget", "population_jacobian",
           "train_and_measure", "training_config", "training_sets"]

#: data models by name: the paper's normalised generator and its un-normalised Gaussian twin
GEOMETRIES = {"fig4": LinearManifold.figure4,
              "fig4-gaussian": lambda: LinearManifold(30, (2, 5), stds=(1.0, 0.3),
                                                      residual_std=0.01)}
#: query points per kind (training points + noise, fresh points) and noise level
MEASURE_POINTS = 16
#: probability-flow samples per snapshot for the memorized fraction, and their ODE steps
SAMPLES = 64
SAMPLER_STEPS = 32
#: the quick (test-sized) network: same protocol, smaller MLP, denser early snapshots; and
#: its smaller measurement sizes (points, samples, sampler steps)
QUICK_NETWORK = {"width": 32, "depth": 2, "first_checkpoint": 20, "log_every": 20}
QUICK_MEASURE = (4, 16, 8)


def group_budget(n_train: int, max_steps: int, steps_per_point: int) -> int:
    """Training steps of the networks of size N: ``min(max_steps, steps_per_point * N)``,
    at least 100 (the first snapshot)."""
    return int(max(100, min(max_steps, steps_per_point * n_train)))


def training_config(steps: int, quick: bool = False) -> TrainingConfig:
    """The fast protocol at ``steps`` (test-sized network under ``quick``)."""
    return TrainingConfig(steps=steps, **(QUICK_NETWORK if quick else {}))


def training_sets(geometry: str, n_train: int, seeds: list[int]) -> list[np.ndarray]:
    """One training set (N, d) per seed (data seed [seed, N]: sets differ across seeds)."""
    model = GEOMETRIES[geometry]()
    return [model.sample(n_train, np.random.default_rng([s, n_train])) for s in seeds]


def population_jacobian(model: LinearManifold, a: float, delta: float) -> np.ndarray:
    """The Gaussian population score's Jacobian -(a^2 Sigma_eff + Delta I)^{-1} (d, d), with
    the effective (per-subspace) variances the gap criterion uses."""
    v = np.full(model.d, float(model.residual_std) ** 2)
    sub = model.direction_subspace
    for k, var in enumerate(effective_subspace_variances(model)):
        v[sub == k] = var
    return -(model.basis / (a * a * v + delta)) @ model.basis.T


def _retained_rows(counts: np.ndarray, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows per subspace and for their sum ("all"), from counts (B, K) averaged over B."""
    mean = np.asarray(counts, float).mean(axis=0)
    rows = [{**base, "subspace": k, "retained": float(v)} for k, v in enumerate(mean)]
    return rows + [{**base, "subspace": "all", "retained": float(mean.sum())}]


def _query_points(model: LinearManifold, Y: np.ndarray, sigma: float, seed: int, count: int
                  ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, int(round(sigma * 1e6)), Y.shape[0]])
    idx = rng.choice(Y.shape[0], count, replace=Y.shape[0] < count)
    noise = rng.standard_normal((2, count, model.d))
    fresh = model.sample(count, rng)
    return {"train": Y[idx] + sigma * noise[0], "fresh": fresh + sigma * noise[1]}


def train_and_measure(point: Mapping[str, Any], seed_sequence: Any = None) -> dict[str, Any]:
    """Train (or resume) the ensemble of ``point`` and measure all its snapshots."""
    if multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)   # one core per worker: workers do not oversubscribe
    n, seeds, steps = int(point["n_train"]), [int(s) for s in point["seeds"]], \
        int(point["steps"])
    geometry, sigmas = point["geometry"], [float(s) for s in point["sigmas"]]
    model = GEOMETRIES[geometry]()
    Ys = training_sets(geometry, n, seeds)
    config = training_config(steps, bool(point.get("quick")))
    folder = Path(point["checkpoints"]) / "score-ensembles" / checkpoint_key(config, seeds, Ys)
    bar = training_progress(steps, f"N={n} ({len(seeds)} networks)", initial=_done(folder))

    def hook(step: int, loss: np.ndarray, rate: float) -> None:
        bar.step(step - bar.n, loss=float(np.mean(loss)))

    try:
        run = train_ensemble(Ys, config, seeds, folder=folder, device=point.get("device",
                                                                                "cpu"),
                             progress=hook)
    finally:
        bar.close()
    if run.trained_steps == 0:
        note(f"N={n}: reused trained networks in {folder}")
    schedule = run.network.schedule
    rows: list[dict] = []
    samples: list[dict] = []
    distance: list[dict] = []
    quick = bool(point.get("quick"))
    n_points, n_samples, sampler_steps = QUICK_MEASURE if quick else (
        MEASURE_POINTS, SAMPLES, SAMPLER_STEPS)
    queries = {(s, sg): _query_points(model, Y, sg, s, n_points)
               for s, Y in zip(seeds, Ys, strict=True) for sg in sigmas}
    gaussian = not model.normalized
    # the two limits: the exact empirical score of each training set, the population score
    for i, (s, Y) in enumerate(zip(seeds, Ys, strict=True)):
        for sg in sigmas:
            for kind, X in queries[(s, sg)].items():
                base = {"n_train": n, "seed": s, "step": None, "sigma": sg, "points": kind}
                J = np.asarray(empirical_jacobian(X, Y, a=1.0, delta=sg * sg))
                rows += _retained_rows(retained_dimensions(J, model, 1.0, sg * sg),
                                       {**base, "source": "empirical"})
                if i == 0 and kind == "train":
                    J_pop = population_jacobian(model, 1.0, sg * sg)[None]
                    rows += _retained_rows(retained_dimensions(J_pop, model, 1.0, sg * sg),
                                           {**base, "seed": None, "points": "any",
                                            "source": "population"})
    references = {s: empirical_score_fn(Y, schedule) for s, Y in zip(seeds, Ys, strict=True)}
    population = population_score_fn(model, schedule) if gaussian else None
    for step in [s for s in run.snapshots if s <= steps]:   # a longer run is cut at the budget
        ensemble = load_ensemble(folder, step)
        for i, (s, Y) in enumerate(zip(seeds, Ys, strict=True)):
            net = ensemble.member(i)
            for sg in sigmas:
                t = time_of_sigma(schedule, sg)
                for kind, X in queries[(s, sg)].items():
                    base = {"n_train": n, "seed": s, "step": step, "sigma": sg, "points": kind}
                    J = score_jacobians(net.score, X, t)
                    rows += _retained_rows(retained_dimensions(J, model, 1.0, sg * sg),
                                           {**base, "source": "network"})
                    distance.append({**base, "reference": "empirical", "relative_distance":
                                     relative_score_distance(net.score, references[s], X, t)})
                    if population is not None:
                        distance.append({**base, "reference": "population",
                                         "relative_distance":
                                         relative_score_distance(net.score, population, X, t)})
            gen = reverse_samples(net.score, schedule, n_samples, model.d, steps=sampler_steps,
                                  seed=s * 1_000_003 + step)
            samples.append({"n_train": n, "seed": s, "step": step,
                            "memorized_fraction": memorized_fraction(gen, Y)})
    members = run.config.get("members", [])
    return {"retained": rows, "samples": samples, "distance": distance,
            "training": {"n_train": n, "seeds": seeds, "steps": steps, "folder": str(folder),
                         "trained_steps": run.trained_steps,
                         "train_seconds": run.config.get("train_seconds"),
                         # one ensemble step advances every member by one step
                         "ensemble_steps_per_second": run.config.get("session_steps_per_second"),
                         "network_steps_per_second":
                             (run.config["session_steps_per_second"] * len(seeds)
                              if run.config.get("session_steps_per_second") else None),
                         "members": members, "config": config.to_dict(),
                         "final_loss": run.losses[-1, 1:].tolist() if len(run.losses) else []}}


def _done(folder: Path) -> int:
    """Steps already trained in a run folder (0 when new), for the progress bar."""
    import json

    meta = folder / "run.json"
    if not meta.exists():
        return 0
    return int(json.loads(meta.read_text()).get("step", 0))

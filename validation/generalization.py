"""``geomem generalization``: memorization -> generalization with disjoint training sets
(Kadkhodaie et al., THEORY section 8).

For each data set and each N, two blind bias-free denoisers are trained on disjoint subsets
S1, S2 of size N; both are sampled with the stochastic coarse-to-fine ascent sampler from the
same seed (identical initial and injected noise). Outputs: histograms of the A-vs-B cosine
similarity and of the sample-vs-nearest-training-image similarity per N, the crossover N*
where the median A-vs-B similarity passes 0.9, and the paper-style rows (closest training
image in S1, sample of A, sample of B, closest training image in S2).

Trained networks are cached in ``--cache-dir`` (else ``$GEOMEM_CACHE``, else
``<out>/checkpoints``; :func:`geomem.validation._common.checkpoint_dir`), keyed by data set,
N, subset, architecture, seed and steps, and reused by ``geomem gahb`` and
``geomem image-dimensions`` when they are given the same folder. Everything is scaled down
for CPU (small nets, few thousand Adam steps instead of the paper's long training); the
scale-down is written into record.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from geomem.numerics.images import DATASETS, fit_disk
from geomem.numerics.sampler import cosine_similarity, sample

from ._common import (
    bad_option,
    checked,
    checkpoint_dir,
    default_out,
    parse_choices,
    parse_ints,
)
from ._generalization_plots import plot_histograms, plot_rows
from ._generalization_stats import (
    SIMILARITY_THRESHOLD,
    bootstrap_medians,
    converged_median,
    crossover_ci,
    crossover_n,
    percentile_ci,
)
from .image_networks import (
    DATA_SEED,
    DEFAULT_CONFIG,
    QUICK_CONFIG,
    SYNTHETIC_CONFIG,
    SYNTHETIC_POOL,
    Recipe,
    config_for,
    configs_with,
    dataset_pool,
    default_n_values,
    disjoint_subsets,
    plan_pairs,
    pretrain_networks,
    scale_down_note,
    train_with_progress,
    trained_pair,
    training_record,
)
from .options import (
    CacheDirOption,
    OutOption,
    QuickOption,
    SeedOption,
    WorkersOption,
    cli_executor,
    quick_sizes,
)
from .progress import progress
from .records import RunOutput

__all__ = [
    "DEFAULT_CONFIG",
    "QUICK_CONFIG",
    "SYNTHETIC_CONFIG",
    "SIMILARITY_THRESHOLD",
    "crossover_n",
    "dataset_pool",
    "default_n_values",
    "config_for",
    "disjoint_subsets",
    "register",
    "run_generalization",
    "train_with_progress",
    "trained_pair",
]

COMMAND = "generalization"
RESULT_FORMAT = 1
#: sampler settings for CPU runs (THEORY: beta 0.1-0.5 takes about 50-130 steps). The paper's
#: stopping level sigma_L = 0.01 (THEORY 8, docs/images.md). It was 0.03 while the networks
#: (old recipe) floored at a residual of ~0.015-0.04 per pixel on clean images and some chains
#: never reached 0.01; with the issue-16 recipe a digits network (N = 898) reaches it in every
#: chain (32 of 32, 40-49 steps, /tmp measurement recorded in docs/images.md).
SAMPLER = {"sigma0": 1.0, "sigma_final": 0.01, "h0": 0.01, "beta": 0.5, "max_steps": 1000}


def _disk_fits(res: dict[str, Any]) -> list[list[float]]:
    """RMS residual per pixel of the 5-parameter disk fit to every sample of A and of B (the
    sampler stops at a residual noise of ``SAMPLER['sigma_final']`` per pixel)."""
    return [[fit_disk(np.asarray(img, dtype=float))[1] for img in res["samples"][k]]
            for k in (0, 1)]


def _similarities(models, subsets, n_samples: int, seed: int) -> dict[str, Any]:
    shape = (n_samples, *subsets[0].shape[1:])
    samples = [sample(m, shape, seed=seed, **SAMPLER) for m in models]
    ab = cosine_similarity(samples[0].samples, samples[1].samples)
    result: dict[str, Any] = {"ab": ab, "steps": [s.steps for s in samples],
                              "both_converged": samples[0].converged & samples[1].converged,
                              "converged": [s.converged for s in samples],
                              "samples": [s.samples for s in samples]}
    for k, (res, train) in enumerate(zip(samples, subsets, strict=True)):
        sims = cosine_similarity(res.samples[:, None], train[None])        # (n_samples, N)
        result[f"train_sim_{k}"] = sims.max(1)
        result[f"closest_{k}"] = train[sims.argmax(1)]
    return result


def run_generalization(out: Path, *, datasets: Sequence[str] = ("digits", "disks"),
                       n_values: Sequence[int] | None = None, config: Recipe = None,
                       n_samples: int = 64, size: int = 16, cache_dir: Path | None = None,
                       data_dir: str | None = None, seed: int = 0, pool: int = SYNTHETIC_POOL,
                       n_rows: int = 3, executor: Any = None) -> dict[str, Any]:
    """Train (or load; in parallel through ``executor`` when it has workers), sample, measure
    and draw; returns the summary per data set."""
    run = RunOutput(out, COMMAND)
    cache_dir = checkpoint_dir(out, cache_dir)
    rows, summary_rows, train_rows, summary, per_dataset = [], [], [], {}, {}
    pools, jobs = plan_pairs(datasets, n_values, config, seed, size=size, pool=pool,
                             data_dir=data_dir)
    pretrain_networks(cache_dir, jobs, executor)
    for name in datasets:
        images, pool_info, grid = pools[name]
        cfg = config_for(name, config)
        results = {}
        for n in progress(grid, f"generalization {name}"):
            key = {"format": RESULT_FORMAT, "dataset": name, "n": n, "config": cfg.to_dict(),
                   "seed": seed, "n_samples": n_samples, "sampler": SAMPLER, **pool_info}

            def compute(n=n, name=name, images=images, pool_info=pool_info, cfg=cfg):
                models, subsets = trained_pair(cache_dir, name, images, n, cfg, seed,
                                               pool_info)
                return _similarities(models, subsets, n_samples, seed)

            results[n] = run.cached(key, compute)
        ok_by_n = [np.asarray(results[n]["both_converged"], dtype=bool) for n in grid]
        ab_by_n = [np.asarray(results[n]["ab"], dtype=float) for n in grid]
        train_by_n = [np.r_[np.asarray(results[n]["train_sim_0"], dtype=float),
                            np.asarray(results[n]["train_sim_1"], dtype=float)] for n in grid]
        boot_ab = bootstrap_medians(ab_by_n, ok_by_n, seed=seed)
        boot_train = bootstrap_medians(train_by_n, [np.r_[k, k] for k in ok_by_n], seed=seed)
        medians = [converged_median(v, k) for v, k in zip(ab_by_n, ok_by_n, strict=True)]
        for j, n in enumerate(grid):
            res, ok = results[n], ok_by_n[j]
            fits = _disk_fits(res) if name == "disks" else None
            for i, ab in enumerate(res["ab"]):
                rows.append({"dataset": name, "N": n, "sample": i, "ab_similarity": float(ab),
                             "a_train_similarity": res["train_sim_0"][i],
                             "b_train_similarity": res["train_sim_1"][i],
                             "a_steps": res["steps"][0][i], "b_steps": res["steps"][1][i],
                             "both_converged": bool(ok[i]),
                             # NaN where the data set is not disks (tidy columns)
                             "a_disk_fit_rms": fits[0][i] if fits else float("nan"),
                             "b_disk_fit_rms": fits[1][i] if fits else float("nan")})
            ab_ci, train_ci = percentile_ci(boot_ab[:, j]), percentile_ci(boot_train[:, j])
            summary_rows.append({
                "dataset": name, "N": n, "median_ab_similarity": medians[j],
                "median_ab_ci_low": ab_ci[0], "median_ab_ci_high": ab_ci[1],
                "median_train_similarity": converged_median(train_by_n[j], np.r_[ok, ok]),
                "median_train_ci_low": train_ci[0], "median_train_ci_high": train_ci[1],
                "n_converged": int(ok.sum()), "n_samples": int(ok.size),
                "fraction_converged": float(np.mean(ok)),
                "median_disk_fit_rms": (converged_median(np.r_[fits[0], fits[1]], np.r_[ok, ok])
                                        if fits else float("nan"))})
        n_star = crossover_n(grid, medians)
        mine = [r for r in summary_rows if r["dataset"] == name]
        summary[name] = {"n_values": grid, "median_ab_similarity": medians,
                         "median_ab_ci": [[r["median_ab_ci_low"], r["median_ab_ci_high"]]
                                          for r in mine],
                         "median_train_similarity": [r["median_train_similarity"]
                                                     for r in mine],
                         "median_train_ci": [[r["median_train_ci_low"],
                                              r["median_train_ci_high"]] for r in mine],
                         "n_star": n_star, "n_star_reached": n_star is not None,
                         # every grid N already agrees: N* is at or below the smallest N
                         "n_star_upper_bound_only": bool(
                             n_star is not None and np.all(np.asarray(medians)[
                                 np.isfinite(medians)] >= SIMILARITY_THRESHOLD)),
                         "n_star_ci": crossover_ci(grid, boot_ab),
                         "fraction_converged": [r["fraction_converged"] for r in mine]}
        trained = [training_record(cache_dir, name, n, k, cfg, seed + k, pool_info)
                   for n in grid for k in (0, 1)]
        train_rows += [r for r in trained if r]
        summary[name]["max_abs_loss_drift"] = max(
            (abs(r["loss_drift_last_20pct"]) for r in trained
             if r and r["loss_drift_last_20pct"] is not None), default=None)
        if name == "disks":
            summary[name]["median_disk_fit_rms"] = [r["median_disk_fit_rms"] for r in mine]
        per_dataset[name] = (grid, results)
    run.write_csv("similarities", rows)
    run.write_csv("summary", summary_rows)
    run.write_csv("training", train_rows)
    plot_histograms(run, per_dataset, summary)
    plot_rows(run, per_dataset, n_rows)
    run.write_record(
        {"datasets": list(datasets), "n_values": n_values,
         "train": {name: config_for(name, config).to_dict() for name in datasets},
         "n_samples": n_samples, "size": size, "pool": pool, "sampler": SAMPLER,
         "cache_dir": str(cache_dir), "similarity_threshold": SIMILARITY_THRESHOLD,
         "scale_down": scale_down_note({name: config_for(name, config) for name in datasets})},
        seeds={"train_init": [seed, seed + 1], "sampler": seed, "data": DATA_SEED},
        extra={"summary": summary})
    return summary


def register(app: typer.Typer) -> None:
    @app.command("generalization")
    def generalization_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        datasets: Annotated[str, typer.Option(help=f"Comma-separated, from {DATASETS}.")
                            ] = "digits,disks",
        n_values: Annotated[str | None, typer.Option(
            "--n-values", help="Comma-separated N (default 1,10,100,1000,max).")] = None,
        steps: Annotated[int | None, typer.Option(
            help=f"Adam steps per network (default {DEFAULT_CONFIG.steps} digits, "
                 f"{SYNTHETIC_CONFIG.steps} synthetic).")] = None,
        width: Annotated[int | None, typer.Option(
            help=f"Channels (default {DEFAULT_CONFIG.width} digits, "
                 f"{SYNTHETIC_CONFIG.width} synthetic).")] = None,
        arch: Annotated[str, typer.Option(help="bfcnn or unet.")] = DEFAULT_CONFIG.arch,
        samples: Annotated[int, typer.Option(help="Samples per network and N.")] = 64,
        size: Annotated[int, typer.Option(help="Side of synthetic images.")] = 16,
        cache_dir: CacheDirOption = None,
        data_dir: Annotated[str | None, typer.Option(
            "--data-dir", help="Folder with MNIST IDX / CIFAR-10 batches.")] = None,
        seed: SeedOption = 0,
        workers: WorkersOption = 2,
        quick: QuickOption = False,
    ) -> None:
        """Two denoisers on disjoint training sets: when do they generate the same images?

        --quick: tiny networks, 8x8 images, 4 samples, N in 1,10,
        except for sizes given explicitly."""
        names = parse_choices("--datasets", datasets, DATASETS)
        if samples < 1:
            raise bad_option("--samples", f"must be >= 1, got {samples}")
        grid = parse_ints("--n-values", n_values) if n_values else None
        # each option changes only its own field of each data set's recipe
        changes = {"steps": steps, "width": width,
                   "arch": arch if arch != DEFAULT_CONFIG.arch else None}
        config = checked("--steps/--width/--arch", configs_with, names, changes,
                         QUICK_CONFIG if quick else None)
        pool = SYNTHETIC_POOL
        if quick:
            sizes = quick_sizes(ctx, quick, {"samples": 4, "size": 8})
            samples, size, pool = sizes["samples"], sizes["size"], 40
            grid = grid or [1, 10]
        out = out or default_out(COMMAND)
        cache = checked("--cache-dir", checkpoint_dir, out, cache_dir)
        workers = quick_sizes(ctx, quick, {"workers": 1})["workers"]   # --quick: serial
        with cli_executor(workers, None, None) as executor:
            checked("--n-values", run_generalization, out, datasets=names,
                    n_values=grid, config=config, n_samples=samples, size=size,
                    cache_dir=cache, data_dir=data_dir, seed=seed, pool=pool,
                    executor=executor)

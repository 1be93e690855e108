"""``geomem analytic-denoisers``: which closed-form denoiser does a trained network follow?

For each data set and N, network A of the image commands' disjoint-subset pair (trained on
S1, the same checkpoint folder as ``generalization``, ``gahb`` and ``image-dimensions``) is
compared with the analytic denoisers of `geomem.numerics.analytic_denoisers` fitted on the same
S1, and with network B (trained on the disjoint S2), on the same noisy inputs:

- ``held_out``: S2 images (never seen by A) plus noise sigma;
- ``training``: S1 images plus noise sigma (cycled when N < the batch);
- ``trajectory``: the states of A's own sampler run (the generalization sampler, seed fixed), at
  the step whose median effective noise is nearest each sigma; every model is told the state's
  effective noise ``|y - A(y)| / sqrt(d)``.

The measure is the per-noise-level r^2 of the papers that compare networks with analytic
models (Kamb & Ganguli 2024; Niedoba et al. 2024-25; Lukoianov et al. 2025):

    r^2 = 1 - sum_b |A(y_b) - M(y_b)|^2 / sum_b |A(y_b) - mean_b A(y_b)|^2,

over the batch and all pixels (1: the model reproduces the network; 0: no better than the
network's batch mean), with the per-pixel MSE between the two and each one's MSE to the clean
image beside it. At small sigma every denoiser is close to the identity and this r^2 is near 1
for any model that is, so the same r^2 is also computed on the residuals ``y - D(y)`` (the
predicted noise, sigma^2 times minus the score): ``r2_residual``, the one the figure shows and
the best model is chosen by. The Jacobian spectra (eigenvalues of the symmetrised dD/dy,
GAHB) of the network and of the best-matching analytic model are measured at one sigma on
held-out inputs.
N* of the seed-B test is read from a generalization ``summary.csv`` (``--generalization``).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from geomem.numerics.analytic_denoisers import (
    AnalyticDenoiser,
    EmpiricalPosteriorMean,
    EquivariantPatchPosteriorMean,
    GaussianPosteriorMean,
    MaskedPosteriorMean,
    WienerMaskedPosteriorMean,
    square_patch_masks,
)
from geomem.numerics.denoisers import denoiser_jacobian
from geomem.numerics.images import DATASETS
from geomem.numerics.sampler import sample

from ._analytic_plots import plot_patch_sizes, plot_r2, plot_spectra
from ._common import (
    bad_option,
    checked,
    checkpoint_dir,
    default_out,
    parse_choices,
    parse_floats,
    parse_ints,
)
from ._generalization_stats import crossover_n
from .generalization import SAMPLER
from .image_networks import (
    DATA_SEED,
    QUICK_CONFIG,
    SYNTHETIC_POOL,
    Recipe,
    config_for,
    plan_pairs,
    pretrain_networks,
    trained_pair,
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

__all__ = ["DEFAULT_SIGMAS", "PATCH_SIZES", "analytic_models", "r_squared",
           "register", "run_analytic_comparison"]

COMMAND = "analytic-denoisers"
RESULT_FORMAT = 2     # 2: r2_residual added
#: noise levels (per-pixel std, data in [0, 1]): the range of gahb, from the sampler's stop
#: (0.01 -> 0.02, the first level where every network beats the identity) to 0.8
DEFAULT_SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
#: patch sides of the local models (odd; 7 covers most of an 8 x 8 digit)
PATCH_SIZES = (3, 5, 7)
#: the Wiener locality mask keeps weights >= 10% of the row's largest (fixed before any run)
WIENER_THRESHOLD = 0.1
#: the low-rank Gaussian keeps the leading components holding this fraction of the variance
LOW_RANK_VARIANCE = 0.95
#: the noise level of the Jacobian spectra (mid-range: neither identity nor mean image)
SPECTRUM_SIGMA = 0.1
SPLITS = ("held_out", "training", "trajectory")


def r_squared(reference: np.ndarray, prediction: np.ndarray) -> float:
    """``1 - sum |ref - pred|^2 / sum |ref - mean_b ref|^2`` over a batch (B, ...); NaN when
    the reference does not vary over the batch."""
    ref = reference.reshape(len(reference), -1)
    res = np.sum((ref - prediction.reshape(len(ref), -1)) ** 2)
    tot = np.sum((ref - ref.mean(0)) ** 2)
    return float(1 - res / tot) if tot > 0 else float("nan")


def _low_rank(variances: np.ndarray) -> int:
    """Leading components holding LOW_RANK_VARIANCE of the variance (1 when there is none)."""
    var = np.sort(np.asarray(variances, dtype=float))[::-1]
    if var.sum() <= 0:
        return 1
    return int(np.searchsorted(np.cumsum(var) / var.sum(), LOW_RANK_VARIANCE) + 1)


def analytic_models(train: np.ndarray, patch_sizes: Sequence[int] = PATCH_SIZES
                    ) -> dict[str, AnalyticDenoiser]:
    """The analytic denoisers of training images (N, C, H, W), by name."""
    shape = train.shape[1:]
    full = GaussianPosteriorMean(train)
    rank = _low_rank(full.variances.cpu().numpy())    # the full model's PCA, not a second one
    models: dict[str, AnalyticDenoiser] = {
        "empirical": EmpiricalPosteriorMean(train),
        "gaussian": full,
        f"gaussian_rank{rank}": GaussianPosteriorMean(train, rank=rank),
        "wiener_local": WienerMaskedPosteriorMean(train, WIENER_THRESHOLD)}
    for p in patch_sizes:
        models[f"local_P{p}"] = MaskedPosteriorMean(train, square_patch_masks(shape, p,
                                                                              "truncate"))
        models[f"els_P{p}"] = EquivariantPatchPosteriorMean(train, p)
    return models


def _network(model: torch.nn.Module, y: np.ndarray) -> np.ndarray:
    param = next(model.parameters())
    with torch.no_grad():
        out = model(torch.as_tensor(y, dtype=param.dtype, device=param.device))
    return out.double().cpu().numpy()


class _Recorder(torch.nn.Module):
    """Wraps a denoiser and keeps every input the sampler gives it (one per step)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        self.inputs.append(y.detach().double().cpu().numpy())
        return self.model(y)


def _trajectory_states(model, shape, sigmas, seed) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(sigma level, states (B, C, H, W), per-image effective noise (B,)) of A's sampler run at
    the step whose median effective noise is nearest each level (levels the run never reaches
    are skipped)."""
    rec = _Recorder(model)
    res = sample(rec, shape, seed=seed, **SAMPLER)
    trace = res.sigma_trace                                       # (steps, B), NaN once frozen
    median = np.array([np.nanmedian(row) if np.isfinite(row).any() else np.nan
                       for row in trace])
    states = []
    for level in sigmas:
        if not np.isfinite(median).any() or level < np.nanmin(median) / 1.5 \
                or level > np.nanmax(median) * 1.5:
            continue
        step = int(np.nanargmin(np.abs(np.log(median / level))))
        alive = np.isfinite(trace[step])
        if alive.sum() >= 2:
            states.append((float(level), rec.inputs[step][alive], trace[step][alive]))
    return states


def _compare(net_a, net_b, models, clean, y, sigma) -> list[dict[str, Any]]:
    out_a, rows = _network(net_a, y), []
    outputs = {"network_B": _network(net_b, y)}
    outputs.update({name: m(y, sigma) for name, m in models.items()})
    d = out_a[0].size
    for name, out in outputs.items():
        rows.append({"model": name, "r2": r_squared(out_a, out),
                     "r2_residual": r_squared(y - out_a, y - out),
                     "mse_to_network": float(np.mean((out - out_a) ** 2)),
                     "model_mse_to_clean": (float(np.sum((out - clean) ** 2) / (len(y) * d))
                                            if clean is not None else float("nan")),
                     "network_mse_to_clean": (float(np.sum((out_a - clean) ** 2) / (len(y) * d))
                                              if clean is not None else float("nan"))})
    return rows


def _spectra(net_a, models, best: str, held_out: np.ndarray, rng) -> dict[str, list[float]]:
    """Sorted eigenvalues of the symmetrised Jacobians at SPECTRUM_SIGMA, per held-out image."""
    y = held_out + SPECTRUM_SIGMA * rng.standard_normal(held_out.shape)
    jac_net = denoiser_jacobian(net_a, y).numpy()
    jac_model = models[best].jacobian(y, SPECTRUM_SIGMA).numpy()
    result = {}
    for name, jac in (("network", jac_net), (best, jac_model)):
        sym = 0.5 * (jac + jac.transpose(0, 2, 1))
        result[name] = np.sort(np.linalg.eigvalsh(sym), axis=1)[:, ::-1].tolist()
    return result


def _measure(net_a, net_b, train, held_out, sigmas, patch_sizes, n_images, n_spectrum,
             seed) -> dict[str, Any]:
    models = analytic_models(train, patch_sizes)
    rng = np.random.default_rng(seed)
    rows, timings = [], {}
    clean_train = train[np.arange(n_images) % len(train)]
    for sigma in sigmas:
        for split, clean in (("held_out", held_out[:n_images]), ("training", clean_train)):
            y = clean + sigma * rng.standard_normal(clean.shape)
            t0 = time.perf_counter()
            rows += [dict(r, split=split, sigma=sigma, step=-1)
                     for r in _compare(net_a, net_b, models, clean, y, sigma)]
            timings[f"{split}_{sigma}"] = time.perf_counter() - t0
    for level, states, noise in _trajectory_states(net_a, (n_images, *train.shape[1:]),
                                                   sigmas, seed):
        rows += [dict(r, split="trajectory", sigma=level, step=-1)
                 for r in _compare(net_a, net_b, models, None, states, noise)]
    held = [r for r in rows if r["split"] == "held_out" and r["sigma"] == _nearest(
        sigmas, SPECTRUM_SIGMA) and r["model"] != "network_B"]
    best = max(held, key=lambda r: _finite(r["r2_residual"]))["model"]
    spectra = _spectra(net_a, models, best, held_out[:n_spectrum], rng)
    return {"rows": rows, "best_model_at_spectrum_sigma": best, "spectra": spectra,
            "seconds": timings}


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def _nearest(values: Sequence[float], target: float) -> float:
    return min(values, key=lambda v: abs(math.log(v / target)))


def read_n_star(summary_csv: Path) -> dict[str, float | None]:
    """N* per data set from a generalization ``summary.csv`` (median A-vs-B cosine against N,
    the last upward crossing of the threshold, as ``generalization`` computes it)."""
    by_name: dict[str, list[tuple[int, float]]] = {}
    with open(summary_csv, newline="") as fh:
        for r in csv.DictReader(fh):
            by_name.setdefault(r["dataset"], []).append((int(r["N"]),
                                                         float(r["median_ab_similarity"])))
    return {name: crossover_n([n for n, _ in sorted(v)], [m for _, m in sorted(v)])
            for name, v in by_name.items()}


def run_analytic_comparison(out: Path, *, datasets: Sequence[str] = ("digits",),
                            n_values: Sequence[int] | None = None,
                            sigmas: Sequence[float] = DEFAULT_SIGMAS,
                            patch_sizes: Sequence[int] = PATCH_SIZES,
                            config: Recipe = None, n_images: int = 32,
                            n_spectrum: int = 2, size: int = 16,
                            cache_dir: Path | None = None, seed: int = 0,
                            pool: int = SYNTHETIC_POOL, generalization: Path | None = None,
                            executor: Any = None) -> dict[str, Any]:
    """Train (or load) the networks, compare them with every analytic model, draw; returns the
    best model per data set, split, sigma and N."""
    n_star = read_n_star(generalization) if generalization is not None else {}
    run = RunOutput(out, COMMAND)
    cache_dir = checkpoint_dir(out, cache_dir)
    pools, jobs = plan_pairs(datasets, n_values, config, seed, size=size, pool=pool)
    pretrain_networks(cache_dir, jobs, executor)
    rows, spectra_rows, results = [], [], {}
    for name in datasets:
        images, pool_info, grid = pools[name]
        cfg = config_for(name, config)
        for n in progress(grid, f"analytic-denoisers {name}"):
            key = {"format": RESULT_FORMAT, "dataset": name, "n": n, "config": cfg.to_dict(),
                   "seed": seed, "sigmas": list(sigmas), "patch_sizes": list(patch_sizes),
                   "n_images": n_images, "n_spectrum": n_spectrum, "sampler": SAMPLER,
                   **pool_info}

            def compute(n=n, name=name, images=images, pool_info=pool_info, cfg=cfg):
                (net_a, net_b), (s1, s2) = trained_pair(cache_dir, name, images, n, cfg, seed,
                                                        pool_info)
                # held-out images for A: S2, topped up from beyond both subsets when N is small
                held = np.concatenate([s2, images[2 * n:]])[:n_images]
                return _measure(net_a, net_b, s1, held, sigmas, patch_sizes, n_images,
                                n_spectrum, seed)

            res = run.cached(key, compute)
            results[(name, n)] = res
            rows += [dict(r, dataset=name, N=n) for r in res["rows"]]
            for model, values in res["spectra"].items():
                for image, eig in enumerate(values):
                    spectra_rows += [{"dataset": name, "N": n, "sigma": SPECTRUM_SIGMA,
                                      "model": model, "image": image, "rank": k,
                                      "eigenvalue": float(v)} for k, v in enumerate(eig)]
    columns = ["dataset", "N", "split", "sigma", "model", "r2", "r2_residual", "mse_to_network",
               "model_mse_to_clean", "network_mse_to_clean"]
    run.write_csv("r2", [{c: r[c] for c in columns} for r in rows])
    run.write_csv("spectra", spectra_rows)
    best = _best_models(rows)
    plot_r2(run, rows, datasets, sigmas, n_star)
    plot_patch_sizes(run, rows, datasets, patch_sizes)
    plot_spectra(run, spectra_rows, datasets, results)
    run.write_record(
        {"datasets": list(datasets), "n_values": n_values, "sigmas": list(sigmas),
         "patch_sizes": list(patch_sizes), "n_images": n_images, "n_spectrum": n_spectrum,
         "size": size, "pool": pool, "sampler": SAMPLER, "cache_dir": str(cache_dir),
         "wiener_threshold": WIENER_THRESHOLD, "low_rank_variance": LOW_RANK_VARIANCE,
         "spectrum_sigma": SPECTRUM_SIGMA,
         "train": {name: config_for(name, config).to_dict() for name in datasets},
         "generalization_summary": str(generalization) if generalization else None},
        seeds={"train_init": [seed, seed + 1], "noise_and_sampler": seed, "data": DATA_SEED},
        extra={"n_star": n_star, "best_model": best,
               "best_model_at_spectrum_sigma": {f"{k[0]}/N={k[1]}":
                                                v["best_model_at_spectrum_sigma"]
                                                for k, v in results.items()}})
    return {"best_model": best, "n_star": n_star}


def _best_models(rows: list[dict[str, Any]]) -> dict[str, str]:
    """``"dataset/split/N/sigma" -> "model (r2_residual)"``: the analytic model closest to
    network A."""
    best: dict[str, tuple[float, str]] = {}
    for r in rows:
        if r["model"] == "network_B" or not math.isfinite(r["r2_residual"]):
            continue
        key = f"{r['dataset']}/{r['split']}/N={r['N']}/sigma={r['sigma']:g}"
        if key not in best or r["r2_residual"] > best[key][0]:
            best[key] = (r["r2_residual"], r["model"])
    return {k: f"{m} ({v:.3f})" for k, (v, m) in sorted(best.items())}


def register(app: typer.Typer) -> None:
    @app.command(COMMAND)
    def analytic_denoisers_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        datasets: Annotated[str, typer.Option(help=f"Comma-separated, from {DATASETS}.")
                            ] = "digits",
        n_values: Annotated[str | None, typer.Option(
            "--n-values", help="Comma-separated N (default 1,10,100,1000,max).")] = None,
        sigmas: Annotated[str, typer.Option(help="Comma-separated noise levels in (0, 10].")
                          ] = ",".join(f"{s:g}" for s in DEFAULT_SIGMAS),
        patch_sizes: Annotated[str, typer.Option(
            "--patch-sizes", help="Comma-separated odd patch sides of the local models.")
        ] = ",".join(map(str, PATCH_SIZES)),
        images: Annotated[int, typer.Option(help="Noisy images per split, N and sigma.")] = 32,
        size: Annotated[int, typer.Option(help="Side of synthetic images.")] = 16,
        generalization: Annotated[Path | None, typer.Option(
            "--generalization", help="A generalization summary.csv, to mark N* (optional).")
        ] = None,
        cache_dir: CacheDirOption = None,
        seed: SeedOption = 0,
        workers: WorkersOption = 2,
        quick: QuickOption = False,
    ) -> None:
        """Trained denoisers against closed-form ones: r^2 per model, N and sigma.

        --quick: tiny networks, 8x8 images, N in 1,10, two noise levels, patch side 3."""
        names = parse_choices("--datasets", datasets, DATASETS)
        sig = parse_floats("--sigmas", sigmas)
        if max(sig) > 10:
            raise bad_option("--sigmas", f"allowed 0 < sigma <= 10, got {sigmas!r}")
        patches = parse_ints("--patch-sizes", patch_sizes)
        if not all(p >= 1 and p % 2 == 1 for p in patches):
            raise bad_option("--patch-sizes", f"must be odd integers >= 1, got {patch_sizes!r}")
        if images < 2:
            raise bad_option("--images", f"must be >= 2, got {images}")
        if generalization is not None and not generalization.is_file():
            raise bad_option("--generalization", f"no such file: {generalization}")
        grid = parse_ints("--n-values", n_values) if n_values else None
        config, pool = None, SYNTHETIC_POOL
        if quick:
            sizes = quick_sizes(ctx, quick, {"images": 4, "size": 8, "sigmas": "0.1,0.4",
                                             "patch_sizes": "3"})
            images, size = sizes["images"], sizes["size"]
            sig = parse_floats("--sigmas", sizes["sigmas"])
            patches = parse_ints("--patch-sizes", sizes["patch_sizes"])
            config, pool, grid = QUICK_CONFIG, 40, grid or [1, 10]
        out = out or default_out(COMMAND)
        cache = checked("--cache-dir", checkpoint_dir, out, cache_dir)
        workers = quick_sizes(ctx, quick, {"workers": 1})["workers"]   # --quick: serial
        with cli_executor(workers, None, None) as executor:
            checked("--n-values", run_analytic_comparison, out, datasets=names,
                    n_values=grid, sigmas=sig, patch_sizes=patches, config=config,
                    n_images=images, size=size, cache_dir=cache, seed=seed, pool=pool,
                    generalization=generalization, executor=executor)

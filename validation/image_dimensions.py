"""``geomem image-dimensions``: spectral-gap dimension of trained image denoisers vs N (the
losing-dimensions Figure 6 analogue; THEORY sections 6 and 8).

The blind denoisers of ``geomem generalization`` (network A, trained on S1 of size N; same
checkpoint cache) give a score by Tweedie, ``s(y) = (D(y) - y) / sigma^2``, with Jacobian
``(J_D(y) - I) / sigma^2``. At noisy images ``y = x0 + sigma z`` (x0 not in S1) the exact
Jacobian (torch.func, float64; cheap for 8x8 digits, d = 64, and 16x16 disks, d = 256) is
decomposed; the singular values of the score Jacobian are small along the directions the
network keeps (tangent) and ~1/sigma^2 along those it removes. Two read-outs of the dimension:

- ``gap``: ``geomem.numerics.dimension.estimate_dimension`` on the score-Jacobian singular
  values (the spectral-gap / cliff rule);
- ``shrinkage``: the number of eigenvalues of the symmetrised ``J_D`` above 1/2 (directions
  kept more than removed), a transparent cross-check. Out-of-range eigenvalues (J is not
  exactly symmetric, nor a contraction) are counted as they fall: below 0 as removed, above 1
  as kept; the fraction outside [0, 1] and the Jacobian's relative asymmetry
  ``||J - J^T||_F / ||J||_F`` are reported beside every count.

Medians over the test points: the gap rule finds no cliff at some points (NaN). Each median
states how many points it rests on (``gap_n_finite`` of ``n_points``), and a median of fewer
than half of the points (``MIN_MEDIAN_FRACTION``) is not published (NaN).

Beside them: scikit-dimension (skdim, a core dependency) estimates (lPCA, TwoNN, MLE) on the
same N training images; below ``SKDIM_MIN_POINTS`` images they are not computed (NaN, and the
figure says so). Series without any finite value are left out of the figure's legend and
named in a note instead. Checkpoints: ``--cache-dir``, else ``$GEOMEM_CACHE``, else
``<out>/checkpoints`` (:func:`geomem.validation._common.checkpoint_dir`).

Disks are a 5-dimensional manifold, so the recovered dimension should approach 5 as N
grows (memorization: 0 kept directions at small N).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from geomem.numerics.denoiser_training import TrainConfig
from geomem.numerics.denoisers import denoiser_jacobian
from geomem.numerics.dimension import estimate_dimension

from ._common import (
    bad_option,
    checked,
    checkpoint_dir,
    default_out,
    parse_choices,
    parse_floats,
    parse_ints,
    pyplot,
)
from .image_networks import (
    DATA_SEED,
    QUICK_CONFIG,
    SYNTHETIC_POOL,
    Recipe,
    config_for,
    configs_with,
    plan_pairs,
    pretrain_networks,
    scale_down_note,
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

__all__ = ["SKDIM_ESTIMATORS", "register", "run_image_dimensions",
           "skdim_estimates", "spectral_dimensions"]

COMMAND = "image-dimensions"
RESULT_FORMAT = 2
IMAGE_DATASETS = ("digits", "disks")
#: an eigenvalue of the symmetrised denoiser Jacobian above this counts as a kept direction
SHRINKAGE_THRESHOLD = 0.5
#: a median over test points is published only when at least this fraction of them is finite
MIN_MEDIAN_FRACTION = 0.5
#: skdim needs this many points for its neighbourhood estimators (k-NN with k ~ 20)
SKDIM_MIN_POINTS = 25
SKDIM_ESTIMATORS = ("lPCA", "TwoNN", "MLE")
TRUE_DIMENSION = {"disks": 5}
#: spectral-gap read-off: the paper's cliff detector (THEORY 6), NaN where there is no cliff
GAP_METHOD = "cliff"


def spectral_dimensions(denoiser: torch.nn.Module, clean: np.ndarray, sigma: float,
                        seed: int = 0) -> dict[str, Any]:
    """Dimensions at noisy images ``clean + sigma z`` (clean: (P, C, H, W)); returns per point
    the gap dimension, the shrinkage count, tr J_D and the score-Jacobian singular values."""
    gen = torch.Generator().manual_seed(seed)
    clean_t = torch.as_tensor(clean, dtype=torch.float64)
    noisy = clean_t + sigma * torch.randn(clean_t.shape, generator=gen, dtype=torch.float64)
    jac = denoiser_jacobian(denoiser, noisy).numpy()                     # (P, d, d)
    d = jac.shape[-1]
    score_jac = (jac - np.eye(d)) / sigma ** 2
    sv = np.linalg.svd(score_jac, compute_uv=False)                      # descending
    shrink = np.linalg.eigvalsh(0.5 * (jac + jac.transpose(0, 2, 1)))
    asym = np.linalg.norm(jac - jac.transpose(0, 2, 1), axis=(1, 2)) / np.linalg.norm(
        jac, axis=(1, 2))
    return {"gap": [float(estimate_dimension(s, method=GAP_METHOD)) for s in sv],
            "shrinkage": (shrink > SHRINKAGE_THRESHOLD).sum(1).tolist(),
            "shrinkage_fraction_outside_01": ((shrink < 0) | (shrink > 1)).mean(1).tolist(),
            "relative_asymmetry": asym.tolist(),
            "trace": np.trace(jac, axis1=1, axis2=2).tolist(),
            "singular_values": (sv * sigma ** 2).tolist()}


def skdim_estimates(images: np.ndarray) -> dict[str, float]:
    """skdim intrinsic-dimension estimates of the flattened images (NaN below
    ``SKDIM_MIN_POINTS`` points, checked before skdim is imported, or when an estimator fails
    on degenerate data)."""
    flat = images.reshape(len(images), -1)
    out = {name: float("nan") for name in SKDIM_ESTIMATORS}
    if len(flat) < SKDIM_MIN_POINTS:
        return out
    import skdim

    for name in SKDIM_ESTIMATORS:
        try:
            out[name] = float(getattr(skdim.id, name)().fit(flat).dimension_)
        except (ValueError, np.linalg.LinAlgError):
            out[name] = float("nan")
    return out


def run_image_dimensions(out: Path, *, datasets: Sequence[str] = IMAGE_DATASETS,
                         n_values: Sequence[int] | None = None,
                         sigmas: Sequence[float] = (0.05, 0.1, 0.2), n_points: int = 8,
                         config: Recipe = None, size: int = 16,
                         cache_dir: Path | None = None, seed: int = 0,
                         pool: int = SYNTHETIC_POOL, executor: Any = None) -> dict[str, Any]:
    """Train/load (in parallel through ``executor`` when it has workers), compute (cached per
    data set, N, sigma), tabulate, draw and record."""
    run = RunOutput(out, COMMAND)
    cache_dir = checkpoint_dir(out, cache_dir)
    rows, sk_rows, spectra, summary = [], [], {}, {}
    pools, jobs = plan_pairs(datasets, n_values, config, seed, size=size, pool=pool,
                             reserved=n_points)
    pretrain_networks(cache_dir, jobs, executor)
    for name in datasets:
        images, pool_info, grid = pools[name]
        # evaluation points: the end of the pool, never in S1 = pool[:N] when N <= pool - P
        clean = images[-n_points:]
        for n in progress(grid, f"image-dimensions {name}"):
            per_sigma, sk = _measure(run, cache_dir, name, images, pool_info, n, sigmas, clean,
                                     config_for(name, config), seed)
            for sigma, res in zip(sigmas, per_sigma, strict=True):
                spectra[(name, n, sigma)] = np.asarray(res["singular_values"])
                for p in range(n_points):
                    rows.append({"dataset": name, "N": n, "sigma": sigma, "point": p,
                                 "gap_dimension": float(res["gap"][p]),  # 'nan' from JSON
                                 "shrinkage_dimension": res["shrinkage"][p],
                                 "shrinkage_fraction_outside_01": res.get(
                                     "shrinkage_fraction_outside_01", [np.nan] * n_points)[p],
                                 "relative_asymmetry": res.get(
                                     "relative_asymmetry", [np.nan] * n_points)[p],
                                 "trace_jacobian": res["trace"][p]})
            sk_rows.append({"dataset": name, "N": n, **{k: float(v) for k, v in sk.items()}})
        summary[name] = {f"sigma={s:g}": {str(n): _point_summary(
            [r for r in rows if r["dataset"] == name and r["N"] == n and r["sigma"] == s])
            for n in grid} for s in sigmas}
        summary[name]["skdim"] = {str(r["N"]): {k: r[k] for k in SKDIM_ESTIMATORS}
                                  for r in sk_rows if r["dataset"] == name}
    run.write_csv("dimensions", rows)
    run.write_csv("skdim", sk_rows)
    _plot(run, rows, sk_rows, spectra, datasets, sigmas)
    run.write_record(
        {"datasets": list(datasets), "n_values": n_values, "sigmas": list(sigmas),
         "n_points": n_points,
         "train": {name: config_for(name, config).to_dict() for name in datasets},
         "size": size, "pool": pool,
         "cache_dir": str(cache_dir), "shrinkage_threshold": SHRINKAGE_THRESHOLD,
         "skdim_min_points": SKDIM_MIN_POINTS,
         "jacobian": "exact (torch.func.jacrev, float64) at y = x0 + sigma z",
         "gap_estimator": f"geomem.numerics.dimension.estimate_dimension(method={GAP_METHOD!r})",
         "scale_down": scale_down_note({name: config_for(name, config) for name in datasets})},
        seeds={"noise": seed, "train_init": seed, "data": DATA_SEED},
        extra={"summary": summary, "true_dimension": TRUE_DIMENSION})
    return summary


def _measure(run: RunOutput, cache_dir: Path, name: str, images: np.ndarray,
             pool_info: dict[str, Any], n: int, sigmas: Sequence[float], clean: np.ndarray,
             config: TrainConfig, seed: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Cached spectral dimensions at every sigma (network A trained on S1 of size n, loaded
    only when some sigma is not cached yet) and skdim estimates of S1."""
    models: list = []
    results = []
    for sigma in sigmas:
        key = {"format": RESULT_FORMAT, "dataset": name, "n": n, "sigma": sigma,
               "n_points": len(clean), "config": config.to_dict(), "seed": seed, **pool_info}

        def compute(sigma=sigma):
            if not models:
                models.extend(trained_pair(cache_dir, name, images, n, config, seed,
                                           pool_info)[0])
            return spectral_dimensions(models[0], clean, sigma, seed)

        results.append(run.cached(key, compute))
    sk = run.cached({"format": RESULT_FORMAT, "skdim": name, "n": n, **pool_info},
                    lambda: skdim_estimates(images[:n]))
    return results, sk


def _median(values, min_fraction: float = MIN_MEDIAN_FRACTION) -> float:
    """Median of the finite values; NaN (without a warning) when fewer than ``min_fraction`` of
    the values are finite (a median of a few lucky points is not published)."""
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    if finite.size == 0 or finite.size < min_fraction * v.size:
        return float("nan")
    return float(np.median(finite))


def _point_summary(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the test points of one (data set, N, sigma), with the counts they rest on
    and the Jacobian's asymmetry / out-of-range shrinkage beside them."""
    gaps = np.asarray([r["gap_dimension"] for r in points], dtype=float)
    return {"gap_median": _median(gaps), "gap_n_finite": int(np.isfinite(gaps).sum()),
            "n_points": len(points),
            "shrinkage_median": float(np.median([r["shrinkage_dimension"] for r in points])),
            "shrinkage_fraction_outside_01": _median(
                [r["shrinkage_fraction_outside_01"] for r in points]),
            "relative_asymmetry_median": _median([r["relative_asymmetry"] for r in points])}


def _plot(run: RunOutput, rows, sk_rows, spectra, datasets, sigmas) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, len(datasets), figsize=(5 * len(datasets), 7.5), squeeze=False)
    for c, name in enumerate(datasets):
        ax = axes[0, c]
        grid = sorted({r["N"] for r in rows if r["dataset"] == name})
        missing = []
        for i, s in enumerate(sigmas):
            for kind, style in (("gap_dimension", "o-"), ("shrinkage_dimension", "s--")):
                med = [_median([r[kind] for r in rows if r["dataset"] == name and r["N"] == n
                                and r["sigma"] == s]) for n in grid]
                label = f"{kind.split('_')[0]}, sigma={s:g}"
                if not np.any(np.isfinite(med)):
                    missing.append(f"{label} (no spectral cliff found)")
                    continue
                ax.semilogx(grid, med, style, color=f"C{i}", label=label)
        sk_n = [r["N"] for r in sk_rows if r["dataset"] == name]
        for j, est in enumerate(SKDIM_ESTIMATORS):
            vals = np.array([r[est] for r in sk_rows if r["dataset"] == name], dtype=float)
            if not np.any(np.isfinite(vals)):
                continue
            ax.semilogx(sk_n, vals, "x:", color=f"C{len(sigmas) + j}",
                        label=f"skdim {est} (training images)")
        if sk_n and max(sk_n) < SKDIM_MIN_POINTS:
            missing.append(f"skdim (needs N >= {SKDIM_MIN_POINTS})")
        ax.set_title(name + ("".join(f"\nnot drawn, no data: {m}" for m in missing)),
                     fontsize=9 if missing else 11)
        if name in TRUE_DIMENSION:
            ax.axhline(TRUE_DIMENSION[name], color="k", lw=0.8, ls=":", label="true dimension")
        ax.set_xlabel("N (training images)")
        ax.set_ylabel("dimension (median over points)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="lower right")
        ax = axes[1, c]
        s = sigmas[len(sigmas) // 2]
        for i, n in enumerate(grid):
            sv = np.median(spectra[(name, n, s)], axis=0)
            ax.semilogy(np.arange(1, sv.size + 1), np.maximum(sv, 1e-6), color=plt.cm.viridis(
                i / max(len(grid) - 1, 1)), label=f"N={n}")
        ax.set_xlabel("index (descending)")
        ax.set_ylabel("sigma^2 x singular value of score Jacobian")
        ax.set_title(f"{name}: score-Jacobian spectrum, sigma={s:g}\n(1 = removed direction, "
                     "0 = kept)", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("Spectral-gap dimension of trained blind denoisers vs N (o: gap estimator, "
                 "s: shrinkage > 1/2 count, x: skdim on training images)", fontsize=10)
    fig.tight_layout()
    run.save_figure(fig, "image_dimensions")
    plt.close(fig)


def register(app: typer.Typer) -> None:
    @app.command("image-dimensions")
    def image_dimensions_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        datasets: Annotated[str, typer.Option(help=f"Comma-separated, from {IMAGE_DATASETS}.")
                            ] = "digits,disks",
        n_values: Annotated[str | None, typer.Option(
            "--n-values", help="Comma-separated N (default 1,10,100,1000,max).")] = None,
        sigmas: Annotated[str, typer.Option(help="Noise levels (images in [0,1]).")
                          ] = "0.05,0.1,0.2",
        points: Annotated[int, typer.Option(help="Noisy evaluation images per N, sigma.")] = 8,
        steps: Annotated[int | None, typer.Option(
            help="Adam steps per network (default: as `generalization`).")] = None,
        cache_dir: CacheDirOption = None,
        seed: SeedOption = 0,
        workers: WorkersOption = 2,
        quick: QuickOption = False,
    ) -> None:
        """Spectral-gap dimension of trained denoisers vs N on digits and disks (true dim 5).

        --quick: tiny networks, 8x8 images, 2 points, N in 1,10, two
        sigmas, except for --n-values/--sigmas/--points/--steps given."""
        names = parse_choices("--datasets", datasets, IMAGE_DATASETS)
        if points < 1:
            raise bad_option("--points", f"must be >= 1, got {points}")
        sig = parse_floats("--sigmas", sigmas)
        grid = parse_ints("--n-values", n_values) if n_values else None
        config = checked("--steps", configs_with, names, {"steps": steps},
                         QUICK_CONFIG if quick else None)
        size, pool = 16, SYNTHETIC_POOL
        if quick:
            sizes = quick_sizes(ctx, quick, {"points": 2, "sigmas": None})
            size, pool, points = 8, 40, sizes["points"]
            grid, sig = grid or [1, 10], sig if sizes["sigmas"] is not None else sig[:2]
        out = out or default_out(COMMAND)
        cache = checked("--cache-dir", checkpoint_dir, out, cache_dir)
        workers = quick_sizes(ctx, quick, {"workers": 1})["workers"]   # --quick: serial
        with cli_executor(workers, None, None) as executor:
            checked("--n-values", run_image_dimensions, out, datasets=names,
                    n_values=grid, sigmas=sig, n_points=points, config=config, size=size,
                    cache_dir=cache, seed=seed, pool=pool, executor=executor)

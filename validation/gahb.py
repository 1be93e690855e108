"""``geomem gahb``: geometry-adaptive harmonic bases of trained blind denoisers (THEORY 8).

For each data set a blind bias-free denoiser is trained (or loaded from the checkpoint folder,
``--cache-dir``, else ``$GEOMEM_CACHE``, else ``<out>/checkpoints``, which
``geomem generalization`` can share) on N images (digits: network A at the largest N of
``generalization``; C^alpha images, alpha in {1, 2, 3}: N = ``--n-train`` images).

At noisy images ``y = x + sigma z`` (x held out) it measures
- the exact Jacobian ``J = dD/dy`` (float64, torch.func): eigenvalues of its symmetric part
  (the shrinkage spectrum lam_k), the effective dimensionality ``tr J``, leading eigenvectors
  shown as images;
- Stein's identity: ``MSE = E||y - D(y)||^2/d + 2 sigma^2 E tr J/d - sigma^2`` (per pixel)
  against the measured MSE ``E||D(y) - x||^2/d`` on the same images;
- MSE vs sigma on more held-out images, beside the identity (sigma^2), the Wiener (best
  affine) denoiser and the best linear one (no offset: what a bias-free network, which cannot
  add the mean image, competes with), both fitted on the same training images and told sigma
  (:class:`~geomem.numerics.linear_denoiser.WienerDenoiser`); for C^alpha images the slope of
  log MSE vs log sigma, fitted over ``SLOPE_SIGMA_RANGE`` only (fixed here, before any result
  was looked at), is compared with the optimal rate ``2 alpha / (alpha + 1)``.

Honesty about the shrinkage spectrum: the eigenvalues of the symmetrised Jacobian are shrinkage
factors in [0, 1] only when J is symmetric and the denoiser is a contraction. Every result
carries the Jacobian's relative asymmetry ``||J - J^T||_F / ||J||_F`` and the fraction of
eigenvalues outside [0, 1] (with the smallest one); out-of-range values are kept as they are
(not clipped) in ``shrinkage_spectra.csv``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from geomem.numerics.denoiser_training import TrainConfig
from geomem.numerics.denoisers import denoiser_jacobian
from geomem.numerics.linear_denoiser import WienerDenoiser

from ._common import bad_option, checked, checkpoint_dir, default_out, parse_choices, pyplot
from .image_networks import (
    DATA_SEED,
    DEFAULT_CONFIG,
    QUICK_CONFIG,
    SYNTHETIC_POOL,
    config_for,
    dataset_pool,
    default_n_values,
    pair_jobs,
    pool_record,
    pretrain_networks,
    scale_down_note,
    train_with_progress,
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

__all__ = ["GAHB_DATASETS", "GAHB_STEPS", "fit_log_slope", "gahb_config", "gahb_measurements",
           "optimal_rate", "register", "run_gahb"]

COMMAND = "gahb"
RESULT_FORMAT = 3
#: sigma range of the C^alpha slope fit (inclusive), fixed before looking at the results: above
#: the pixel scale (at sigma -> 0 every denoiser tends to the identity, slope 2) and below the
#: image contrast (at sigma -> 1 the MSE saturates at the image variance, slope 0)
SLOPE_SIGMA_RANGE = (0.02, 0.32)
GAHB_DATASETS = ("digits", "calpha1", "calpha2", "calpha3")
#: noise levels measured: the issue-16 range [0.01, 1] in octaves (five of them inside
#: SLOPE_SIGMA_RANGE)
DEFAULT_SIGMAS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0)
#: Adam steps of the GAHB networks: the image commands' recipe (UNet, `image_networks`) trained
#: 3x longer than `generalization`'s 16 networks can afford -- GAHB's claims (optimal rates,
#: beating the linear denoisers) need near-converged networks, and 4 of them fit 20 min on two
#: workers (docs/images.md); these checkpoints are GAHB's own, keyed by their steps
GAHB_STEPS = 6000
#: eigenvectors shown per data set
N_EIGENVECTORS = 8


def optimal_rate(alpha: float) -> float:
    """Exponent of the optimal denoising MSE ~ sigma^(2 alpha / (alpha + 1)) on C^alpha images."""
    return 2 * alpha / (alpha + 1)


def fit_log_slope(sigmas: Sequence[float], mse: Sequence[float],
                  sigma_range: tuple[float, float] | None = None) -> float:
    """Least-squares slope of log MSE against log sigma, over the points with sigma in
    ``sigma_range`` (inclusive; None: all)."""
    sigmas, mse = np.asarray(sigmas, float), np.asarray(mse, float)
    if sigma_range is not None and sigmas.shape == mse.shape:
        keep = (sigmas >= sigma_range[0] * (1 - 1e-12)) & (sigmas <= sigma_range[1] * (1 + 1e-12))
        sigmas, mse = sigmas[keep], mse[keep]
    x, y = np.log(sigmas), np.log(mse)
    if x.size < 2 or x.shape != y.shape:
        raise ValueError(f"need >= 2 matching points, got {x.shape}, {y.shape}")
    return float(np.polyfit(x, y, 1)[0])


def gahb_measurements(denoiser: torch.nn.Module, clean: np.ndarray, sigma: float,
                      n_jacobian: int, seed: int = 0,
                      wiener: WienerDenoiser | None = None,
                      linear: WienerDenoiser | None = None) -> dict[str, Any]:
    """MSE on all ``clean`` images (P, C, H, W) at noise ``sigma`` (and of the references
    ``wiener``, affine, and ``linear``, no offset, on the same noisy images); Jacobian
    spectrum, trace and Stein's estimate on the first ``n_jacobian`` of them (all per pixel)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(clean, dtype=torch.float64)
    y = x + sigma * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    model = denoiser.to(torch.float32)
    with torch.no_grad():
        den = model(y.float()).double()
    d = x[0].numel()
    mse = ((den - x) ** 2).reshape(len(x), -1).sum(1) / d
    jac = denoiser_jacobian(denoiser, y[:n_jacobian]).numpy()
    lam, vecs = np.linalg.eigh(0.5 * (jac + jac.transpose(0, 2, 1)))
    trace = np.trace(jac, axis1=1, axis2=2)
    residual = ((y[:n_jacobian] - den[:n_jacobian]) ** 2).reshape(n_jacobian, -1).sum(1).numpy()
    stein = residual / d + 2 * sigma ** 2 * trace / d - sigma ** 2
    asym = np.linalg.norm(jac - jac.transpose(0, 2, 1), axis=(1, 2)) / np.linalg.norm(
        jac, axis=(1, 2))
    mse_wiener, mse_linear = (
        (((ref(y.numpy(), sigma) - clean) ** 2).reshape(len(x), -1).mean(1).tolist()
         if ref is not None else [float("nan")] * len(x)) for ref in (wiener, linear))
    return {"mse": mse.numpy().tolist(), "mse_wiener": mse_wiener, "mse_linear": mse_linear,
            "mse_jacobian_points": mse[:n_jacobian].numpy().tolist(),
            "stein_mse": stein.tolist(), "trace": trace.tolist(),
            "shrinkage": lam[:, ::-1].tolist(), "relative_asymmetry": asym.tolist(),
            "eigenvectors": vecs[0][:, ::-1][:, :N_EIGENVECTORS].T.tolist()}


def gahb_config(name: str, config: TrainConfig | None = None,
                steps: int | None = None) -> TrainConfig:
    """``config`` when given, else the image commands' default for ``name`` trained ``steps``
    (default ``GAHB_STEPS``) Adam steps."""
    if config is not None:
        return config
    return dataclasses.replace(config_for(name), steps=steps or GAHB_STEPS)


def run_gahb(out: Path, *, datasets: Sequence[str] = GAHB_DATASETS,
             sigmas: Sequence[float] = DEFAULT_SIGMAS,
             n_train: int = 1000, n_test: int = 64, n_jacobian: int = 8,
             digits_n: int | None = None,
             config: TrainConfig | None = None, size: int = 16, cache_dir: Path | None = None,
             seed: int = 0, pool: int = SYNTHETIC_POOL, executor: Any = None,
             steps: int | None = None) -> dict[str, Any]:
    """Train/load (in parallel through ``executor`` when it has workers), measure (cached per
    data set and sigma), tabulate, draw, record. Digits use network A of ``generalization``
    at N = ``digits_n`` (default: its largest N) trained ``steps`` (default ``GAHB_STEPS``)
    with the commands' recipe (``config``, when given, replaces the recipe and the steps)."""
    run = RunOutput(out, COMMAND)
    cache_dir = checkpoint_dir(out, cache_dir)
    results, rows, spec_rows, summary = {}, [], [], {}
    pools, jobs = {}, []
    for name in datasets:
        images = dataset_pool(name, size=size, pool=pool)
        pool_info = pool_record(name, images, size)
        if name == "digits":     # network A of `generalization`'s largest N (same subset S1)
            n = digits_n if digits_n is not None else default_n_values(len(images))[-1]
        else:
            n = min(n_train, len(images) // 2)
        pools[name] = images, pool_info, n
        jobs += pair_jobs(name, [n], gahb_config(name, config, steps), seed, size=size,
                          data_dir=None, pool_request=pool, pool_info=pool_info, subsets=(0,))
    pretrain_networks(cache_dir, jobs, executor)
    for name in progress(datasets, "gahb datasets"):
        images, pool_info, n = pools[name]
        clean = images[-n_test:]                       # held out: S1 = images[:n], n <= pool/2
        cfg = gahb_config(name, config, steps)
        wiener = WienerDenoiser(images[:n])             # same training images as the network
        linear = WienerDenoiser(images[:n], affine=False)
        for sigma in sigmas:
            key = {"format": RESULT_FORMAT, "dataset": name, "n": n, "sigma": sigma,
                   "n_test": n_test, "n_jacobian": n_jacobian, "config": cfg.to_dict(),
                   "seed": seed, **pool_info}

            def compute(n=n, sigma=sigma, images=images, name=name, pool_info=pool_info,
                        clean=clean, cfg=cfg, wiener=wiener, linear=linear):
                model = train_with_progress(cache_dir, name, images[:n], 0, cfg, seed, pool_info)
                return gahb_measurements(model, clean, sigma, n_jacobian, seed, wiener, linear)

            res = run.cached(key, compute)
            results[(name, sigma)] = res
            lam = np.asarray(res["shrinkage"], dtype=float)
            rows.append({"dataset": name, "N": n, "sigma": sigma,
                         "mse": float(np.mean(res["mse"])),
                         "mse_identity": sigma ** 2,
                         "mse_wiener": float(np.mean(res["mse_wiener"])),
                         "mse_linear": float(np.mean(res["mse_linear"])),
                         "mse_jacobian_points": float(np.mean(res["mse_jacobian_points"])),
                         "stein_mse": float(np.mean(res["stein_mse"])),
                         "trace_jacobian": float(np.mean(res["trace"])),
                         "relative_asymmetry": float(np.mean(res["relative_asymmetry"])),
                         "shrinkage_fraction_outside_01": float(np.mean((lam < 0) | (lam > 1))),
                         "shrinkage_min": float(lam.min()), "shrinkage_max": float(lam.max()),
                         "n_jacobian_points": len(lam)})
            for p, lam in enumerate(res["shrinkage"]):
                spec_rows += [{"dataset": name, "sigma": sigma, "point": p, "k": k, "lambda": v}
                              for k, v in enumerate(lam)]
        mine = [r for r in rows if r["dataset"] == name]
        in_range = [r["sigma"] for r in mine
                    if SLOPE_SIGMA_RANGE[0] <= r["sigma"] <= SLOPE_SIGMA_RANGE[1]]
        slope = (fit_log_slope([r["sigma"] for r in mine], [r["mse"] for r in mine],
                               SLOPE_SIGMA_RANGE) if len(in_range) >= 2 else float("nan"))
        asym = [a for s in sigmas for a in results[(name, s)]["relative_asymmetry"]]
        summary[name] = {"N": n, "mse_slope": slope, "slope_sigma_range": list(SLOPE_SIGMA_RANGE),
                         "slope_sigmas": in_range,
                         "beats_identity": all(r["mse"] < r["mse_identity"] for r in mine),
                         "beats_wiener": all(r["mse"] < r["mse_wiener"] for r in mine),
                         "beats_linear": all(r["mse"] < r["mse_linear"] for r in mine),
                         "sigmas_beating_wiener": [r["sigma"] for r in mine
                                                   if r["mse"] < r["mse_wiener"]],
                         "relative_asymmetry_median": float(np.median(asym)),
                         "relative_asymmetry_max": float(np.max(asym)),
                         "shrinkage_fraction_outside_01": float(np.mean(
                             [r["shrinkage_fraction_outside_01"] for r in mine])),
                         "shrinkage_min": float(min(r["shrinkage_min"] for r in mine)),
                         "stein_relative_error": float(np.max(
                             [abs(r["stein_mse"] / r["mse_jacobian_points"] - 1) for r in mine]))}
        summary[name]["training"] = training_record(cache_dir, name, n, 0, cfg, seed, pool_info)
        if name.startswith("calpha"):
            summary[name]["alpha"] = float(name[-1])
            summary[name]["optimal_slope"] = optimal_rate(float(name[-1]))
    run.write_csv("gahb", rows)
    run.write_csv("shrinkage_spectra", spec_rows)
    _plot(run, results, rows, summary, datasets, sigmas)
    run.write_record(
        {"datasets": list(datasets), "sigmas": list(sigmas), "n_train": n_train,
         "digits_n": digits_n,
         "n_test": n_test, "n_jacobian": n_jacobian,
         "train": {name: gahb_config(name, config, steps).to_dict() for name in datasets},
         "size": size,
         "pool": pool, "cache_dir": str(cache_dir),
         "scale_down": scale_down_note({name: gahb_config(name, config, steps)
                                        for name in datasets})},
        seeds={"noise": seed, "train_init": seed, "data": DATA_SEED}, extra={"summary": summary})
    return summary


def _plot(run: RunOutput, results, rows, summary, datasets, sigmas) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    for i, name in enumerate(datasets):
        mine = [r for r in rows if r["dataset"] == name]
        sig = np.array([r["sigma"] for r in mine])
        mse = np.array([r["mse"] for r in mine])
        label = f"{name}: slope {summary[name]['mse_slope']:.2f}"
        if "optimal_slope" in summary[name]:
            label += f" (optimal {summary[name]['optimal_slope']:.2f})"
            axes[0, 0].loglog(sig, mse[0] * (sig / sig[0]) ** summary[name]["optimal_slope"],
                              ":", color=f"C{i}")
        axes[0, 0].loglog(sig, mse, "o-", color=f"C{i}", label=label)
        axes[0, 0].loglog(sig, [r["mse_wiener"] for r in mine], "x--", color=f"C{i}", lw=0.8,
                          label=f"{name}: Wiener (affine, told sigma)")
        axes[0, 0].loglog(sig, [r["mse_linear"] for r in mine], "+:", color=f"C{i}", lw=0.6,
                          label=f"{name}: best linear, no offset (told sigma)")
        axes[0, 1].loglog(sig, [r["trace_jacobian"] for r in mine], "o-", color=f"C{i}",
                          label=name)
        axes[1, 0].loglog([r["mse_jacobian_points"] for r in mine],
                          [r["stein_mse"] for r in mine], "o", color=f"C{i}", label=name)
        mid = sigmas[len(sigmas) // 2]
        lam = np.mean(results[(name, mid)]["shrinkage"], axis=0)
        axes[1, 1].plot(np.arange(1, lam.size + 1), lam, color=f"C{i}",
                        label=f"{name}: asym {summary[name]['relative_asymmetry_median']:.2f}, "
                              f"{100 * summary[name]['shrinkage_fraction_outside_01']:.0f}% "
                              f"outside [0,1]")
    axes[0, 0].loglog(sigmas, np.square(sigmas), "k--", lw=0.8, label="identity (sigma^2)")
    axes[0, 0].set(xlabel="sigma", ylabel="MSE per pixel",
                   title=f"Denoising MSE vs sigma (dotted: optimal C^alpha rate; slope fit "
                         f"over sigma in [{SLOPE_SIGMA_RANGE[0]:g}, {SLOPE_SIGMA_RANGE[1]:g}])")
    axes[0, 1].set(xlabel="sigma", ylabel="tr dD/dy", title="Effective dimensionality")
    lims = [min(r["mse_jacobian_points"] for r in rows), max(r["mse_jacobian_points"]
                                                             for r in rows)]
    axes[1, 0].plot(lims, lims, "k--", lw=0.8)
    axes[1, 0].set(xlabel="measured MSE", ylabel="Stein estimate",
                   title="Stein's identity (same noisy images)")
    axes[1, 1].set(xlabel="k", ylabel="lambda_k", xscale="log",
                   title=f"Shrinkage spectrum (sym. Jacobian eigenvalues), sigma={mid:g}\n"
                         f"asym = median ||J - J^T|| / ||J||")
    for ax in axes.ravel():
        ax.legend(fontsize=7)
    fig.tight_layout()
    run.save_figure(fig, "gahb")
    plt.close(fig)
    # leading eigenvectors (first test image) at the smallest and largest sigma
    picks = [sigmas[0], sigmas[-1]]
    fig, axes = plt.subplots(len(datasets) * 2, N_EIGENVECTORS,
                             figsize=(1.2 * N_EIGENVECTORS, 1.3 * 2 * len(datasets)),
                             squeeze=False)
    for i, name in enumerate(datasets):
        for j, s in enumerate(picks):
            vecs = np.asarray(results[(name, s)]["eigenvectors"])
            side = int(round(np.sqrt(vecs.shape[1])))
            lam = results[(name, s)]["shrinkage"][0]
            for k in range(N_EIGENVECTORS):
                ax = axes[2 * i + j, k]
                v = vecs[k].reshape(side, side)
                ax.imshow(v, cmap="RdBu_r", vmin=-np.abs(v).max(), vmax=np.abs(v).max())
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel(f"lam={lam[k]:.2f}", fontsize=6)
            axes[2 * i + j, 0].set_ylabel(f"{name}\nsigma={s:g}", fontsize=7)
    fig.suptitle("Leading eigenvectors of the denoiser Jacobian (GAHB), first test image",
                 fontsize=9)
    fig.tight_layout()
    run.save_figure(fig, "gahb_eigenvectors")
    plt.close(fig)


def register(app: typer.Typer) -> None:
    @app.command("gahb")
    def gahb_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        datasets: Annotated[str, typer.Option(help=f"Comma-separated, from {GAHB_DATASETS}.")
                            ] = ",".join(GAHB_DATASETS),
        n_train: Annotated[int, typer.Option("--n-train", help="Training images (C^alpha).")
                           ] = 1000,
        steps: Annotated[int | None, typer.Option(
            help=f"Adam steps per network (default {GAHB_STEPS}).")] = None,
        size: Annotated[int, typer.Option(
            help="Side of the C^alpha images (a multiple of 4, 8..64; digits stay 8x8).")] = 16,
        cache_dir: CacheDirOption = None,
        seed: SeedOption = 0,
        workers: WorkersOption = 2,
        quick: QuickOption = False,
    ) -> None:
        """Jacobian eigenbases, Stein's identity and C^alpha MSE rates of trained denoisers."""
        names = parse_choices("--datasets", datasets, GAHB_DATASETS)
        if n_train < 1:
            raise bad_option("--n-train", f"must be >= 1, got {n_train}")
        if steps is not None:
            checked("--steps", dataclasses.replace, DEFAULT_CONFIG, steps=steps)
        # the 3-level UNet halves the side twice; 64 keeps one Jacobian (d x d) under 200 MB
        if not (8 <= size <= 64 and size % 4 == 0):
            raise bad_option("--size", f"must be a multiple of 4 in 8..64, got {size}")
        config: TrainConfig | None = None
        kwargs: dict[str, Any] = {"size": size}
        if quick:   # the quick network, trained --steps when given
            config = dataclasses.replace(QUICK_CONFIG, steps=steps or QUICK_CONFIG.steps)
            kwargs = {"sigmas": (0.05, 0.2), "n_test": 4, "n_jacobian": 2,
                      "size": quick_sizes(ctx, quick, {"size": 8})["size"],
                      "pool": 40, "digits_n": 10}
            n_train = quick_sizes(ctx, quick, {"n_train": 10})["n_train"]
        out = out or default_out(COMMAND)
        cache = checked("--cache-dir", checkpoint_dir, out, cache_dir)
        workers = quick_sizes(ctx, quick, {"workers": 1})["workers"]   # --quick: serial
        with cli_executor(workers, None, None) as executor:
            run_gahb(out, datasets=names, n_train=n_train, config=config, steps=steps,
                     cache_dir=cache, seed=seed, executor=executor, **kwargs)

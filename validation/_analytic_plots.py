"""Figures of ``geomem analytic-denoisers``: r^2 against N, best patch size against sigma, and the
Jacobian spectra of the network beside its best-matching analytic model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._common import pyplot

__all__ = ["family", "plot_patch_sizes", "plot_r2", "plot_spectra"]

#: model families drawn as one line each (patch models: the best patch size at each point)
FAMILIES = ("empirical", "gaussian", "gaussian_lowrank", "wiener_local", "local", "els",
            "network_B")
COLOURS = dict(zip(FAMILIES, ("C3", "C0", "C9", "C4", "C1", "C2", "k"), strict=True))
SPLIT_TITLES = {"held_out": "held-out + noise", "training": "training + noise",
                "trajectory": "A's sampler states"}
R2_FLOOR = -0.5    # r^2 below this is drawn at the floor (the model is far from the network)
#: the r^2 drawn: on residuals y - D(y) (output r^2 is ~1 for every near-identity model)
METRIC = "r2_residual"


def family(model: str) -> str:
    """``local_P5`` -> ``local``, ``gaussian_rank12`` -> ``gaussian_lowrank``, else itself."""
    if model.startswith("gaussian_rank"):
        return "gaussian_lowrank"
    return model.split("_P")[0] if "_P" in model else model


def _best_by_family(rows: list[dict[str, Any]]) -> dict[tuple, float]:
    best: dict[tuple, float] = {}
    for r in rows:
        if not math.isfinite(r[METRIC]):
            continue
        key = (r["dataset"], r["split"], r["sigma"], family(r["model"]), r["N"])
        best[key] = max(best.get(key, -math.inf), r[METRIC])
    return best


def plot_r2(run, rows: list[dict[str, Any]], datasets: Sequence[str], sigmas: Sequence[float],
            n_star: dict[str, float | None]) -> None:
    plt = pyplot()
    best = _best_by_family(rows)
    panels = [(name, split) for name in datasets for split in SPLIT_TITLES]
    fig, axes = plt.subplots(len(panels), len(sigmas), squeeze=False,
                             figsize=(2.6 * len(sigmas), 2.3 * len(panels)), sharex=True,
                             sharey=True)
    for i, (name, split) in enumerate(panels):
        for j, sigma in enumerate(sigmas):
            ax = axes[i, j]
            for fam in FAMILIES:
                pts = sorted((k[4], v) for k, v in best.items()
                             if k[:4] == (name, split, sigma, fam))
                if pts:
                    ax.plot([p[0] for p in pts], [max(p[1], R2_FLOOR) for p in pts], marker="o",
                            ms=3, lw=1.2, color=COLOURS[fam], label=fam,
                            ls="--" if fam == "network_B" else "-")
            if n_star.get(name):
                ax.axvline(n_star[name], color="grey", ls=":", lw=1)
            ax.set_xscale("log")
            ax.set_ylim(R2_FLOOR - 0.05, 1.05)
            ax.set_title(f"{name}, {SPLIT_TITLES[split]}\nsigma = {sigma:g}", fontsize=8)
            if j == 0:
                ax.set_ylabel("residual r^2 to network A")
            if i == len(panels) - 1:
                ax.set_xlabel("N")
    axes[0, 0].legend(fontsize=6)
    marked = ", ".join(f"{k} {v:.0f}" for k, v in n_star.items() if v and k in datasets)
    fig.suptitle("Which analytic denoiser does network A follow? (local, els: best patch side; "
                 f"dotted: seed-B N* {marked or 'not given'}; r^2 < {R2_FLOOR} at the floor)",
                 fontsize=9)
    fig.tight_layout()
    run.save_figure(fig, "analytic_r2")
    plt.close(fig)


def plot_patch_sizes(run, rows: list[dict[str, Any]], datasets: Sequence[str],
                     patch_sizes: Sequence[int]) -> None:
    """Best patch side (highest residual r^2 on held-out inputs) against sigma, per N."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2 * len(datasets), squeeze=False,
                             figsize=(4.2 * 2 * len(datasets), 3.2))
    for i, name in enumerate(datasets):
        for j, fam in enumerate(("local", "els")):
            ax = axes[0, 2 * i + j]
            mine = [r for r in rows if r["dataset"] == name and r["split"] == "held_out"
                    and family(r["model"]) == fam and math.isfinite(r[METRIC])]
            for k, n in enumerate(sorted({r["N"] for r in mine})):
                by_sigma: dict[float, tuple[float, int]] = {}
                for r in mine:
                    if r["N"] == n:
                        p = int(r["model"].split("_P")[1])
                        if r["sigma"] not in by_sigma or r[METRIC] > by_sigma[r["sigma"]][0]:
                            by_sigma[r["sigma"]] = (r[METRIC], p)
                pts = sorted(by_sigma.items())
                ax.plot([s for s, _ in pts], [v[1] + 0.08 * (k - 1) for _, v in pts], "o-",
                        ms=4, label=f"N = {n}")
            ax.set_xscale("log")
            # the measured sigmas as plain labels: log minor labels overlap on narrow panels
            sigmas = sorted({r["sigma"] for r in mine})
            ax.set_xticks(sigmas, [f"{s:g}" for s in sigmas], fontsize=7)
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
            ax.set_yticks(list(patch_sizes))
            ax.set_xlabel("sigma")
            ax.set_ylabel("best patch side P")
            ax.set_title(f"{name}: {fam} (held-out inputs)", fontsize=9)
            ax.legend(fontsize=6)
    fig.suptitle("Patch side that best matches network A (points offset slightly per N)",
                 fontsize=9)
    fig.tight_layout()
    run.save_figure(fig, "analytic_patch_sizes")
    plt.close(fig)


def plot_spectra(run, spectra_rows: list[dict[str, Any]], datasets: Sequence[str],
                 results: dict[tuple, Any]) -> None:
    """Eigenvalues of the symmetrised Jacobian, network A (solid) against the best analytic
    model at the spectrum sigma (dashed), one panel per data set and N."""
    plt = pyplot()
    keys = sorted(k for k in results if k[0] in datasets)
    cols = max(1, len({k[1] for k in keys}))
    fig, axes = plt.subplots(len(datasets), cols, squeeze=False,
                             figsize=(3.2 * cols, 2.8 * len(datasets)), sharey=True)
    for i, name in enumerate(datasets):
        for j, n in enumerate(sorted(k[1] for k in keys if k[0] == name)):
            ax = axes[i, j]
            best = results[(name, n)]["best_model_at_spectrum_sigma"]
            for model, style in (("network", "-"), (best, "--")):
                mine = [r for r in spectra_rows if r["dataset"] == name and r["N"] == n
                        and r["model"] == model]
                for image in sorted({r["image"] for r in mine}):
                    eig = [r["eigenvalue"] for r in mine if r["image"] == image]
                    ax.plot(range(1, len(eig) + 1), eig, style, lw=1,
                            color="k" if model == "network" else COLOURS[family(best)],
                            label=(model if image == 0 else None))
            sigma = spectra_rows[0]["sigma"] if spectra_rows else float("nan")
            ax.set_title(f"{name}, N = {n}, sigma = {sigma:g}", fontsize=8)
            ax.set_xscale("log")
            ax.set_xlabel("rank")
            if j == 0:
                ax.set_ylabel("eigenvalue of sym. dD/dy")
            ax.legend(fontsize=6)
    fig.suptitle("Jacobian spectra (GAHB shrinkage): network A vs its best analytic model",
                 fontsize=9)
    fig.tight_layout()
    run.save_figure(fig, "analytic_spectra")
    plt.close(fig)

"""Figures of ``geomem generalization``: similarity histograms per N with the median curves
(95% bootstrap CIs), and the grid of sample quartets."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import pyplot
from ._generalization_stats import SIMILARITY_THRESHOLD
from .records import RunOutput

__all__ = ["plot_histograms", "plot_rows"]


def plot_histograms(run: RunOutput, per_dataset, summary) -> None:
    plt = pyplot()
    n_cols = max(len(grid) for grid, _ in per_dataset.values())
    fig, axes = plt.subplots(len(per_dataset) + 1, n_cols, figsize=(2.6 * n_cols,
                             2.3 * (len(per_dataset) + 1)), squeeze=False)
    bins = np.linspace(-0.2, 1.0, 31)
    for r, (name, (grid, results)) in enumerate(per_dataset.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(grid):
                ax.axis("off")
                continue
            res = results[grid[c]]
            ok = np.asarray(res["both_converged"], dtype=bool)
            ax.hist(np.clip(np.asarray(res["ab"], dtype=float)[ok], -0.2, 1), bins, alpha=0.6,
                    label="A vs B")
            ax.hist(np.clip(np.r_[np.asarray(res["train_sim_0"], dtype=float)[ok],
                                  np.asarray(res["train_sim_1"], dtype=float)[ok]], -0.2, 1), bins,
                    alpha=0.6, label="sample vs nearest train")
            ax.set_title(f"{name}, N={grid[c]}", fontsize=9)
            ax.set_xlabel("cosine similarity", fontsize=8)
            if c == 0:
                ax.legend(fontsize=7)
    ax = axes[-1, 0]
    for i, (name, (grid, _)) in enumerate(per_dataset.items()):
        for key, marker, what in (("ab", "o-", "A vs B"), ("train", "s--", "nearest train")):
            med = np.asarray(summary[name][f"median_{key}_similarity"], dtype=float)
            ci = np.asarray(summary[name][f"median_{key}_ci"], dtype=float).T
            ax.errorbar(grid, med, yerr=np.abs(ci - med), fmt=marker, color=f"C{i}",
                        capsize=2, ms=4, label=f"{name} {what}")
    ax.set_xscale("log")
    ax.axhline(SIMILARITY_THRESHOLD, color="k", lw=0.8, ls=":")
    ax.set_xlabel("N")
    ax.set_ylabel("median similarity (95% CI)")
    ax.legend(fontsize=6)
    for ax in axes[-1, 1:]:
        ax.axis("off")
    stars = ", ".join(_star_text(k, v) for k, v in summary.items())
    fig.suptitle(f"Two denoisers on disjoint sets: A-vs-B and sample-vs-nearest-training "
                 f"similarity ({stars})", fontsize=10)
    fig.tight_layout()
    run.save_figure(fig, "similarity_histograms")
    plt.close(fig)


def _quartet(res: dict[str, Any], i: int) -> np.ndarray:
    """Sample ``i`` as one strip: closest in S1 | sample A | sample B | closest in S2, first
    channel, separated by white gaps."""
    panels = [res["closest_0"][i], res["samples"][0][i], res["samples"][1][i],
              res["closest_1"][i]]
    images = [np.clip(np.asarray(p, dtype=float)[0], 0.0, 1.0) for p in panels]
    gap = np.ones((images[0].shape[0], max(1, images[0].shape[1] // 6)))
    parts = [images[0]]
    for img in images[1:]:
        parts += [gap, img]
    return np.concatenate(parts, axis=1)


def _star_text(name: str, summary: dict[str, Any]) -> str:
    """'digits: N*=61 [40, 90]' (an open end when bootstrap replicates never cross)."""
    if summary["n_star"] is None:
        return f"{name}: N* not reached"
    if summary.get("n_star_upper_bound_only"):
        return f"{name}: N*<={summary['n_star']:.3g} (every N agrees)"
    ci = summary["n_star_ci"]
    low = f"{ci['low']:.3g}" if ci["low"] is not None else "?"
    high = f"{ci['high']:.3g}" if ci["high"] is not None else "beyond grid"
    return f"{name}: N*={summary['n_star']:.3g} [{low}, {high}]"


def plot_rows(run: RunOutput, per_dataset, n_rows: int) -> None:
    """A grid of sample strips: one column per N, ``n_rows`` rows per data set; each cell
    shows closest-in-S1 | sample A | sample B | closest-in-S2 with the three similarities."""
    plt = pyplot()
    n_cols = max(len(grid) for grid, _ in per_dataset.values())
    n_lines = n_rows * len(per_dataset)
    fig, axes = plt.subplots(n_lines, n_cols, figsize=(2.6 * n_cols, 0.95 * n_lines + 0.9),
                             squeeze=False)
    for d, (name, (grid, results)) in enumerate(per_dataset.items()):
        for c in range(n_cols):
            converged = (np.flatnonzero(results[grid[c]]["both_converged"])[:n_rows]
                         if c < len(grid) else [])
            for r in range(n_rows):
                ax = axes[d * n_rows + r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c < len(grid) and r == 0:
                    ax.set_title(f"{name}, N={grid[c]}", fontsize=9)
                if c == 0:
                    ax.set_ylabel(f"{name} #{r + 1}", fontsize=8)
                if r >= len(converged):
                    ax.set_frame_on(False)
                    if c < len(grid) and r == 0:
                        ax.text(0.5, 0.5, "no converged chain", ha="center", va="center",
                                fontsize=8, transform=ax.transAxes)
                    continue
                res, i = results[grid[c]], int(converged[r])
                ax.imshow(_quartet(res, i), cmap="gray", vmin=0, vmax=1)
                ax.set_xlabel(f"S1~A {res['train_sim_0'][i]:.2f}   A~B {res['ab'][i]:.2f}   "
                              f"B~S2 {res['train_sim_1'][i]:.2f}", fontsize=7)
    fig.suptitle("Each cell: closest training image in S1 | sample of A | sample of B | "
                 "closest in S2\n(same sampler seed for A and B); cosine similarities below",
                 fontsize=9)
    fig.tight_layout()
    run.save_figure(fig, "sample_rows")
    plt.close(fig)

"""Figure of ``geomem lid-benchmark``'s trained networks beside the empirical score.

One panel per (data set, estimator): the median LID over held-out points against delta for
each N, the network at its two read-out steps (early: dotted, end of budget: solid) and the
exact empirical score of the same training points (thin grey), with the true dimension.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._common import pyplot
from ._lid_networks import NETWORK_DIM, NETWORK_METHODS
from .records import RunOutput

__all__ = ["plot_networks"]


def _median_curve(rows: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    fracs = sorted({r["delta_fraction"] for r in rows})
    meds = [float(np.nanmedian([r["estimate"] for r in rows if r["delta_fraction"] == f]))
            if any(np.isfinite(r["estimate"]) for r in rows if r["delta_fraction"] == f)
            else np.nan for f in fracs]
    return fracs, meds


def plot_networks(run: RunOutput, rows: Sequence[Mapping[str, Any]], datasets: Sequence[str],
                  n_values: Sequence[int], labels: Mapping[str, str]) -> None:
    """Write ``lid_networks.png/.pdf`` from the tidy ``rows`` of lid.csv."""
    plt = pyplot()
    steps = sorted({r["train_step"] for r in rows if r.get("train_step") is not None})
    fig, axes = plt.subplots(len(datasets), len(NETWORK_METHODS),
                             figsize=(4.0 * len(NETWORK_METHODS), 3.2 * len(datasets)),
                             squeeze=False, constrained_layout=True)
    for row_axes, name in zip(axes, datasets, strict=True):
        mine = [r for r in rows if r["dataset"] == name]
        true_dim = mine[0]["true_dimension"]
        for ax, method in zip(row_axes, NETWORK_METHODS, strict=True):
            for j, n in enumerate(n_values):
                emp = [r for r in mine if r["method"] == method and r["N"] == n]
                ax.semilogx(*_median_curve(emp), "-", color=f"C{j}", lw=0.8, alpha=0.5,
                            label=f"empirical score, N={n}")
                for step in steps:
                    net = [r for r in mine if r["method"] == f"{method}_network"
                           and r["N"] == n and r["train_step"] == step]
                    ax.semilogx(*_median_curve(net), "o-" if step == steps[-1] else "o:",
                                color=f"C{j}", ms=3, label=f"network, N={n}, step {step}")
            ax.axhline(true_dim, color="k", ls=":", lw=0.8)
            ax.set(title=f"{name}: {labels[method]}", xlabel="delta / mean tangent variance",
                   ylabel="median LID", ylim=(-0.5, NETWORK_DIM + 0.5))
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("Trained score networks (points) and the exact empirical score (thin) of the "
                 f"same training points (d = {NETWORK_DIM}; empirical FLIPD clipped at d)",
                 fontsize=10)
    run.save_figure(fig, "lid_networks")
    plt.close(fig)

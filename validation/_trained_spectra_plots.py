"""Figures of ``geomem trained-spectra``: spectra per N and source, dimension against sigma
and N, training loss (split from :mod:`geomem.validation.trained_spectra`, which computes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..theory.manifold import LinearManifold
from ..theory.published import direction_condensation_times
from ._common import pyplot
from .records import RunOutput

__all__ = ["SCALE_NOTE", "plot_dimensions", "plot_loss", "plot_spectra"]

#: printed on the figures: the N values and the budget are not the paper's
SCALE_NOTE = ("N scaled down from the paper's 250-20000 so that the CPU budget shows the "
              "trend; training protocol and budget (scale-down) in record.json")


_PANELS = (("network_ogroup", "network, orthogonal group (at x0)"),
           ("network_exact", "network, exact Jacobian"),
           ("empirical_exact", "empirical score, exact"),
           ("theory", "theory: population (solid), paper (dashed)"))


def plot_spectra(run: RunOutput, per_n: dict, sigmas: np.ndarray, n_values: Sequence[int]
                  ) -> None:
    plt = pyplot()
    model = LinearManifold.figure4()
    fig, axes = plt.subplots(len(n_values), 4, figsize=(16, 3.2 * len(n_values)),
                             sharex=True, sharey=True, squeeze=False)
    colours = plt.cm.viridis(np.linspace(0, 1, model.d))
    scale = sigmas[:, None] ** 2
    for row, n in enumerate(n_values):
        spectra = per_n[n]["spectra"]
        t_c = direction_condensation_times(model, n)
        for col, (source, title) in enumerate(_PANELS):
            ax = axes[row, col]
            if source == "theory":
                for rank in range(model.d):
                    ax.plot(sigmas, scale[:, 0] * spectra["population"][:, rank],
                            color=colours[rank], lw=0.8)
                    ax.plot(sigmas, scale[:, 0] * spectra["paper"][:, rank], "--",
                            color=colours[rank], lw=0.8)
            else:
                values = spectra[source][:, 1:] if source == "network_ogroup" else spectra[source]
                for rank in range(values.shape[1]):
                    ax.plot(sigmas, scale[:, 0] * values[:, rank], color=colours[rank], lw=0.8)
            for k, ls in ((0, ":"), (2, "-.")):   # std-1 and std-0.3 subspaces
                ax.axvline(np.sqrt(t_c[k]), color="red", ls=ls, lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylim(1e-4, 3)
            if row == 0:
                ax.set_title(title, fontsize=9)
            if col == 0:
                ax.set_ylabel(f"N = {n}\nΔ · singular value")
            if row == len(n_values) - 1:
                ax.set_xlabel("noise std σ(t)")
    fig.suptitle("Score-Jacobian spectra (Δ σ_i: normal directions at 1) on the Figure-4 "
                 "manifold; red lines: paper's condensation σ of the std-1 (dotted) and std-0.3 "
                 "(dash-dot) subspaces\n" + SCALE_NOTE, fontsize=10)
    fig.tight_layout()
    run.save_figure(fig, "spectra")
    plt.close(fig)


_DIM_STYLE = {"network_ogroup": ("C0", "-", "network (orth. group)"),
              "network_exact": ("C1", "-", "network (exact J)"),
              "empirical_exact": ("C2", "-", "empirical score"),
              "population": ("k", "--", "theory: population"),
              "paper": ("C3", "--", "theory: paper"),
              "rem": ("C4", ":", "theory: REM")}


def plot_dimensions(run: RunOutput, per_n: dict, sigmas: np.ndarray, n_values: Sequence[int],
                    ref_sigmas: Sequence[float], table_rows: list[dict], *,
                    true_dimension: int, methods: Sequence[str],
                    skdim_names: Sequence[str]) -> None:
    plt = pyplot()
    ncol = len(n_values) + 1
    fig, axes = plt.subplots(2, ncol, figsize=(3.4 * ncol, 6.4), squeeze=False)
    for row, method in enumerate(methods):
        for col, n in enumerate(n_values):
            ax = axes[row, col]
            for source, (colour, ls, label) in _DIM_STYLE.items():
                est = per_n[n]["dims"][(source, method)]
                ax.plot(sigmas, np.where(est.found, est.dimension, 0.0), color=colour, ls=ls,
                        label=label, lw=1.2)
            ax.axhline(true_dimension, color="grey", lw=0.5)
            ax.set_xscale("log")
            ax.set_ylim(-0.5, 30)
            ax.set_title(f"N = {n}, {method}", fontsize=9)
            ax.set_xlabel("σ(t)")
            if col == 0:
                ax.set_ylabel("dimension (no gap → 0)")
        ax = axes[row, -1]
        for source in ("network_exact", "empirical_exact", "paper", "rem"):
            colour, ls, label = _DIM_STYLE[source]
            for j, s in enumerate(ref_sigmas):
                ax.plot(n_values, [r[f"{source}_{method}_sigma{s:g}"] for r in table_rows],
                        color=colour, ls=ls, marker="osd^v<>"[j % 7], ms=4,
                        label=label if j == 0 else None, alpha=0.5 + 0.5 * j / len(ref_sigmas))
        for k, marker in zip(skdim_names, "xP*", strict=True):
            ax.plot(n_values, [r[f"skdim_{k}"] for r in table_rows], "k" + marker, ls="none",
                    label=f"skdim {k}")
        ax.axhline(true_dimension, color="grey", lw=0.5)
        ax.set_xscale("log")
        ax.set_title(f"vs N at σ in {tuple(ref_sigmas)} ({method})", fontsize=9)
        ax.set_xlabel("N")
    axes[0, 0].legend(fontsize=7)
    axes[0, -1].legend(fontsize=6)
    fig.suptitle(SCALE_NOTE, fontsize=9)
    fig.tight_layout()
    run.save_figure(fig, "dimension")
    plt.close(fig)


def plot_loss(run: RunOutput, per_n: dict, n_values: Sequence[int]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for n in n_values:
        losses = per_n[n]["net"].losses
        if len(losses):
            ax.plot(losses[:, 0], losses[:, 1], label=f"N = {n}", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss (mean over log interval)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    run.save_figure(fig, "loss")
    plt.close(fig)



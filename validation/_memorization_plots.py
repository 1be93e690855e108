"""Figure of ``geomem memorization``: retained dimension in the (N, step) plane per subspace,
the memorized fraction along training, and tau_mem(N) with its fitted exponent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..numerics.training_config import checkpoint_steps
from ..theory.manifold import LinearManifold
from ._common import pyplot
from .records import RunOutput

__all__ = ["plot_memorization"]


def _grid(rows: list[dict], ns: list[int], subspace: Any, sigma: float
          ) -> tuple[list[int], np.ndarray]:
    """Mean network retained dimension (len(ns), n_steps) on training points; NaN where a
    network of that N has no snapshot at that step (its budget ended earlier)."""
    sel = [r for r in rows if r["source"] == "network" and r["points"] == "train"
           and r["subspace"] == subspace and r["sigma"] == sigma and r["n_train"] in ns]
    steps = sorted({r["step"] for r in sel})
    if len(ns) > 1 and steps:   # columns: the log-spaced snapshots, not one N's budget end
        grid_steps = set(checkpoint_steps(max(steps), 8, min(steps)))
        steps = [s for s in steps if s in grid_steps] or steps
    grid = np.full((len(ns), len(steps)), np.nan)
    for i, n in enumerate(ns):
        for j, s in enumerate(steps):
            vals = [r["retained"] for r in sel if r["n_train"] == n and r["step"] == s]
            if vals:
                grid[i, j] = np.mean(vals)
    return steps, grid


def _log_edges(values: Sequence[float]) -> np.ndarray:
    """Cell edges (n + 1,) around log-spaced centres (geometric midpoints)."""
    v = np.asarray(values, float)
    if v.size == 1:
        return np.array([v[0] / 1.5, v[0] * 1.5])
    mids = np.sqrt(v[:-1] * v[1:])
    return np.r_[v[0] ** 2 / mids[0], mids, v[-1] ** 2 / mids[-1]]


def _limit(rows: list[dict], n: int, subspace: Any, sigma: float) -> float:
    vals = [r["retained"] for r in rows if r["source"] == "empirical" and r["n_train"] == n
            and r["points"] == "train" and r["subspace"] == subspace and r["sigma"] == sigma]
    return float(np.mean(vals)) if vals else float("nan")


def plot_memorization(run: RunOutput, rows: list[dict], sample_rows: list[dict],
                      tau_rows: list[dict], per_seed: list[dict], exponent: dict, *,
                      model: LinearManifold, ref_sigma: float, quick: bool) -> None:
    """Write ``memorization.png/.pdf`` (module docstring)."""
    plt = pyplot()
    from matplotlib.ticker import NullFormatter

    ns = sorted({r["n_train"] for r in rows})
    subspaces = [*range(model.n_subspaces), "all"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    stds = [f"std {s:g}" for s in model.stds]
    for ax, sub in zip(axes[0], subspaces, strict=True):
        steps, grid = _grid(rows, ns, sub, ref_sigma)
        full = float(sum(model.dims)) if sub == "all" else float(model.dims[sub])
        x_edges, y_edges = _log_edges(steps), _log_edges(ns)
        mesh = ax.pcolormesh(x_edges, y_edges, grid, vmin=0, vmax=full, cmap="viridis",
                             shading="flat")
        fig.colorbar(mesh, ax=ax, label="retained dimension")
        for n in ns:   # the infinite-training limit: the exact empirical score, at the right
            ax.annotate(f"{_limit(rows, n, sub, ref_sigma):.1f}", (0.97, n),
                        xycoords=("axes fraction", "data"), ha="right", va="center",
                        fontsize=7, color="C3",
                        bbox={"fc": "white", "ec": "none", "alpha": 0.7, "pad": 1})
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_yticks(ns, [str(n) for n in ns])
        ax.set_xlabel("training step")
        ax.set_ylabel("N (training points)")
        name = "all subspaces" if sub == "all" else f"subspace {sub} ({stds[sub]}, " \
            f"m = {model.dims[sub]})"
        ax.set_title(f"{name}: population {full:g}; red: empirical score", fontsize=9)
    ax = axes[1, 0]
    colours = plt.cm.plasma(np.linspace(0, 0.85, len(ns)))
    for n, c in zip(ns, colours, strict=True):
        sel = [r for r in sample_rows if r["n_train"] == n]
        steps = sorted({r["step"] for r in sel})
        frac = [np.mean([r["memorized_fraction"] for r in sel if r["step"] == s]) for s in steps]
        ax.plot(steps, frac, "o-", ms=3, color=c, label=f"N = {n}")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training step")
    ax.set_ylabel("memorized fraction of samples")
    ax.set_title("samples closer than 1/3 of the 2nd-nearest distance", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    for n, c in zip(ns, colours, strict=True):
        steps, grid = _grid(rows, [n], "all", ref_sigma)
        ok = np.isfinite(grid[0])
        ax.plot(np.asarray(steps)[ok], grid[0][ok], "o-", ms=3, color=c, label=f"N = {n}")
        ax.axhline(_limit(rows, n, "all", ref_sigma), color=c, ls=":", lw=0.8)
    ax.axhline(0.5 * sum(model.dims), color="k", lw=0.8, ls="--", label="half of population")
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"retained dimension at σ = {ref_sigma:g} (train points)")
    ax.set_title("network (solid) and empirical-score limit (dotted)", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    _plot_tau(ax, tau_rows, per_seed, exponent)
    for ax in axes.flat:   # minor log-tick labels overlap on short axes
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    note = " — SMOKE-TEST SIZES (--quick): no conclusions" if quick else ""
    fig.suptitle(f"Memorization of trained score networks in (N, training step); "
                 f"σ = {ref_sigma:g}, points = training points + noise{note}", fontsize=11)
    fig.tight_layout()
    run.save_figure(fig, "memorization")
    plt.close(fig)


def _plot_tau(ax: Any, tau_rows: Sequence[dict], per_seed: Sequence[dict], exponent: dict
              ) -> None:
    for r in per_seed:
        if np.isfinite(r["tau_mem"]):
            ax.plot(r["n_train"], r["tau_mem"], "o", color="grey", ms=3, alpha=0.6)
        else:   # censored: not reached within the budget
            ax.plot(r["n_train"], r["budget"], "^", mfc="none", color="C3", ms=7)
    ok = [r for r in tau_rows if r["tau_mem"] is not None]
    if ok:
        n = np.array([r["n_train"] for r in ok], float)
        tau = np.array([r["tau_mem"] for r in ok])
        lo = np.array([r["ci_low"] if r["ci_low"] is not None else r["tau_mem"] for r in ok])
        hi = np.array([r["ci_high"] if r["ci_high"] is not None else r["tau_mem"] for r in ok])
        ax.errorbar(n, tau, yerr=[tau - lo, hi - tau], fmt="s", color="k", capsize=3,
                    label="geometric mean, 95% CI")
    if exponent.get("exponent") is not None:
        xs = np.geomspace(min(r["n_train"] for r in tau_rows),
                          max(r["n_train"] for r in tau_rows), 20)
        b = exponent["exponent"]
        ci = "" if exponent["ci_low"] is None else \
            f" [{exponent['ci_low']:.2f}, {exponent['ci_high']:.2f}]"
        ax.plot(xs, np.exp(exponent["intercept"]) * xs**b, "C0--",
                label=f"fit: tau ∝ N^{b:.2f}{ci}")
    ax.plot([], [], "^", mfc="none", color="C3", label="censored (budget shown)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (training points)")
    ax.set_ylabel("tau_mem (training steps)")
    ax.set_title("memorization time: retained < half of population", fontsize=9)
    ax.legend(fontsize=7)

"""Monte-Carlo part of ``geomem phase-diagram``: retained dimension per subspace on the
(log N, t) plane, with the theory boundaries of both methods drawn on top.

For every schedule, training-set size N and time t: the retained dimension of each tangent
subspace (:func:`geomem.numerics.retained.subspace_retained_dimension`, default definition
"projection", the theory's gap criterion), measured with both
protocols (``origin``: centred orthogonal-group estimator at x0 = 0; ``fresh``: exact Jacobian at
single points x ~ p_t, averaged over points and replicates (independent training sets);
``fresh_mean``: the gap of the Jacobian *averaged* over fresh points and replicates, the
quantity the REM predicts). One heat-map
panel per (schedule, protocol, subspace), colour = retained dimension / m_k; lines = the time
at which the theory says the subspace has lost half its dimensions, per N (published 5a:
direction condensation times, VE only; REM 5b: annealed lam*).

Writes into ``<out>/monte_carlo/``: ``phase_mc.png/.pdf``, ``phase_mc.csv`` (schedule,
protocol, n_train, t, subspace, retained mean with 95% CI), ``phase_boundaries.csv`` (theory
gap-loss times per N), ``record.json``; resumable like every sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..theory.manifold import LinearManifold
from ..theory.schedules import get_schedule
from ._common import pyplot, summarize
from .executors import run_grid
from .measurements import (
    fresh_protocol,
    fresh_test_points,
    mean_jacobian_retained,
    origin_protocol,
)
from .records import RunOutput
from .spectra import model_from_dict, theory_gap_loss

__all__ = ["phase_mc_point", "run_phase_mc", "run_phase_mc_defaults", "theory_boundaries"]

COMMAND = "phase-diagram-mc"
RESULT_FORMAT = 2
#: entropy tag of the training-set stream (kept apart from the per-grid-point streams)
TRAIN_STREAM = 2
#: origin estimator, single fresh points, and the Jacobian averaged over fresh points
PROTOCOLS = ("origin", "fresh", "fresh_mean")


def phase_mc_point(point: dict[str, Any], seed: np.random.SeedSequence) -> dict[str, Any]:
    """Retained counts at one (schedule, N, t, replicate) for both protocols."""
    model = model_from_dict(point["model"])
    schedule = get_schedule(point["schedule"])
    t = float(point["t"])
    a, delta = float(schedule.a(t)), float(schedule.delta(t))
    train_ss = np.random.SeedSequence((int(point["seed"]), TRAIN_STREAM),
                                      spawn_key=(int(point["n_index"]), int(point["replicate"])))
    Y = model.sample(int(point["n_train"]), np.random.default_rng(train_ss))
    rng = np.random.default_rng(seed)
    origin = origin_protocol(Y, model, a, delta, rng, repetitions=int(point["repetitions"]))
    X = fresh_test_points(model, int(point["n_test"]), a, delta, rng)
    fresh = fresh_protocol(Y, X, model, a, delta)
    return {"origin": origin["retained"].tolist(), "fresh": fresh["retained"].tolist(),
            "fresh_mean_jacobian": fresh["mean_jacobian"].tolist()}


def theory_boundaries(model: LinearManifold, n_values: np.ndarray, t_values: np.ndarray,
                      schedule) -> dict[str, np.ndarray]:
    """Gap-loss time per N and subspace, {"published"|"rem": (len(N), K)} (theory.phase)."""
    return theory_gap_loss(model, n_values, t_values, schedule)


def run_phase_mc(out: Path, *, model: LinearManifold, n_train_values: list[int],
                 t_values: dict[str, np.ndarray], replicates: int, n_test: int,
                 repetitions: int, seed: int, executor: Any = None,
                 show_progress: bool = True) -> tuple[RunOutput, list[dict]]:
    """Sweep, summarise, plot and record; ``t_values`` maps schedule name -> times."""
    run = RunOutput(Path(out) / "monte_carlo", COMMAND)
    spec = model.to_dict()
    points = []
    for name, ts in t_values.items():
        sched = get_schedule(name)
        for ni, n in enumerate(n_train_values):
            for ti, t in enumerate(np.sort(sched.check_time(ts, "t_values"))):
                for r in range(replicates):
                    points.append({"schedule": sched.name, "n_index": ni, "n_train": int(n),
                                   "t_index": ti, "t": float(t), "replicate": r, "model": spec,
                                   "n_test": n_test, "repetitions": repetitions, "seed": seed})
    results = run_grid(phase_mc_point, points, seed=seed, run=run, executor=executor,
                       label=COMMAND, key_extra={"format": RESULT_FORMAT},
                       show_progress=show_progress)
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault((p["schedule"], p["n_index"], p["t_index"]), []).append(i)
    rows = []
    for (name, _, _), idx in groups.items():
        p0 = points[idx[0]]
        sched = get_schedule(name)
        a, delta = float(sched.a(p0["t"])), float(sched.delta(p0["t"]))
        pooled = np.mean([results[i]["fresh_mean_jacobian"] for i in idx], axis=0)
        counts = mean_jacobian_retained(pooled, model, a, delta)
        for k in range(model.n_subspaces):  # pooled mean: no CI (see spectra.assemble)
            rows.append({"schedule": name, "protocol": "fresh_mean", "n_train": p0["n_train"],
                         "t": p0["t"], "subspace": k, "dim": model.dims[k],
                         "retained_mean": float(counts[k]), "ci_low": None, "ci_high": None})
        for protocol in ("origin", "fresh"):
            vals = [np.asarray(results[i][protocol], dtype=float) for i in idx]
            rep = np.concatenate([np.full(len(v), j) for j, v in enumerate(vals)])
            vals = np.concatenate(vals)
            for k in range(model.n_subspaces):
                s = summarize(vals[:, k], rep)
                rows.append({"schedule": name, "protocol": protocol, "n_train": p0["n_train"],
                             "t": p0["t"], "subspace": k, "dim": model.dims[k],
                             "retained_mean": s["mean"], "ci_low": s["ci_low"],
                             "ci_high": s["ci_high"]})
    run.write_csv("phase_mc", rows)
    bounds = {name: theory_boundaries(model, np.asarray(n_train_values), ts, get_schedule(name))
              for name, ts in t_values.items()}
    run.write_csv("phase_boundaries", [
        {"schedule": name, "method": method, "n_train": n, "subspace": k,
         "t_gap_lost": b[method][i, k]}
        for name, b in bounds.items() for method in b for i, n in enumerate(n_train_values)
        for k in range(model.n_subspaces)])
    fig = _figure(rows, bounds, model, n_train_values, t_values)
    run.save_figure(fig, "phase_mc")
    pyplot().close(fig)
    run.write_record({"model": spec, "n_train_values": n_train_values,
                      "t_values": {k: np.sort(v) for k, v in t_values.items()},
                      "replicates": replicates, "n_test": n_test, "repetitions": repetitions},
                     seeds={"seed": seed,
                            "training_sets": "SeedSequence((seed, 2), spawn_key=(n_index, "
                                             "replicate))",
                            "grid": "SeedSequence(seed, spawn_key=(index,))"},
                     extra={"executor": getattr(executor, "describe", lambda: {})()})
    return run, rows


def _figure(rows, bounds, model, n_values, t_values):
    plt = pyplot()
    names = list(t_values)
    K = model.n_subspaces
    fig, axes = plt.subplots(len(names) * len(PROTOCOLS), K,
                             figsize=(4.6 * K, 3.3 * len(names) * len(PROTOCOLS)),
                             constrained_layout=True, squeeze=False)
    n_arr = np.asarray(n_values, dtype=float)
    image = None
    for si, name in enumerate(names):
        ts = np.sort(np.asarray(t_values[name], dtype=float))
        for pi, protocol in enumerate(PROTOCOLS):
            for k in range(K):
                ax = axes[si * len(PROTOCOLS) + pi, k]
                grid = np.full((len(n_arr), len(ts)), np.nan)
                for r in rows:
                    if (r["schedule"], r["protocol"], r["subspace"]) == (name, protocol, k):
                        grid[list(n_arr).index(r["n_train"]),
                             int(np.argmin(np.abs(ts - r["t"])))] = r["retained_mean"] / r["dim"]
                image = ax.pcolormesh(_edges(ts), _edges(n_arr), grid, cmap="magma", vmin=0,
                                      vmax=1, shading="flat")
                for method, style in (("published", "c--"), ("rem", "w-")):
                    tb = bounds[name][method][:, k]
                    if np.any(np.isfinite(tb)):
                        ax.plot(tb, n_arr, style, lw=1.6, label=f"{method} theory")
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xlabel(f"t ({name})")
                ax.set_ylabel("N")
                ax.set_title(f"{name}, {protocol}: subspace {k + 1} (m={model.dims[k]}, "
                             f"std {model.stds[k]:g})", fontsize=9)
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=6, loc="upper left")
    fig.colorbar(image, ax=axes, shrink=0.6, label="retained dimension / m_k (MC)")
    fig.suptitle(f"Phase diagram (Monte Carlo): d={model.d}, dims={model.dims}, "
                 f"stds={model.stds}, normalized={model.normalized}; lines: theory gap-loss "
                 "time (half the subspace lost)", fontsize=9)
    return fig


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges for a log-spaced axis (geometric midpoints, extrapolated at the ends)."""
    lc = np.log(np.asarray(centres, dtype=float))
    if lc.size == 1:
        return np.exp(np.array([lc[0] - 0.5, lc[0] + 0.5]))
    mid = (lc[1:] + lc[:-1]) / 2
    return np.exp(np.concatenate([[2 * lc[0] - mid[0]], mid, [2 * lc[-1] - mid[-1]]]))


#: default Monte-Carlo grid of the phase-diagram command (N values, times per decade)
MC_N_VALUES = (10, 30, 100, 300, 1000, 3000, 10000)
MC_T_RANGE, MC_N_TIMES = (1e-4, 1.0), 16


def run_phase_mc_defaults(out: Path, schedules: list[str], *, quick: bool = False, seed: int = 0,
                          executor: Any = None) -> tuple[RunOutput, list[dict]]:
    """The Monte-Carlo layer at the Figure-4 generator geometry (residual std 0.01), default
    or ``quick`` sizes; what ``geomem phase-diagram --monte-carlo`` and the report run."""
    n_times = 4 if quick else MC_N_TIMES
    return run_phase_mc(
        out, model=LinearManifold.figure4(),
        n_train_values=[10, 100, 1000] if quick else list(MC_N_VALUES),
        t_values={s: np.geomspace(*MC_T_RANGE, n_times) for s in schedules},
        replicates=1 if quick else 2, n_test=4 if quick else 12, repetitions=1 if quick else 2,
        seed=seed, executor=executor)

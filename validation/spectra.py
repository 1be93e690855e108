"""``geomem spectra``: the losing-dimensions Figure 4 -- Jacobian singular values versus t.

Default geometry: the paper's (VE, d = 30, subspaces of dimension 2 and 5 with *stds* 1 and
0.3, residual std 0.01, samples normalised to unit norm, N = 1000). Four panels, every value
shown as ``Delta(t) * sigma_i`` (singular values in units of the normal-direction value
1/Delta, so the normal bulk sits at 1 and a tangent direction of variance v at
Delta/(Delta + a^2 v)):

1. the published theory (THEORY §5a; ``method="paper"``);
2. the large-deviation REM (THEORY §5b; ``method="rem"``, annealed lam*);
3. measured, the authors' protocol: orthogonal-group estimator at the origin (mean of
   ``--repetitions`` draws of Z);
4. measured, exact empirical-score Jacobian at fresh test points x ~ p_t (median over points).

Each panel carries vertical *gap lines*: the time at which subspace k loses half of its
dimensions by the gap criterion (theory: the boundaries of
:func:`geomem.theory.phase.phase_diagram`; MC: the retained dimension of
:func:`geomem.numerics.retained.subspace_retained_dimension` under the default definition,
"projection"; the origin estimator is centred, see :mod:`geomem.validation.measurements`).
A second figure (``retained``) shows the retained dimension per subspace versus t for every
source, including a fifth one, ``fresh_mean``: the gap of the Jacobian *averaged* over the
fresh test points and training sets (the REM predicts this mean, not a single point's
Jacobian, which is low-rank once the weights condense on a few training points).

Gap-loss times (MC): per training set, the root of its log-interpolated retained-dimension
curve; the point estimate is the geometric mean over training sets and the 95% CI its
t-interval, never narrower than half a grid step either side; training sets whose curve never
crosses are counted as censored (:func:`geomem.validation._common.gap_loss_statistics`).

Outputs: ``spectra.png/.pdf``, ``retained.png/.pdf``, ``spectra.csv`` (source, t, rank,
sigma, Delta*sigma), ``retained.csv`` (source, t, subspace, mean with 95% CI),
``gap_loss.csv`` (source, subspace, t_loss with 95% CI and censoring counts, default
definition and threshold), ``gap_loss_robustness.csv`` and ``first_lost.csv`` (every
definition x threshold 1/3, 1/2, 2/3; :mod:`geomem.validation.robustness`), ``record.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from ..theory.manifold import LinearManifold
from ..theory.schedules import Schedule, get_schedule
from ._common import (
    bad_option,
    checked,
    crossing_time,
    default_out,
    gap_loss_statistics,
    grid_ratio,
    parse_floats,
    parse_ints,
    pyplot,
    summarize,
)
from .executors import run_grid
from .measurements import (
    DEFAULT_DEFINITION,
    RETAINED_DEFINITIONS,
    ROBUSTNESS_THRESHOLDS,
    effective_subspace_variances,
    fresh_protocol,
    fresh_test_points,
    origin_protocol,
    rem_retained_dimension,
    retained_grid,
)
from .options import (
    DaskWorkersOption,
    OutOption,
    QuickOption,
    SchedulerOption,
    SeedOption,
    WorkersOption,
    check_memory,
    cli_executor,
    quick_sizes,
)
from .records import RunOutput
from .spectra_plots import spectra_figures

__all__ = ["assemble", "crossing_time", "register", "run_spectra", "spectra_point",
           "theory_gap_loss", "theory_retained"]

#: bump when a grid point's result layout changes, so stale caches are not reused
RESULT_FORMAT = 2
COMMAND = "spectra"
#: entropy tag of the training-set stream (kept apart from the per-grid-point streams)
TRAIN_STREAM = 1
SOURCES = ("published", "rem", "origin", "fresh", "fresh_mean")
#: sources measured by Monte Carlo (with per-replicate confidence intervals)
MC_SOURCES = ("origin", "fresh", "fresh_mean")
#: index of the default definition and of the threshold 1/2 in ``retained_grid`` arrays
DEFAULT_INDEX = (RETAINED_DEFINITIONS.index(DEFAULT_DEFINITION), ROBUSTNESS_THRESHOLDS.index(0.5))
SOURCE_TITLES = {"published": "published theory (5a)", "rem": "large-deviation REM (5b)",
                 "origin": "MC: origin, orthogonal-group estimator",
                 "fresh": "MC: exact Jacobian at fresh x ~ p_t (median)",
                 "fresh_mean": "MC: mean exact Jacobian over fresh x ~ p_t"}


def model_from_dict(spec: dict) -> LinearManifold:
    """Rebuild a LinearManifold from :meth:`LinearManifold.to_dict` (axis basis)."""
    return LinearManifold(spec["d"], spec["dims"], stds=spec["stds"],
                          residual_std=spec["residual_std"], normalized=spec["normalized"])


def training_set(model: LinearManifold, n_train: int, seed: int, replicate: int) -> np.ndarray:
    """The training set of one replicate, shared by every t of that replicate."""
    ss = np.random.SeedSequence((int(seed), TRAIN_STREAM), spawn_key=(int(replicate),))
    return model.sample(n_train, np.random.default_rng(ss))


def spectra_point(point: dict[str, Any], seed: np.random.SeedSequence) -> dict[str, Any]:
    """Both measurement protocols at one (t, replicate).

    Returns ``origin_sv`` (d,) (centred estimator), ``fresh_sv`` (B x d), singular values
    descending in 1/(data units)^2; ``origin_counts`` (repetitions x D x L x K) and
    ``fresh_counts`` (B x D x L x K), the retained dimension under every definition and
    threshold (:func:`~geomem.validation.measurements.retained_grid`); ``fresh_mean_jacobian``
    (d x d) the Jacobian averaged over the B fresh points.
    """
    model = model_from_dict(point["model"])
    schedule = get_schedule(point["schedule"])
    t = float(point["t"])
    a, delta = float(schedule.a(t)), float(schedule.delta(t))
    Y = training_set(model, int(point["n_train"]), int(point["seed"]), int(point["replicate"]))
    rng = np.random.default_rng(seed)
    origin = origin_protocol(Y, model, a, delta, rng, repetitions=int(point["repetitions"]))
    X = fresh_test_points(model, int(point["n_test"]), a, delta, rng)
    fresh = fresh_protocol(Y, X, model, a, delta)
    return {"origin_sv": origin["sv"].tolist(),
            "origin_counts": retained_grid(origin["jacobians"], model, a, delta).tolist(),
            "fresh_sv": fresh["sv"].tolist(),
            "fresh_counts": retained_grid(fresh["jacobians"], model, a, delta).tolist(),
            "fresh_mean_jacobian": fresh["mean_jacobian"].tolist()}


def theory_retained(model: LinearManifold, t: np.ndarray, n_train: int, schedule: Schedule
                    ) -> dict[str, np.ndarray]:
    """Retained dimension per subspace (T, K) predicted by 5a and by the annealed REM.

    5a: direction i is lost when t < t_c,i (VE only; NaN for other schedules).
    REM: the gap criterion applied to -1/(Delta + lam* a^2 v_k).
    """
    from ..theory.rem import annealed_freezing_parameter

    t = np.asarray(t, dtype=np.float64)
    a, delta = schedule.a(t), schedule.delta(t)
    v = effective_subspace_variances(model)
    lam = np.asarray(annealed_freezing_parameter(model, t, n_train, schedule), dtype=np.float64)
    rem = np.stack([rem_retained_dimension(lam, a, delta, v[k], model.dims[k])
                    for k in range(model.n_subspaces)], axis=-1)
    if schedule.name == "VE":
        from ..theory.published import direction_condensation_times

        tc = np.asarray(direction_condensation_times(model, n_train), dtype=np.float64)
        tc = np.broadcast_to(tc, (t.size, model.d)) if tc.ndim == 1 else tc
        alive = t[:, None] > tc
        pub = np.stack([alive[:, model.direction_subspace == k].sum(axis=1)
                        for k in range(model.n_subspaces)], axis=-1).astype(float)
    else:
        pub = np.full(rem.shape, np.nan)
    return {"published": pub, "rem": rem}


def theory_gap_loss(model: LinearManifold, n_values: Any, t_values: np.ndarray,
                    schedule: Schedule) -> dict[str, np.ndarray]:
    """Theory gap-loss times (len(n_values), K) per source, from
    :func:`geomem.theory.phase.phase_diagram` (same loss criterion as the measurements);
    NaN where the method does not apply (the published theory outside VE) or never loses."""
    from ..theory.phase import phase_diagram

    out = {}
    for source, method in (("published", "paper"), ("rem", "rem")):
        try:
            diagram = phase_diagram(model, np.asarray(n_values, dtype=float), t_values,
                                    schedule, method)
            out[source] = np.asarray(diagram.subspace_boundary, dtype=np.float64)
        except ValueError:
            out[source] = np.full((len(n_values), model.n_subspaces), np.nan)
    return out


def assemble(points: list[dict], results: list[dict], model: LinearManifold, ts: np.ndarray,
             n_train: int, schedule: Schedule) -> dict[str, Any]:
    """Curves (T, d) per source, retained summaries, gap-loss times (default definition and
    threshold) and the robustness tables (every definition and threshold)."""
    from ..theory.predictions import predicted_singular_values
    from .robustness import first_lost_rows, gap_loss_rows

    delta = schedule.delta(ts)
    curves = {}
    for source, method in (("published", "paper"), ("rem", "rem")):
        opts = {"test_point": "annealed"} if method == "rem" else {}
        try:
            curves[source] = np.asarray(predicted_singular_values(
                model, ts, n_train, schedule, method=method, **opts), dtype=np.float64)
        except ValueError:  # the published theory is stated for VE only
            curves[source] = np.full((len(ts), model.d), np.nan)
    curves = {k: np.sort(v, axis=-1)[..., ::-1] for k, v in curves.items()}
    T, K = len(ts), model.n_subspaces
    di, li = DEFAULT_INDEX
    reps = sorted({p["replicate"] for p in points})
    by_t: dict[int, list[int]] = {}
    for i, p in enumerate(points):
        by_t.setdefault(p["t_index"], []).append(i)
    origin_sv, fresh_sv = np.zeros((T, model.d)), np.zeros((T, model.d))
    retained_rows = []
    mc_retained = {"origin": np.zeros((T, K)), "fresh": np.zeros((T, K))}
    grid_shape = (len(RETAINED_DEFINITIONS), len(ROBUSTNESS_THRESHOLDS), K)
    per_rep = {s: np.full((len(reps), T, *grid_shape), np.nan) for s in ("origin", "fresh")}
    pooled = np.zeros((T, *grid_shape))
    for ti in range(T):
        idx = by_t[ti]
        origin_sv[ti] = np.mean([results[i]["origin_sv"] for i in idx], axis=0)
        fresh_all = np.concatenate([np.asarray(results[i]["fresh_sv"]) for i in idx])
        fresh_sv[ti] = np.median(fresh_all, axis=0)
        for source in ("origin", "fresh"):
            vals = [np.asarray(results[i][f"{source}_counts"], dtype=float) for i in idx]
            for i, v in zip(idx, vals, strict=True):
                per_rep[source][reps.index(points[i]["replicate"]), ti] = v.mean(axis=0)
            groups = np.concatenate([np.full(len(v), j) for j, v in enumerate(vals)])
            vals = np.concatenate(vals)[:, di, li]
            for k in range(K):
                s = summarize(vals[:, k], groups)
                mc_retained[source][ti, k] = s["mean"]
                retained_rows.append({"source": source, "t": ts[ti], "subspace": k,
                                      "dim": model.dims[k], "retained_mean": s["mean"],
                                      "ci_low": s["ci_low"], "ci_high": s["ci_high"]})
        # the mean Jacobian over test points and training sets (what the REM predicts)
        mean_j = np.mean([results[i]["fresh_mean_jacobian"] for i in idx], axis=0)
        pooled[ti] = retained_grid(mean_j, model, float(schedule.a(ts[ti])), float(delta[ti]))
    curves["origin"], curves["fresh"] = origin_sv, fresh_sv
    mc_retained["fresh_mean"] = pooled[:, di, li]
    for ti in range(T):
        for k in range(K):
            # no CI: per-training-set means (n_test points each) of this heavy-tailed Jacobian
            # are much noisier than the pooled mean, so they do not bracket it
            retained_rows.append({"source": "fresh_mean", "t": ts[ti], "subspace": k,
                                  "dim": model.dims[k], "retained_mean": pooled[ti, di, li, k],
                                  "ci_low": None, "ci_high": None})
    th = theory_retained(model, ts, n_train, schedule)
    for source in ("published", "rem"):
        for ti in range(T):
            for k in range(K):
                retained_rows.append({"source": source, "t": ts[ti], "subspace": k,
                                      "dim": model.dims[k],
                                      "retained_mean": th[source][ti, k], "ci_low": None,
                                      "ci_high": None})
    retained = {**th, **mc_retained}
    theory = theory_gap_loss(model, [n_train], ts, schedule)
    gap_rows, gap_loss = [], {}
    for source in SOURCES:
        gap_loss[source] = []
        for k in range(K):
            row = {"source": source, "subspace": k, "dim": model.dims[k], "std": model.stds[k]}
            if source in ("origin", "fresh"):
                st = gap_loss_statistics(ts, per_rep[source][:, :, di, li, k], model.dims[k] / 2)
                row.update(t_loss=st["t_loss"], t_loss_ci_low=st["ci_low"],
                           t_loss_ci_high=st["ci_high"], n_replicates=st["n_replicates"],
                           n_censored_not_lost=st["n_not_lost"],
                           n_censored_lost_at_start=st["n_lost_at_start"])
            else:
                tl = (crossing_time(ts, retained[source][:, k], model.dims[k] / 2)
                      if source == "fresh_mean" else float(theory[source][0][k]))
                row.update(t_loss=tl, t_loss_ci_low=float("nan"), t_loss_ci_high=float("nan"),
                           n_replicates=None, n_censored_not_lost=None,
                           n_censored_lost_at_start=None)
            gap_loss[source].append(row["t_loss"])
            gap_rows.append(row)
    robust_rows, logs = gap_loss_rows(ts, per_rep, pooled, model.dims)
    spectra_rows = [{"source": s, "t": ts[ti], "rank": r + 1, "sigma": curves[s][ti, r],
                     "delta_sigma": delta[ti] * curves[s][ti, r]}
                    for s in curves for ti in range(T) for r in range(model.d)]
    return {"curves": curves, "retained": retained, "gap_loss": gap_loss,
            "spectra_rows": spectra_rows, "retained_rows": retained_rows, "gap_rows": gap_rows,
            "robustness_rows": robust_rows,
            "first_lost_rows": first_lost_rows(robust_rows, logs, grid_ratio(ts))}


def run_spectra(out: Path, *, model: LinearManifold, n_train: int, schedule: str,
                t_values: np.ndarray, repetitions: int, n_test: int, replicates: int, seed: int,
                executor: Any = None, show_progress: bool = True) -> tuple[RunOutput, dict]:
    """Compute (resumably), plot and record the spectra; returns (run, assembled results)."""
    sched = get_schedule(schedule)
    ts = np.sort(sched.check_time(t_values, "t_values"))[::-1]
    run = RunOutput(out, COMMAND)
    spec = model.to_dict()
    points = [{"t_index": ti, "t": float(t), "replicate": r, "model": spec,
               "schedule": sched.name, "n_train": n_train, "repetitions": repetitions,
               "n_test": n_test, "seed": seed}
              for ti, t in enumerate(ts) for r in range(replicates)]
    results = run_grid(spectra_point, points, seed=seed, run=run, executor=executor,
                       label=COMMAND, key_extra={"format": RESULT_FORMAT},
                       show_progress=show_progress)
    res = assemble(points, results, model, ts, n_train, sched)
    run.write_csv("spectra", res["spectra_rows"])
    run.write_csv("retained", res["retained_rows"])
    run.write_csv("gap_loss", res["gap_rows"])
    run.write_csv("gap_loss_robustness", res["robustness_rows"])
    run.write_csv("first_lost", res["first_lost_rows"])
    fig, fig2 = spectra_figures(res, model, ts, n_train, sched, SOURCES, SOURCE_TITLES)
    run.save_figure(fig, "spectra")
    run.save_figure(fig2, "retained")
    plt = pyplot()
    plt.close(fig)
    plt.close(fig2)
    run.write_record({"model": spec, "n_train": n_train, "schedule": sched.to_dict(),
                      "t_values": ts, "repetitions": repetitions, "n_test": n_test,
                      "replicates": replicates},
                     seeds={"seed": seed,
                            "training_sets": "SeedSequence((seed, 1), spawn_key=(replicate,))",
                            "grid": "SeedSequence(seed, spawn_key=(index,))"},
                     extra={"executor": getattr(executor, "describe", lambda: {})(),
                            "gap_loss": res["gap_loss"], "definition": DEFAULT_DEFINITION,
                            "origin_centring": "subtract"})
    return run, res


def _memory_estimate(d: int, n_train: int, n_test: int, repetitions: int, workers: int
                     ) -> float:
    """Bytes of one grid point (training set, weights, d x d Jacobians and their SVD
    workspace, float64) times the points running at once."""
    per_point = 8.0 * (3 * n_train * d + 4 * (n_test + repetitions + 2) * d * d
                       + 2 * n_train * n_test)
    return per_point * max(1, workers)


def register(app: typer.Typer) -> None:
    @app.command("spectra")
    def spectra_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        d: Annotated[int, typer.Option(min=2, help="Ambient dimension.")] = 30,
        dims: Annotated[str, typer.Option(help="Subspace dimensions.")] = "2,5",
        stds: Annotated[str, typer.Option(help="Subspace standard deviations.")] = "1,0.3",
        residual_std: Annotated[float, typer.Option("--residual-std", min=0.0)] = 0.01,
        normalized: Annotated[bool, typer.Option(help="Unit-norm samples (the paper's).")
                              ] = True,
        n_train: Annotated[int, typer.Option("--n-train", min=2)] = 1000,
        schedule: Annotated[str, typer.Option(help="VE, VP, DDPM or GeometricVE.")] = "VE",
        t_min: Annotated[float, typer.Option("--t-min")] = 1e-4,
        t_max: Annotated[float, typer.Option("--t-max")] = 1.0,
        n_times: Annotated[int, typer.Option("--n-times", min=2)] = 40,
        repetitions: Annotated[int, typer.Option(min=1, help="Origin-estimator draws.")] = 5,
        n_test: Annotated[int, typer.Option("--n-test", min=1, help="Fresh points per set.")
                          ] = 32,
        replicates: Annotated[int, typer.Option(min=1, help="Independent training sets.")
                              ] = 3,
        seed: SeedOption = 0,
        quick: QuickOption = False,
        workers: WorkersOption = 2,
        scheduler: SchedulerOption = None,
        dask_workers: DaskWorkersOption = None,
    ) -> None:
        """Figure 4: published theory, REM and measured Jacobian singular values versus t.

        --quick: n-train 200, n-times 5, repetitions 2, n-test 4,
        replicates 2, except for sizes given explicitly."""
        dim_list = parse_ints("--dims", dims)
        std_list = parse_floats("--stds", stds)
        if not (0 < t_min < t_max):
            raise bad_option("--t-min/--t-max", f"need 0 < t_min < t_max, got {t_min}, {t_max}")
        sizes = quick_sizes(ctx, quick, {"n_train": 200, "n_times": 5, "repetitions": 2,
                                         "n_test": 4, "replicates": 2})
        n_train, n_times, repetitions, n_test, replicates = (
            sizes[k] for k in ("n_train", "n_times", "repetitions", "n_test", "replicates"))
        check_memory("--d/--n-train/--n-test", _memory_estimate(d, n_train, n_test, repetitions,
                                                                1 if scheduler else workers),
                     f"spectra at d={d}, N={n_train}, n-test={n_test}")
        model = checked("--d/--dims/--stds", LinearManifold, d, dim_list, stds=std_list,
                        residual_std=residual_std, normalized=normalized)
        sched = checked("--schedule", get_schedule, schedule)
        ts = np.geomspace(t_min, t_max, n_times)
        checked("--t-min/--t-max", sched.check_time, ts, "t")
        executor = cli_executor(workers, scheduler, dask_workers)
        with executor:
            run_spectra(out or default_out(COMMAND), model=model, n_train=n_train,
                        schedule=schedule, t_values=ts, repetitions=repetitions, n_test=n_test,
                        replicates=replicates, seed=seed, executor=executor)

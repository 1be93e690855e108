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
dimensions by the gap criterion of :mod:`geomem.validation.measurements` (theory: the
boundaries of :func:`geomem.theory.phase.phase_diagram`; MC: the measured retained dimension).
A second figure (``retained``) shows the retained dimension per subspace versus t for every
source, including a fifth one, ``fresh_mean``: the gap of the Jacobian *averaged* over the
fresh test points and training sets (the REM predicts this mean, not a single point's
Jacobian, which is low-rank once the weights condense on a few training points).

Outputs: ``spectra.png/.pdf``, ``retained.png/.pdf``, ``spectra.csv`` (source, t, rank,
sigma, Delta*sigma), ``retained.csv`` (source, t, subspace, mean with 95% CI),
``gap_loss.csv`` (source, subspace, t_loss with the 95% CI of the geometric mean over
training sets), ``record.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from ..theory.manifold import LinearManifold
from ..theory.schedules import Schedule, get_schedule
from ._common import (
    EXECUTOR_OPTIONS,
    bad_option,
    checked,
    default_out,
    mean_ci,
    parse_floats,
    parse_ints,
    pyplot,
    summarize,
)
from .executors import (
    DaskWorkersOption,
    SchedulerOption,
    WorkersOption,
    make_executor,
    run_grid,
)
from .measurements import (
    effective_subspace_variances,
    fresh_protocol,
    fresh_test_points,
    mean_jacobian_retained,
    origin_protocol,
    rem_retained_dimension,
)
from .records import RunOutput

__all__ = ["crossing_time", "register", "run_spectra", "spectra_point", "theory_gap_loss",
           "theory_retained"]

#: bump when a grid point's result layout changes, so stale caches are not reused
RESULT_FORMAT = 1
COMMAND = "spectra"
#: entropy tag of the training-set stream (kept apart from the per-grid-point streams)
TRAIN_STREAM = 1
SOURCES = ("published", "rem", "origin", "fresh", "fresh_mean")
#: sources measured by Monte Carlo (with per-replicate confidence intervals)
MC_SOURCES = ("origin", "fresh", "fresh_mean")
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

    Returns ``origin_sv`` (d,), ``origin_retained`` (repetitions x K), ``fresh_sv`` (B x d),
    ``fresh_retained`` (B x K); singular values descending, in 1/(data units)^2.
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
    return {"origin_sv": origin["sv"].tolist(), "origin_retained": origin["retained"].tolist(),
            "fresh_sv": fresh["sv"].tolist(), "fresh_retained": fresh["retained"].tolist(),
            "fresh_mean_blocks": [b.tolist() for b in fresh["mean_blocks"]]}


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


def crossing_time(t: np.ndarray, retained: np.ndarray, level: float) -> float:
    """Largest t at which ``retained`` (scanned from large t down) first drops below ``level``.

    Linear interpolation in ln t between the bracketing grid points; NaN if it never drops,
    or if it is below the level already at the largest t.
    """
    t = np.asarray(t, dtype=np.float64)
    r = np.asarray(retained, dtype=np.float64)
    order = np.argsort(t)[::-1]
    t, r = t[order], r[order]
    below = np.flatnonzero(r < level)
    if below.size == 0 or not np.isfinite(r).all():
        return float("nan")
    j = int(below[0])
    if j == 0:
        return float("nan")
    lt0, lt1, r0, r1 = np.log(t[j - 1]), np.log(t[j]), r[j - 1], r[j]
    frac = (r0 - level) / (r0 - r1) if r0 != r1 else 0.0
    return float(np.exp(lt0 + frac * (lt1 - lt0)))


def assemble(points: list[dict], results: list[dict], model: LinearManifold, ts: np.ndarray,
             n_train: int, schedule: Schedule) -> dict[str, Any]:
    """Curves (T, d) per source, retained summaries, gap-loss times."""
    from ..theory.predictions import predicted_singular_values

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
    by_t: dict[int, list[int]] = {}
    for i, p in enumerate(points):
        by_t.setdefault(p["t_index"], []).append(i)
    origin_sv, fresh_sv = np.zeros((T, model.d)), np.zeros((T, model.d))
    retained_rows = []
    mc_retained = {"origin": np.zeros((T, K)), "fresh": np.zeros((T, K))}
    for ti in range(T):
        idx = by_t[ti]
        origin_sv[ti] = np.mean([results[i]["origin_sv"] for i in idx], axis=0)
        fresh_all = np.concatenate([np.asarray(results[i]["fresh_sv"]) for i in idx])
        fresh_sv[ti] = np.median(fresh_all, axis=0)
        for source in ("origin", "fresh"):
            vals = [np.asarray(results[i][f"{source}_retained"], dtype=float) for i in idx]
            groups = np.concatenate([np.full(len(v), j) for j, v in enumerate(vals)])
            vals = np.concatenate(vals)
            for k in range(K):
                s = summarize(vals[:, k], groups)
                mc_retained[source][ti, k] = s["mean"]
                retained_rows.append({"source": source, "t": ts[ti], "subspace": k,
                                      "dim": model.dims[k], "retained_mean": s["mean"],
                                      "ci_low": s["ci_low"], "ci_high": s["ci_high"]})
    curves["origin"], curves["fresh"] = origin_sv, fresh_sv
    # the mean Jacobian over test points and training sets (what the REM predicts)
    mean_counts = np.zeros((T, K))
    for ti in range(T):
        idx = by_t[ti]
        a, dl = float(schedule.a(ts[ti])), float(delta[ti])
        pooled = [np.mean([results[i]["fresh_mean_blocks"][k] for i in idx], axis=0)
                  for k in range(K)]
        mean_counts[ti] = mean_jacobian_retained(pooled, model, a, dl)
        for k in range(K):
            # no CI: per-training-set means (n_test points each) of this heavy-tailed Jacobian
            # are much noisier than the pooled mean, so they do not bracket it
            retained_rows.append({"source": "fresh_mean", "t": ts[ti], "subspace": k,
                                  "dim": model.dims[k], "retained_mean": mean_counts[ti, k],
                                  "ci_low": None, "ci_high": None})
    mc_retained["fresh_mean"] = mean_counts
    th = theory_retained(model, ts, n_train, schedule)
    for source in ("published", "rem"):
        for ti in range(T):
            for k in range(K):
                retained_rows.append({"source": source, "t": ts[ti], "subspace": k,
                                      "dim": model.dims[k],
                                      "retained_mean": th[source][ti, k], "ci_low": None,
                                      "ci_high": None})
    retained = {**th, **mc_retained}
    gap_loss = {s: [crossing_time(ts, retained[s][:, k], model.dims[k] / 2) for k in range(K)]
                for s in MC_SOURCES}
    gap_loss.update(theory_gap_loss(model, [n_train], ts, schedule))
    gap_loss = {source: list(gap_loss[source][0]) if source in ("published", "rem")
                else gap_loss[source] for source in SOURCES}
    gap_ci = {s: [(float("nan"), float("nan"))] * K for s in SOURCES}
    for source in ("origin", "fresh"):
        # per-replicate gap-loss times -> 95% CI of the geometric mean over training sets
        reps = sorted({p["replicate"] for p in points})
        per_rep = np.full((len(reps), T, K), np.nan)
        for i, p in enumerate(points):
            per_rep[reps.index(p["replicate"]), p["t_index"]] = np.mean(
                np.asarray(results[i][f"{source}_retained"], dtype=float), axis=0)
        log_tl = np.log([[crossing_time(ts, per_rep[r, :, k], model.dims[k] / 2)
                          for k in range(K)] for r in range(len(reps))])
        gap_ci[source] = [tuple(np.exp(mean_ci(log_tl[:, k])[1:])) for k in range(K)]
    spectra_rows = [{"source": s, "t": ts[ti], "rank": r + 1, "sigma": curves[s][ti, r],
                     "delta_sigma": delta[ti] * curves[s][ti, r]}
                    for s in curves for ti in range(T) for r in range(model.d)]
    gap_rows = [{"source": s, "subspace": k, "dim": model.dims[k],
                 "std": model.stds[k], "t_loss": gap_loss[s][k],
                 "t_loss_ci_low": gap_ci[s][k][0], "t_loss_ci_high": gap_ci[s][k][1]}
                for s in SOURCES for k in range(K)]
    return {"curves": curves, "retained": retained, "gap_loss": gap_loss,
            "spectra_rows": spectra_rows, "retained_rows": retained_rows, "gap_rows": gap_rows}


_SUBSPACE_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange")


def _figures(res: dict, model: LinearManifold, ts: np.ndarray, n_train: int,
             schedule: Schedule):
    plt = pyplot()
    delta = schedule.delta(ts)
    panels = SOURCES[:4]  # the mean Jacobian appears in the retained-dimension figure
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.9), sharey=True, constrained_layout=True)
    for ax, source in zip(axes, panels, strict=True):
        vals = delta[:, None] * res["curves"][source]
        ax.plot(ts, vals, color="0.25", lw=0.8)
        for k, tl in enumerate(res["gap_loss"][source]):
            what = f"subspace {k + 1} (m={model.dims[k]}, std {model.stds[k]:g})"
            if np.isfinite(tl):
                ax.axvline(tl, color=_SUBSPACE_COLORS[k % 5], ls="--", lw=1.2,
                           label=f"{what} gap lost t={tl:.2g}")
            else:
                ax.plot([], [], color=_SUBSPACE_COLORS[k % 5], ls=":",
                        label=f"{what}: " + ("no theory" if np.all(np.isnan(
                            res["curves"][source])) else "gap never lost in range"))
        ax.set_xscale("log")
        ax.set_title(SOURCE_TITLES[source], fontsize=9)
        ax.set_xlabel(f"t ({schedule.name})")
        ax.legend(fontsize=6, loc="lower left")
    axes[0].set_ylabel("Delta(t) * singular value")
    axes[0].set_ylim(0, 1.6)
    fig.suptitle(f"Empirical-score Jacobian spectra, d={model.d}, dims={model.dims}, "
                 f"stds={model.stds}, N={n_train}, normalized={model.normalized}; "
                 "dashed: gap lost (half the subspace's dimensions)", fontsize=9)
    fig2, axes2 = plt.subplots(1, model.n_subspaces, figsize=(5 * model.n_subspaces, 3.6),
                               constrained_layout=True)
    styles = {"published": "k--", "rem": "k-", "origin": "o-", "fresh": "s-",
              "fresh_mean": "^-"}
    for k, ax in enumerate(np.atleast_1d(axes2)):
        for source in SOURCES:
            ax.plot(ts, res["retained"][source][:, k], styles[source], ms=3,
                    label=SOURCE_TITLES[source])
        ax.set_xscale("log")
        ax.set_ylim(-0.2, model.dims[k] + 0.2)
        ax.set_title(f"subspace {k + 1}: m={model.dims[k]}, std {model.stds[k]:g}", fontsize=9)
        ax.set_xlabel(f"t ({schedule.name})")
        ax.set_ylabel("retained dimension")
    np.atleast_1d(axes2)[0].legend(fontsize=7)
    fig2.suptitle(f"Retained dimension per subspace (gap criterion), N={n_train}", fontsize=9)
    return fig, fig2


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
    fig, fig2 = _figures(res, model, ts, n_train, sched)
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
                            "gap_loss": res["gap_loss"]})
    return run, res


def register(app: typer.Typer) -> None:
    @app.command("spectra")
    def spectra_cmd(
        out: Annotated[Path | None, typer.Option(help="Output folder.")] = None,
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
        seed: Annotated[int, typer.Option(min=0)] = 0,
        quick: Annotated[bool, typer.Option(help="Tiny sizes (tests).")] = False,
        workers: WorkersOption = 2,
        scheduler: SchedulerOption = None,
        dask_workers: DaskWorkersOption = None,
    ) -> None:
        """Figure 4: published theory, REM and measured Jacobian singular values versus t."""
        dim_list = parse_ints("--dims", dims)
        std_list = parse_floats("--stds", stds)
        if not (0 < t_min < t_max):
            raise bad_option("--t-min/--t-max", f"need 0 < t_min < t_max, got {t_min}, {t_max}")
        if quick:
            n_train, n_times, repetitions, n_test, replicates = 200, 5, 2, 4, 2
        model = checked("--d/--dims/--stds", LinearManifold, d, dim_list, stds=std_list,
                        residual_std=residual_std, normalized=normalized)
        sched = checked("--schedule", get_schedule, schedule)
        ts = np.geomspace(t_min, t_max, n_times)
        checked("--t-min/--t-max", sched.check_time, ts, "t")
        executor = checked(EXECUTOR_OPTIONS, make_executor, workers, scheduler, dask_workers)
        with executor:
            run_spectra(out or default_out(COMMAND), model=model, n_train=n_train,
                        schedule=schedule, t_values=ts, repetitions=repetitions, n_test=n_test,
                        replicates=replicates, seed=seed, executor=executor)

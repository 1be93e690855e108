"""``geomem large-d``: single-point dimension loss as d grows at fixed alpha = ln N / d.

Geometry (rem-check / Figure-4 proportions): subspaces of dimension ``round(d/15)`` and
``round(d/6)`` with *stds* 1 and 0.3, no residual, un-normalised (Gaussian training points),
``N = exp(alpha d)`` (default alpha = 0.23, the Figure-4 ratio ln 1000 / 30; N = 1000 at
d = 30 and ~5e299 at d = 3000), VP and VE, fresh test points x ~ p_t.

Per (d, schedule, t): ``replicates x per_replicate`` independent draws of (training set, test
point) by :func:`geomem.numerics.sample_empirical_jacobians` -- exact per-point Jacobians at any
N (the head drawn exactly, the tail replaced by its conditional means with relative error
``<= tol``). Quantities, per tangent subspace k:

- **per point**: the retained fraction ``retained_k / m_k`` of the Jacobian at one point
  (:mod:`geomem.numerics.retained`, "projection", threshold 1/2), averaged over the
  ``per_replicate`` draws of a replicate; the replicate curves give the mean with a 95%
  t-interval and the gap-loss time (:func:`~geomem.validation._common.gap_loss_statistics`,
  level 1/2: the t where half of the subspace is lost). Draws at different t are independent,
  so a replicate curve is a mean over fresh draws at each t, not one training set followed in t.
- **mean Jacobian**: the gap fraction :func:`geomem.theory.phase.gap_fraction` of
  ``E[J]`` on subspace k, ``-1/Delta + (a^2/Delta^2) E[tr P_k C_w P_k]/m_k`` (E[J] is a
  multiple of the identity on each subspace by symmetry). Its loss time is the crossing of 1/2;
  the CI is where the curves at the ends of the trace's 95% interval cross, widened to half a
  grid step either side.
- **exact**: the same mean-Jacobian gap fraction from
  :func:`geomem.theory.finite_n_expectations` (fresh x, no Monte Carlo).
- **rem**: the large-d REM, annealed lam*: gap fraction ``lam* (1 + r)/(1 + lam* r)``,
  ``r = a^2 s_k^2 / Delta``, its per-subspace loss times (:func:`phase_diagram`, "rem") and the
  global collapse time t_C (:func:`geomem.theory.collapse_time`), which is the same at every d
  for fixed alpha up to the rounding of the dims.

Outputs: ``large_d.png/.pdf`` (rows: schedules; columns: per-point retained fraction against
t with one colour per d and t_C marked; mean-Jacobian gap fraction, MC / exact / REM;
gap-loss time over t_C against d with 95% CIs), ``large_d.csv`` (tidy curves), ``gap_loss.csv``
(times with CIs, censoring counts and the ratio to t_C), ``order.csv`` (paired per-point ratio
t_1/t_2 of the two subspaces' loss times), ``summary.md``, ``record.json``. Grid points are
cached: an interrupted run resumes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from ..theory.manifold import LinearManifold
from ..theory.phase import LOSS_FRACTION, gap_fraction, phase_diagram
from ..theory.rem import annealed_freezing_parameter, collapse_time
from ..theory.schedules import get_schedule
from ._common import (
    bad_option,
    checked,
    crossing_status,
    default_out,
    gap_loss_statistics,
    grid_ratio,
    mean_ci,
    paired_log_ratio,
    parse_ints,
    parse_schedule_names,
    positive_finite,
    pyplot,
)
from ._large_d_plots import large_d_figure, summary_markdown
from .executors import run_grid
from .finite_n import time_grid
from .options import (
    DaskWorkersOption,
    OutOption,
    QuickOption,
    SchedulerOption,
    SeedOption,
    WorkersOption,
    cli_executor,
    quick_sizes,
)
from .records import RunOutput

__all__ = ["large_d_model", "n_train_at", "run_large_d", "sample_point", "exact_point",
           "register"]

#: bump when a grid point's result layout changes, so stale caches are not reused
RESULT_FORMAT = 1
COMMAND = "large-d"
FRACTIONS = (1.0 / 15.0, 1.0 / 6.0)
STDS = (1.0, 0.3)
#: ln N / d of Figure 4 (N = 1000 at d = 30)
DEFAULT_ALPHA = 0.23
#: time ranges: both sides of t_C (VP 0.015, VE 0.031 at alpha = 0.23), from below the mean
#: Jacobian's gap loss at d = 30 (~1e-3, docs/findings.md section 1) to every gap kept
DEFAULT_RANGES = {"VP": (1e-3, 0.1), "VE": (2e-3, 0.2)}
#: 1% tail error: the retained counts at 1e-2 and 1e-3 agree within their Monte Carlo error
#: (tests/test_large_d.py), and 1e-3 needs heads beyond 16384 points just above t_C at
#: d = 300-1000
DEFAULT_TOL = 1e-2
DEFAULT_MAX_HEAD = 16384
QUICK = {"ds": [30, 100], "per_decade": 1.5, "replicates": 3, "per_replicate": 4}


def large_d_model(d: int) -> LinearManifold:
    """Subspaces round(d/15), round(d/6) (each >= 1) with stds (1, 0.3), un-normalised."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 2:
        raise ValueError(f"d out of range: allowed integers d >= 2, got {d!r}")
    dims = tuple(max(1, int(round(f * d))) for f in FRACTIONS)
    if sum(dims) > d:
        raise ValueError(f"d out of range: the subspaces {dims} do not fit in d = {d}")
    return LinearManifold(int(d), dims, stds=STDS)


def n_train_at(d: int, alpha: float) -> float:
    """N = exp(alpha d), rounded to an integer (exactly representable beyond 2^53)."""
    from ..numerics.large_n import MAX_N_TRAIN

    log_n = alpha * d
    if not (math.log(2.0) <= log_n <= math.log(MAX_N_TRAIN)):
        raise ValueError(f"alpha out of range: need 2 <= exp(alpha d) <= {MAX_N_TRAIN:g} "
                         f"(alpha * d in [0.69, 690.8]), got alpha * d = {log_n:g} at d = {d}")
    n = math.exp(log_n)
    return float(round(n)) if n < 2.0**53 else n


# ----------------------------------------------------------------------------- grid tasks
def sample_point(point: dict[str, Any], seed: np.random.SeedSequence) -> dict[str, Any]:
    """Per-point Monte Carlo at one (d, schedule, t): per-draw retained dims, traces,
    sum w^2, head sizes and tail errors (lists), or ``{"refused": message}`` where the
    sampler cannot reach ``tol`` within ``max_head`` points."""
    from ..numerics.large_n import sample_empirical_jacobians

    model = large_d_model(int(point["d"]))
    draws = int(point["replicates"]) * int(point["per_replicate"])
    try:
        res = sample_empirical_jacobians(model, float(point["t"]), float(point["n_train"]),
                                         point["schedule"], draws=draws,
                                         seed=np.random.default_rng(seed), tol=point["tol"],
                                         max_head=int(point["max_head"]))
    except ValueError as err:
        return {"refused": str(err)}
    return {"retained": res.retained_dimension.tolist(),
            "traces": res.subspace_traces.tolist(), "sum_w2": res.sum_w2.tolist(),
            "head_size": res.head_size.tolist(), "tail_error": res.tail_error.tolist()}


def exact_point(point: dict[str, Any], seed: np.random.SeedSequence) -> dict[str, Any]:
    """Exact finite-N fresh-point expectations at one (d, schedule, t) (deterministic)."""
    from ..theory.finite_n import finite_n_expectations

    model = large_d_model(int(point["d"]))
    res = finite_n_expectations(model, float(point["t"]), float(point["n_train"]),
                                point["schedule"], x="fresh")
    return {"traces": np.asarray(res.subspace_trace, dtype=float).tolist(),
            "sum_w2": float(res.sum_w2)}


# ----------------------------------------------------------------------------- analysis
def _mean_gap_fraction(traces, model, a, delta, k):
    """Gap fraction of the mean Jacobian on subspace k from mean traces (any shape).

    Signed: the eigenvalue's negative, not its absolute value, so the fraction increases with
    the trace even where a heavy-tailed Monte Carlo mean (or its interval's end) pushes the
    eigenvalue above 0 (the exact E[J] is negative definite; there both agree)."""
    value = 1.0 / delta - (a * a / delta**2) * np.asarray(traces) / model.dims[k]
    return gap_fraction(value, a, delta, model.stds[k] ** 2)


def band_crossing(t: np.ndarray, low: np.ndarray, mid: np.ndarray, high: np.ndarray,
                  level: float) -> tuple[float, float, float, str]:
    """Crossing of ``mid`` at ``level`` and its interval from the band (low, high) (each (T,),
    increasing with t): the high curve crosses first in t, the low one last; widened to half a
    grid step either side. Returns (t, ci_low, ci_high, status of mid)."""
    t_mid, status = crossing_status(t, mid, level)
    if not math.isfinite(t_mid):
        return t_mid, math.nan, math.nan, status
    half = math.sqrt(grid_ratio(t))
    t_first, _ = crossing_status(t, high, level)   # NaN: the band leaves the grid (unbounded)
    t_last, _ = crossing_status(t, low, level)
    ci_low = min(t_first, t_mid / half) if math.isfinite(t_first) else math.nan
    ci_high = max(t_last, t_mid * half) if math.isfinite(t_last) else math.nan
    return t_mid, ci_low, ci_high, status


def analyse(configs, ts, samples, exact, alpha, replicates):
    """Tidy curves, gap-loss rows and order rows from the grid results (see module doc)."""
    curve_rows, loss_rows, order_rows = [], [], []
    for (d, sched), idx in configs.items():
        model, schedule, t = large_d_model(d), get_schedule(sched), np.asarray(ts[sched])
        n = n_train_at(d, alpha)
        a, delta = schedule.a(t), schedule.delta(t)
        t_collapse = float(collapse_time(model, n, schedule))
        rem_lam = np.asarray(annealed_freezing_parameter(model, t, n, schedule), float)
        rem_loss = phase_diagram(model, [n], t, schedule, method="rem").subspace_boundary[0]
        res = [samples[i] for i in idx]
        refused = [r.get("refused") is not None for r in res]
        K, R = model.n_subspaces, replicates
        base = {"d": d, "schedule": sched, "log10_n_train": math.log10(n)}
        per_rep = []
        for ti, r in enumerate(res):
            if refused[ti]:
                per_rep.append(None)
                continue
            ret = np.asarray(r["retained"]) / np.asarray(model.dims)
            per_rep.append({"retained": ret.reshape(R, -1, K).mean(1),
                            "traces": np.asarray(r["traces"]).reshape(R, -1, K).mean(1),
                            "head": np.asarray(r["head_size"]),
                            "tail_error": float(np.max(r["tail_error"]))})
        nan_rep = {"retained": np.full((R, K), np.nan), "traces": np.full((R, K), np.nan),
                   "head": np.array([np.nan]), "tail_error": math.nan}
        per_rep = [p if p is not None else nan_rep for p in per_rep]
        retained = np.stack([p["retained"] for p in per_rep], 1)   # (R, T, K)
        traces = np.stack([p["traces"] for p in per_rep], 1)
        crossings = []
        for k in range(K):
            sub = {**base, "subspace": k + 1, "dim": model.dims[k], "std": model.stds[k]}
            band = np.array([mean_ci(traces[:, ti, k]) for ti in range(len(t))])  # (T, 3)
            # (low, mid, high): the gap fraction increases with the trace
            gf = {"mean_jacobian": [_mean_gap_fraction(band[:, j], model, a, delta, k)
                                    for j in (1, 0, 2)]}
            ex = [exact[i] for i in idx]
            gf["exact"] = [_mean_gap_fraction([e["traces"][k] for e in ex], model, a, delta,
                                              k)] * 3
            r_k = a * a * model.stds[k] ** 2 / delta
            gf["rem"] = [rem_lam * (1 + r_k) / (1 + rem_lam * r_k)] * 3
            for ti in range(len(t)):
                mean, lo, hi = mean_ci(retained[:, ti, k])
                p = per_rep[ti]
                curve_rows.append({**sub, "t": t[ti], "source": "per_point",
                                   "quantity": "retained_fraction", "value": mean,
                                   "ci_low": lo, "ci_high": hi, "refused": refused[ti],
                                   "head_median": float(np.median(p["head"])),
                                   "head_max": float(np.max(p["head"])),
                                   "tail_error_max": p["tail_error"]})
                for source, (glo, gmid, ghi) in gf.items():
                    mc = source == "mean_jacobian"
                    curve_rows.append({**sub, "t": t[ti], "source": source,
                                       "quantity": "mean_jacobian_gap_fraction",
                                       "value": float(gmid[ti]),
                                       "ci_low": float(glo[ti]) if mc else None,
                                       "ci_high": float(ghi[ti]) if mc else None,
                                       "refused": refused[ti] if mc else False,
                                       "head_median": None, "head_max": None,
                                       "tail_error_max": None})
            st = gap_loss_statistics(t, retained[:, :, k], LOSS_FRACTION)
            crossings.append(st["log_crossings"])
            rows = [{"source": "per_point", "t_loss": st["t_loss"], "ci_low": st["ci_low"],
                     "ci_high": st["ci_high"], "n_replicates": st["n_replicates"],
                     "n_crossed": st["n_crossed"], "n_not_lost": st["n_not_lost"],
                     "n_lost_at_start": st["n_lost_at_start"], "n_invalid": st["n_invalid"]}]
            for source in ("mean_jacobian", "exact"):
                tl, lo, hi, status = band_crossing(t, *gf[source], LOSS_FRACTION)
                if source == "exact":
                    lo, hi = math.nan, math.nan
                rows.append({"source": source, "t_loss": tl, "ci_low": lo, "ci_high": hi,
                             "status": status})
            rows.append({"source": "rem", "t_loss": float(rem_loss[k]), "ci_low": math.nan,
                         "ci_high": math.nan,
                         "status": "crossed" if np.isfinite(rem_loss[k]) else "not_lost"})
            for row in rows:
                loss_rows.append({**sub, "t_collapse": t_collapse,
                                  "ratio_to_collapse": row["t_loss"] / t_collapse, **row})
        pair = paired_log_ratio(crossings[0], crossings[1], grid_ratio(t))
        order_rows.append({**base, "t_collapse": t_collapse, **pair})
    return curve_rows, loss_rows, order_rows


# ----------------------------------------------------------------------------- driver
def run_large_d(out: Path, *, ds: list[int], schedules: list[str], alpha: float,
                t_values: dict[str, list[float]], replicates: int, per_replicate: int,
                tol: float, max_head: int, exact: bool, seed: int, executor: Any = None,
                show_progress: bool = True):
    """Run (resumably), analyse, plot and record; returns (run, curves, losses, order)."""
    for d in ds:
        large_d_model(d)
        n_train_at(d, alpha)          # every geometry and N checked before any work
    schedules = [get_schedule(s).name for s in schedules]
    for s in schedules:
        get_schedule(s).check_time(t_values[s], "t_values")
    run = RunOutput(out, COMMAND)
    points, configs = [], {}
    for d in ds:
        for s in schedules:
            configs[(d, s)] = list(range(len(points), len(points) + len(t_values[s])))
            points += [{"d": d, "schedule": s, "t": t, "n_train": n_train_at(d, alpha)}
                       for t in t_values[s]]
    extra = {"replicates": replicates, "per_replicate": per_replicate, "tol": tol,
             "max_head": max_head}
    # largest d first: the costly points start while both workers are free
    order = sorted(range(len(points)), key=lambda i: -points[i]["d"])
    mc = run_grid(sample_point, [{**points[i], **extra} for i in order], seed=seed, run=run,
                  executor=executor, label=f"{COMMAND} mc", key_extra={"format": RESULT_FORMAT},
                  show_progress=show_progress)
    samples = [None] * len(points)
    for j, i in enumerate(order):
        samples[i] = mc[j]
    if exact:
        exact_res = run_grid(exact_point, points, seed=seed, run=run, executor=executor,
                             label=f"{COMMAND} exact", key_extra={"format": RESULT_FORMAT},
                             show_progress=show_progress)
    else:
        exact_res = [{"traces": [math.nan] * 2, "sum_w2": math.nan}] * len(points)
    curves, losses, order_rows = analyse(configs, t_values, samples, exact_res, alpha,
                                         replicates)
    if not exact:   # no overlay asked for: no rows of NaN placeholders
        curves = [r for r in curves if r["source"] != "exact"]
        losses = [r for r in losses if r["source"] != "exact"]
    run.write_csv("large_d", curves)
    run.write_csv("gap_loss", losses)
    run.write_csv("order", order_rows)
    (run.path / "summary.md").write_text(summary_markdown(losses, order_rows))
    run.files.append("summary.md")
    fig = large_d_figure(curves, losses, ds, schedules)
    run.save_figure(fig, COMMAND.replace("-", "_"))
    pyplot().close(fig)
    n_refused = sum(r.get("refused") is not None for r in mc)
    run.write_record(
        {"ds": ds, "dims": {d: large_d_model(d).dims for d in ds}, "stds": STDS,
         "fractions": FRACTIONS, "alpha": alpha,
         "n_train": {d: n_train_at(d, alpha) for d in ds}, "schedules": schedules,
         "t_values": t_values, "replicates": replicates, "per_replicate": per_replicate,
         "tol": tol, "max_head": max_head, "exact": exact, "threshold": LOSS_FRACTION,
         "retained_definition": "projection", "test_points": "fresh x ~ p_t"},
        seeds={"seed": seed, "grid": "SeedSequence(seed, spawn_key=(index,)) per MC point "
                                     "(points ordered by decreasing d); exact points are "
                                     "deterministic"},
        extra={"executor": getattr(executor, "describe", lambda: {})(),
               "refused_points": n_refused})
    return run, curves, losses, order_rows


def register(app: typer.Typer) -> None:
    @app.command("large-d")
    def large_d_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        ds: Annotated[str, typer.Option("--ds", help="Ambient dimensions d >= 15.")
                      ] = "30,100,300,1000,3000",
        schedules: Annotated[str, typer.Option(help="Comma-separated: VP and/or VE.")
                             ] = "VP,VE",
        alpha: Annotated[float, typer.Option(help="ln N / d, fixed across d.")
                         ] = DEFAULT_ALPHA,
        per_decade: Annotated[float, typer.Option("--per-decade", help="Times per decade.")
                              ] = 10.0,
        replicates: Annotated[int, typer.Option(min=2, help="Replicates R per (d, t).")] = 8,
        per_replicate: Annotated[int, typer.Option(
            "--per-replicate", min=1, help="Draws per replicate (training set + point each).")
        ] = 12,
        tol: Annotated[float, typer.Option(help="Tail error bound, in (0, 1).")
                       ] = DEFAULT_TOL,
        max_head: Annotated[int, typer.Option("--max-head", min=1, help="Most points drawn "
                                              "per training set.")] = DEFAULT_MAX_HEAD,
        exact: Annotated[bool, typer.Option(help="Overlay the exact finite-N theory.")
                         ] = True,
        seed: SeedOption = 0,
        quick: QuickOption = False,
        workers: WorkersOption = 2,
        scheduler: SchedulerOption = None,
        dask_workers: DaskWorkersOption = None,
    ) -> None:
        """Per-point and mean-Jacobian gap loss against d at fixed alpha, vs REM and exact.

        --quick: d = 30, 100, first schedule, 1.5 times per decade, 3 x 4 draws, except for
        sizes given explicitly."""
        d_list = parse_ints("--ds", ds, minimum=15, distinct=True)
        names = parse_schedule_names("--schedules", schedules, tuple(DEFAULT_RANGES))
        if not (0.0 < tol < 1.0):
            raise bad_option("--tol", f"allowed 0 < tol < 1, got {tol!r}")
        positive_finite("--per-decade", per_decade)
        positive_finite("--alpha", alpha)
        sizes = quick_sizes(ctx, quick, {"ds": None, "schedules": None,
                                         "per_decade": QUICK["per_decade"],
                                         "replicates": QUICK["replicates"],
                                         "per_replicate": QUICK["per_replicate"]})
        if sizes["ds"] is None:
            d_list = QUICK["ds"]
        names = names if sizes["schedules"] is not None else names[:1]
        for d in d_list:
            checked("--ds", large_d_model, d)
            checked("--alpha", n_train_at, d, alpha)
        t_values = {s: checked(f"--schedules ({s} times)", time_grid, *DEFAULT_RANGES[s],
                               per_decade=sizes["per_decade"]) for s in names}
        executor = cli_executor(workers, scheduler, dask_workers)
        with executor:
            _, _, losses, order_rows = run_large_d(
                out or default_out(COMMAND), ds=d_list, schedules=names, alpha=alpha,
                t_values=t_values, replicates=sizes["replicates"],
                per_replicate=sizes["per_replicate"], tol=tol, max_head=max_head,
                exact=exact, seed=seed, executor=executor)
        typer.echo(summary_markdown(losses, order_rows))

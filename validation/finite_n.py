"""``geomem finite-n``: exact finite-N theory versus Monte Carlo and the large-d REM.

Geometries: the Figure-4 linear manifold at d = 30 -- subspaces of dimension 2 and 5 with
*stds* 1 and 0.3, no residual, un-normalised (Gaussian training points) -- and the same
fractions of d at other d (``round(2 d/30)``, ``round(5 d/30)``: (7, 17) at d = 100). Each under
every schedule asked for (VP and VE), N = 1000, fresh test points x ~ p_t, t log-spaced over a
range that runs from generalization (E[sum w^2] ~ 1/N) to deep memorization (E[sum w^2] ~ 1).

Quantities per (geometry, schedule, t):

- ``sum_w2``      E[sum_mu w_mu^2] (inverse participation ratio; 1/N <= . <= 1);
- ``jac_scaled``  per subspace k, Delta * (mean eigenvalue of E[J] on subspace k)
                  = -1 + (a^2/Delta) E[tr P_k C_w P_k] / m_k (population value
                  -Delta/(Delta + a^2 s_k^2), fully memorized value -1 for a single point).

Three sources:

- *exact*: :func:`geomem.theory.finite_n.finite_n_expectations` with ``x="fresh"`` (no Monte
  Carlo; ``--n-nodes`` Gauss-Laguerre nodes per energy group, default the module's own);
- *REM* (THEORY §5b, large d): ``E[sum w^2] = 1 - lam*`` and
  ``Delta E[J]_k = -Delta/(Delta + lam* a^2 s_k^2)``, with lam* either *quenched*
  (``freezing_parameter(x=None)``: lam*(x) averaged over fresh x, then plugged in) or
  *annealed* (``annealed_freezing_parameter``);
- *MC*: R independent training sets x B fresh test points per t
  (:func:`geomem.numerics.empirical.weight_statistics`); mean with a 95% t-interval over the R
  replicate means (test points sharing a training set are correlated), median and 5/25/75/95%
  quantiles over all R*B points (E[J] is heavy tailed: rare near-ties of two energies).

Pass criterion per (geometry, schedule, t, quantity): the exact value lies inside the MC 95%
interval; ``deviation`` = |exact - MC mean| / half-width (<= 1 passes; about 5% of honest
comparisons fail by chance, so the summary also reports the coverage with a binomial p-value).
The REM's relative discrepancy ``(REM - exact)/|exact|`` is reported, and flagged where it
exceeds 20% while the exact theory passes.

Outputs: ``finite_n.png/.pdf`` (one row per (geometry, schedule); columns E[sum w^2] and
Delta E[J]_k; exact solid, REM dashed (quenched) / dotted (annealed), MC mean with 95% CI as
points, MC median as crosses), ``finite_n.csv`` (tidy: one row per comparison),
``summary.csv`` and ``summary.md`` (per geometry/schedule/quantity: coverage, worst deviation,
largest REM discrepancy), ``record.json``. Grid points (one exact evaluation, or one MC block
of R x B, per (geometry, schedule, t)) are cached, so an interrupted run resumes and writes
byte-identical CSVs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from ..theory.manifold import LinearManifold
from ..theory.schedules import get_schedule
from ._common import (
    CI_LEVEL,
    bad_option,
    checked,
    default_out,
    parse_floats,
    parse_ints,
    parse_schedule_names,
    positive_finite,
    pyplot,
    summarize,
)
from ._finite_n_tables import (
    REM_TOLERANCE,
    SUMMARY_COLUMNS,
    compare_rows,
    markdown_table,
    rem_values,
    summary_markdown,
    summary_rows,
)
from .executors import run_grid
from .measurements import fresh_test_points
from .options import (
    DaskWorkersOption,
    OutOption,
    SchedulerOption,
    SeedOption,
    WorkersOption,
    cli_executor,
    quick_sizes,
)
from .records import RunOutput

__all__ = [
    "REM_TOLERANCE",
    "compare_rows",
    "exact_point",
    "finite_n_model",
    "geometry_dims",
    "mc_point",
    "register",
    "rem_values",
    "run_finite_n",
    "summary_rows",
    "time_grid",
]

#: bump when a grid point's result layout changes, so stale caches are not reused
RESULT_FORMAT = 1
COMMAND = "finite-n"
#: the Figure-4 reference geometry: ambient dimension, subspace dims and stds
REFERENCE_D = 30
REFERENCE_DIMS = (2, 5)
STDS = (1.0, 0.3)
#: schedules with a default time range (VP: a = e^-t; VE: Delta = t, so it needs larger t to
#: reach N_eff ~ N): E[sum w^2] goes from ~1/N to ~0.95 (d = 30) / ~0.99 (d = 100) across them
DEFAULT_RANGES = {"VP": (1e-3, 3.0), "VE": (1e-3, 30.0)}
#: significant digits of the grid times (readable CSV and stable cache keys)
TIME_DIGITS = 4
#: points of the dense REM curves in the figure (cheap, vectorised)
REM_CURVE_POINTS = 120
#: quick-mode sizes: few t, tiny MC, 3 Gauss-Laguerre nodes per group (~9 exact nodes)
QUICK = {"n_times": 3, "replicates": 10, "n_test": 20, "n_nodes": 3}


# ----------------------------------------------------------------------------- geometry
def geometry_dims(d: int) -> tuple[int, ...]:
    """Subspace dims at ambient dimension d: the Figure-4 fractions 2/30, 5/30, each >= 1."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 2:
        raise ValueError(f"d out of range: allowed integers d >= 2, got {d!r}")
    return tuple(max(1, int(round(m * d / REFERENCE_D))) for m in REFERENCE_DIMS)


def finite_n_model(d: int) -> LinearManifold:
    """The un-normalised linear manifold at d (dims :func:`geometry_dims`, stds (1, 0.3))."""
    return LinearManifold(d, geometry_dims(d), stds=STDS)


def time_grid(t_min: float, t_max: float, *, per_decade: float | None = None,
              n_times: int | None = None) -> list[float]:
    """Log-spaced times in [t_min, t_max], rounded to TIME_DIGITS significant digits.

    Exactly one of ``per_decade`` (points per decade, the count rounded up) or ``n_times``.
    """
    if not (0 < t_min < t_max and np.isfinite(t_max)):
        raise ValueError(f"time range out of range: need 0 < t_min < t_max < inf, "
                         f"got {t_min!r}, {t_max!r}")
    if (per_decade is None) == (n_times is None):
        raise ValueError("give exactly one of per_decade= or n_times=")
    if n_times is None:
        if not per_decade > 0:
            raise ValueError(f"per_decade out of range: allowed > 0, got {per_decade!r}")
        n_times = int(math.ceil(per_decade * math.log10(t_max / t_min))) + 1
    if n_times < 2:
        raise ValueError(f"n_times out of range: allowed >= 2, got {n_times!r}")
    ts = np.geomspace(t_min, t_max, int(n_times))
    return sorted({float(f"{t:.{TIME_DIGITS}g}") for t in ts})


# ----------------------------------------------------------------------------- grid tasks
def exact_point(point: dict[str, Any], seed: np.random.SeedSequence) -> dict[str, Any]:
    """Exact finite-N expectations at one (d, schedule, t) for fresh test points.

    Deterministic (``seed`` unused). Returns sum_w2, jac (K,) = Delta * mean eigenvalue of E[J]
    per subspace, retained (K,) = E[tr_k C_w]/(m_k * posterior variance) and delta.
    """
    from ..theory.finite_n import finite_n_expectations

    model = finite_n_model(int(point["d"]))
    res = finite_n_expectations(model, float(point["t"]), int(point["n_train"]),
                                point["schedule"], x="fresh", n_nodes=point["n_nodes"])
    return {"sum_w2": float(res.sum_w2),
            "jac": (np.asarray(res.jacobian_eigenvalues) * res.delta).tolist(),
            "retained": np.asarray(res.retained_variance_fraction).tolist(),
            "delta": float(res.delta)}


def mc_point(point: dict[str, Any], seed: np.random.SeedSequence) -> dict[str, Any]:
    """Monte Carlo at one (d, schedule, t): R training sets x B fresh test points.

    Returns ``summarize`` dicts (mean, 95% CI over replicate means, quantiles over all R*B
    points) for sum_w2 and, per subspace, jac = -1 + (a^2/Delta) tr(P_k C_w P_k)/m_k.
    """
    from ..numerics.empirical import weight_statistics

    model = finite_n_model(int(point["d"]))
    schedule = get_schedule(point["schedule"])
    t, n_train = float(point["t"]), int(point["n_train"])
    n_rep, n_test = int(point["replicates"]), int(point["n_test"])
    a, delta = float(schedule.a(t)), float(schedule.delta(t))
    rng = np.random.default_rng(seed)
    bases = [model.subspace_basis(k) for k in range(model.n_subspaces)]
    dims = np.asarray(model.dims, dtype=np.float64)
    sum_w2 = np.empty((n_rep, n_test))
    jac = np.empty((n_rep, n_test, model.n_subspaces))
    for r in range(n_rep):
        Y = model.sample(n_train, rng)
        X = fresh_test_points(model, n_test, a, delta, rng)
        ws = weight_statistics(X, Y, a=a, delta=delta, subspaces=bases)
        sum_w2[r] = ws.sum_w2
        jac[r] = -1.0 + (a * a / delta) * ws.subspace_trace / dims
    groups = np.repeat(np.arange(n_rep), n_test)
    return {"sum_w2": summarize(sum_w2.ravel(), groups),
            "jac": [summarize(jac[:, :, k].ravel(), groups) for k in range(model.n_subspaces)]}


# ----------------------------------------------------------------------------- figure
def _figure(rows: list[dict], configs: list[tuple[int, str]], n_train: int):
    plt = pyplot()
    n_sub = len(REFERENCE_DIMS)
    fig, axes = plt.subplots(len(configs), 1 + n_sub, figsize=(4.2 * (1 + n_sub),
                             3.2 * len(configs)), constrained_layout=True, squeeze=False)
    for row_axes, (d, sched) in zip(axes, configs, strict=True):
        model = finite_n_model(d)
        sel = [r for r in rows if r["d"] == d and r["schedule"] == sched]
        t_grid = sorted({r["t"] for r in sel})
        t_dense = np.geomspace(t_grid[0], t_grid[-1], REM_CURVE_POINTS)
        rem = rem_values(model, t_dense, n_train, sched)
        panels = [("sum_w2", "", "E[sum w^2]", rem["sum_w2_quenched"], rem["sum_w2_annealed"])]
        panels += [("jac_scaled", k, f"Delta E[J], subspace {k + 1} (m={model.dims[k]}, "
                    f"s={model.stds[k]:g})", rem["jac_quenched"][:, k],
                    rem["jac_annealed"][:, k]) for k in range(n_sub)]
        for ax, (quantity, sub, title, rem_q, rem_a) in zip(row_axes, panels, strict=True):
            pts = sorted((r for r in sel if r["quantity"] == quantity and r["subspace"] == sub),
                         key=lambda r: r["t"])
            t = np.array([r["t"] for r in pts])
            mean = np.array([r["mc_mean"] for r in pts])
            err = np.abs(np.array([[r["mc_ci_low"], r["mc_ci_high"]] for r in pts]).T - mean)
            ax.plot(t, [r["exact"] for r in pts], "-", color="C0", lw=1.5, label="exact")
            ax.plot(t_dense, rem_q, "--", color="C3", lw=1.1, label="REM quenched")
            ax.plot(t_dense, rem_a, ":", color="C3", lw=1.1, label="REM annealed")
            ax.errorbar(t, mean, yerr=np.nan_to_num(err), fmt="o", color="k", ms=3,
                        capsize=2, label="MC mean (95% CI)")
            ax.plot(t, [r["mc_q50"] for r in pts], "x", color="0.5", ms=4, label="MC median")
            ax.set_xscale("log")
            if quantity == "sum_w2":
                ax.set_yscale("log")
                ax.axhline(1.0 / n_train, color="0.7", lw=0.8)
                ax.set_ylim(0.5 / n_train, 2.0)
            ax.set_xlabel(f"t ({sched})")
            ax.set_title(f"d={d} {sched}: {title}", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Exact finite-N theory (N = {n_train}) vs Monte Carlo vs large-d REM, "
                 "fresh test points", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- driver
def run_finite_n(out: Path, *, ds: list[int], schedules: list[str],
                 t_values: dict[str, list[float]], n_train: int, replicates: int, n_test: int,
                 n_nodes: int | None, seed: int, executor: Any = None,
                 show_progress: bool = True) -> tuple[RunOutput, list[dict], list[dict]]:
    """Run (resumably), compare, plot and record; returns (run, rows, summary)."""
    for d in ds:
        finite_n_model(d)  # validates the geometry before any work
    t_values = {get_schedule(k).name: sorted(v) for k, v in t_values.items()}
    schedules = [get_schedule(s).name for s in schedules]
    for sched in schedules:
        get_schedule(sched).check_time(t_values[sched], "t_values")
    run = RunOutput(out, COMMAND)
    configs = [(d, get_schedule(s).name) for d in ds for s in schedules]
    points = [{"d": d, "schedule": s, "t": t, "n_train": n_train}
              for d, s in configs for t in sorted(t_values[s])]
    exact = run_grid(exact_point, [{**p, "n_nodes": n_nodes} for p in points], seed=seed,
                     run=run, executor=executor, label=f"{COMMAND} exact",
                     key_extra={"format": RESULT_FORMAT}, show_progress=show_progress)
    mc = run_grid(mc_point, [{**p, "replicates": replicates, "n_test": n_test}
                             for p in points], seed=seed, run=run, executor=executor,
                  label=f"{COMMAND} mc", key_extra={"format": RESULT_FORMAT},
                  show_progress=show_progress)
    rows = compare_rows(points, exact, mc, model_of=finite_n_model)
    summary = summary_rows(rows)
    run.write_csv("finite_n", rows)
    run.write_csv("summary", summary)
    (run.path / "summary.md").write_text(summary_markdown(summary, rows))
    run.files.append("summary.md")
    fig = _figure(rows, configs, n_train)
    run.save_figure(fig, "finite_n")
    pyplot().close(fig)
    overall = summary[-1]
    run.write_record(
        {"ds": ds, "dims": {d: geometry_dims(d) for d in ds}, "stds": STDS,
         "residual_std": 0.0, "normalized": False,
         "schedules": schedules, "t_values": t_values,
         "n_train": n_train, "replicates": replicates, "n_test": n_test, "n_nodes": n_nodes,
         "test_points": "fresh x ~ p_t",
         "rem_tolerance": REM_TOLERANCE, "ci_level": CI_LEVEL},
        seeds={"seed": seed, "grid": "SeedSequence(seed, spawn_key=(index,)) per MC point; "
                                     "exact points are deterministic"},
        extra={"executor": getattr(executor, "describe", lambda: {})(),
               "coverage": {"inside_ci": overall["inside_ci"], "points": overall["points"],
                            "p_value": overall["coverage_p_value"]},
               "worst_deviation": {"value": overall["worst_deviation"],
                                   "at": overall["worst_at"], "t": overall["worst_t"]}})
    return run, rows, summary


def _parse_range(name: str, text: str) -> tuple[float, float]:
    values = parse_floats(name, text)
    if len(values) != 2 or not values[0] < values[1]:
        raise bad_option(name, f"expected 't_min,t_max' with 0 < t_min < t_max, got {text!r}")
    return values[0], values[1]


def register(app: typer.Typer) -> None:
    @app.command("finite-n")
    def finite_n_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        ds: Annotated[str, typer.Option(
            "--ds", help="Ambient dimensions d >= 2; subspace dims round(2d/30), round(5d/30).")
        ] = "30,100",
        schedules: Annotated[str, typer.Option(help="Comma-separated: VP and/or VE.")
                             ] = "VP,VE",
        vp_range: Annotated[str, typer.Option("--vp-range", help="VP times 't_min,t_max'.")
                            ] = "{},{}".format(*DEFAULT_RANGES["VP"]),
        ve_range: Annotated[str, typer.Option("--ve-range", help="VE times 't_min,t_max'.")
                            ] = "{},{}".format(*DEFAULT_RANGES["VE"]),
        per_decade: Annotated[float, typer.Option(
            "--per-decade", help="Log-spaced times per decade.")] = 4.0,
        n_train: Annotated[int, typer.Option(
            "--n-train", min=2, help="Training set size N >= 2 (the REM needs ln N > 0).")
        ] = 1000,
        replicates: Annotated[int, typer.Option(min=2, help="Training sets R per t.")] = 200,
        n_test: Annotated[int, typer.Option("--n-test", min=1, help="Test points B per set.")
                          ] = 100,
        n_nodes: Annotated[int | None, typer.Option(
            "--n-nodes", min=1, help="Gauss-Laguerre nodes per energy group (exact theory; "
                                     "default: the theory module's).")] = None,
        seed: SeedOption = 0,
        quick: Annotated[bool, typer.Option(help="Tiny sizes (a smoke test): first d and "
                                                 "schedule, 3 times, 10 x 20 MC, 3 nodes; "
                                                 "sizes given explicitly win.")] = False,
        workers: WorkersOption = 2,
        scheduler: SchedulerOption = None,
        dask_workers: DaskWorkersOption = None,
    ) -> None:
        """Exact finite-N E(sum w^2) and Delta E(J) per subspace vs Monte Carlo vs the REM."""
        d_list = parse_ints("--ds", ds, minimum=2, distinct=True)
        for d in d_list:
            checked("--ds", finite_n_model, d)
        names = parse_schedule_names("--schedules", schedules, tuple(DEFAULT_RANGES))
        ranges = {"VP": _parse_range("--vp-range", vp_range),
                  "VE": _parse_range("--ve-range", ve_range)}
        positive_finite("--per-decade", per_decade)
        sizes = quick_sizes(ctx, quick, {"ds": None, "schedules": None,
                                         "replicates": QUICK["replicates"],
                                         "n_test": QUICK["n_test"], "n_nodes": QUICK["n_nodes"]})
        d_list = d_list if sizes["ds"] is not None else d_list[:1]
        names = names if sizes["schedules"] is not None else names[:1]
        replicates, n_test, n_nodes = sizes["replicates"], sizes["n_test"], sizes["n_nodes"]
        t_values = {}
        for s in names:
            opt = f"--{s.lower()}-range"
            if quick:
                t_values[s] = checked(opt, time_grid, *ranges[s], n_times=QUICK["n_times"])
            else:
                t_values[s] = checked(opt, time_grid, *ranges[s], per_decade=per_decade)
            checked(opt, get_schedule(s).check_time, t_values[s], "t")
        executor = cli_executor(workers, scheduler, dask_workers)
        with executor:
            _, _, summary = run_finite_n(
                out or default_out(COMMAND), ds=d_list, schedules=names, t_values=t_values,
                n_train=n_train, replicates=replicates, n_test=n_test, n_nodes=n_nodes,
                seed=seed, executor=executor)
        typer.echo(markdown_table(summary, SUMMARY_COLUMNS))
        overall = summary[-1]
        typer.echo(f"worst deviation: {overall['worst_deviation']:.3g} MC half-widths at "
                   f"{overall['worst_at']}, t = {overall['worst_t']:g}; exact inside the MC "
                   f"95% CI at {overall['inside_ci']}/{overall['points']}")

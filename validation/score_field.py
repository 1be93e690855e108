"""``geomem score-field``: the losing-dimensions Figure 3.

A 2D Gaussian with unequal standard deviations (default 1 and 0.25), N training points, and the
exact empirical score drawn as arrows over the empirical density p_t^N at three decreasing noise
levels (increasing inverse noise 1/t). As t decreases the weights first resolve the training
points along the high-variance axis (the density breaks into blobs elongated along the
low-variance axis, arrows point horizontally to training-point columns), then along both.

Quantified per panel (x drawn from p_t^N):

- retained *gap* fraction per axis: the log-gap of the mean Jacobian diagonal,
  -ln|1 - a^2 E[C_w,ii]/Delta| / ln(1 + a^2 s_i^2/Delta) (1 = the Gaussian with the training
  set's variance s_i^2, 0 = condensed: the Jacobian's eigenvalue is back at -1/Delta);
- retained *variance* fraction per axis (mean and 95% CI over test points),
  E_x[C_w,ii(x)] / (s_i^2 Delta / (Delta + a^2 s_i^2));
- the participation ratio N_eff = 1/sum w^2.

The variance fraction of the low-variance axis also shrinks with N_eff at large t (the weights
are one global Gibbs measure, THEORY 5b), so the two measures need not order the axes alike;
the CSV reports both.

Outputs: ``score_field.png/.pdf``, ``score_field.csv`` (grid: t, x1, x2, log density, score),
``axis_retention.csv`` (t, axis, retained fraction with CI), ``record.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from scipy.special import logsumexp

from ..theory.schedules import get_schedule
from ._common import (
    QUANTILES,
    bad_option,
    checked,
    default_out,
    parse_floats,
    pyplot,
    summarize,
)
from .executors import run_grid
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

__all__ = ["register", "score_field_point"]

#: bump when a grid point's result layout changes, so stale caches are not reused
RESULT_FORMAT = 1
COMMAND = "score-field"
#: half-widths of the plotted window in units of each axis' std
WINDOW_STDS = 3.0


def score_field_point(point: dict[str, Any], seed: np.random.SeedSequence) -> dict[str, Any]:
    """Field and condensation statistics at one time ``point["t"]``.

    ``point``: t, schedule, train (N x 2 list), stds (2,), grid (points per axis), n_test.
    Returns the score on a ``grid x grid`` mesh (row-major over x2 then x1), the log density,
    and per-axis retained variance fractions over ``n_test`` points drawn from p_t^N.
    """
    from ..numerics.empirical import empirical_score, weight_statistics

    schedule = get_schedule(point["schedule"])
    t = float(point["t"])
    a, delta = float(schedule.a(t)), float(schedule.delta(t))
    Y = np.asarray(point["train"], dtype=np.float64)
    stds = np.asarray(point["stds"], dtype=np.float64)
    half = WINDOW_STDS * stds
    g = int(point["grid"])
    x1, x2 = np.linspace(-half[0], half[0], g), np.linspace(-half[1], half[1], g)
    mesh = np.stack(np.meshgrid(x1, x2), axis=-1).reshape(-1, 2)  # (g*g, 2), x1 fastest
    score = empirical_score(mesh, Y, a=a, delta=delta)
    sq = ((mesh[:, None, :] - a * Y[None]) ** 2).sum(-1)  # (g*g, N)
    log_density = (logsumexp(-sq / (2 * delta), axis=1) - np.log(len(Y))
                   - np.log(2 * np.pi * delta))

    rng = np.random.default_rng(seed)
    n_test = int(point["n_test"])
    centers = Y[rng.integers(len(Y), size=n_test)]
    X = a * centers + np.sqrt(delta) * rng.standard_normal((n_test, 2))
    axes = [np.eye(2)[:, [0]], np.eye(2)[:, [1]]]
    ws = weight_statistics(X, Y, a=a, delta=delta, subspaces=axes)
    cw = ws.subspace_trace  # (n_test, 2) C_w,ii
    s2 = Y.var(axis=0)
    posterior = s2 * delta / (delta + a * a * s2)
    retained = [summarize(cw[:, i] / posterior[i]) for i in range(2)]
    # log-gap kept by the mean Jacobian diagonal, Delta*E[J_ii] = -1 + a^2 E[C_ii]/Delta,
    # relative to the population gap ln(1 + a^2 s_i^2/Delta) (1 = population, 0 = condensed)
    mean_c = cw.mean(axis=0)
    gap = (-np.log(np.abs(1.0 - a * a * mean_c / delta))
           / np.log1p(a * a * s2 / delta))
    return {"t": t, "a": a, "delta": delta, "x1": x1.tolist(), "x2": x2.tolist(),
            "score": score.tolist(), "log_density": log_density.tolist(),
            "retained": retained, "gap_fraction": gap.tolist(),
            "participation": summarize(np.asarray(ws.participation_ratio))}


def _figure(results: list[dict], Y: np.ndarray, stds: np.ndarray, n_train: int, schedule: str):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.2),
                             constrained_layout=True)
    axes = np.atleast_1d(axes)
    for ax, res in zip(axes, results, strict=True):
        x1, x2 = np.asarray(res["x1"]), np.asarray(res["x2"])
        g = len(x1)
        logp = np.asarray(res["log_density"]).reshape(g, g)
        ax.imshow(np.exp(logp - logp.max()), origin="lower", extent=(x1[0], x1[-1], x2[0], x2[-1]),
                  cmap="Blues", aspect="auto", vmin=0, vmax=1)
        step = max(1, g // 15)
        score = np.asarray(res["score"]).reshape(g, g, 2)[::step, ::step]
        xx, yy = np.meshgrid(x1[::step], x2[::step])
        # Delta * s(x) = a*ybar_w(x) - x: the denoiser's displacement, in data units
        disp = res["delta"] * score
        ax.quiver(xx, yy, disp[..., 0], disp[..., 1], angles="xy", scale_units="xy", scale=2.0,
                  width=0.004, color="k", alpha=0.8)
        ax.plot(res["a"] * Y[:, 0], res["a"] * Y[:, 1], "o", color="crimson", ms=3.5)
        r, gap = res["retained"], res["gap_fraction"]
        ax.set_title(f"t = {res['t']:.3g}, N_eff = {res['participation']['mean']:.2f}\n"
                     f"gap kept x1 {gap[0]:.2f}, x2 {gap[1]:.2f}; "
                     f"var. kept x1 {r[0]['mean']:.2f}, x2 {r[1]['mean']:.2f}", fontsize=9)
        ax.set_xlabel(f"x1 (std {stds[0]:.2g})")
    axes[0].set_ylabel(f"x2 (std {stds[1]:.2g})")
    fig.suptitle(f"Empirical score ({schedule}, N = {n_train}), noise decreasing left to right; "
                 "arrows: half of Delta*s(x) = a*ybar_w(x) - x; red: a*training points; "
                 "shading: p_t^N", fontsize=9)
    return fig


def run_score_field(out: Path, *, n_train: int, stds: list[float], t_values: list[float],
                    schedule: str, grid: int, n_test: int, seed: int, executor: Any = None,
                    show_progress: bool = True) -> RunOutput:
    """Compute (resumably), plot and record the score field; returns the run's outputs."""
    sched = get_schedule(schedule)
    sched.check_time(t_values, "t_values")
    run = RunOutput(out, COMMAND)
    # the training set is shared by all panels: drawn from the root seed, not a grid child
    Y = np.random.default_rng(np.random.SeedSequence(seed)).standard_normal((n_train, 2))
    Y = Y * np.asarray(stds)
    ts = sorted(t_values, reverse=True)
    points = [{"t": t, "schedule": sched.name, "train": Y.tolist(), "stds": stds, "grid": grid,
               "n_test": n_test} for t in ts]
    results = run_grid(score_field_point, points, seed=seed, run=run, executor=executor,
                       label=COMMAND, key_extra={"format": RESULT_FORMAT},
                       show_progress=show_progress)
    field_rows, axis_rows = [], []
    for res in results:
        x1, x2 = res["x1"], res["x2"]
        g = len(x1)
        for j in range(g * g):
            field_rows.append({"t": res["t"], "x1": x1[j % g], "x2": x2[j // g],
                               "log_density": res["log_density"][j],
                               "score1": res["score"][j][0], "score2": res["score"][j][1]})
        for i, r in enumerate(res["retained"]):
            axis_rows.append({"t": res["t"], "axis": i + 1, "std": stds[i],
                              "quantity": "retained_variance_fraction", **r})
            axis_rows.append({"t": res["t"], "axis": i + 1, "std": stds[i],
                              "quantity": "retained_gap_fraction_of_mean_jacobian",
                              "mean": res["gap_fraction"][i]})
        axis_rows.append({"t": res["t"], "axis": "", "std": "", "quantity": "participation_ratio",
                          **res["participation"]})
    run.write_csv("score_field", field_rows)
    columns = ["t", "axis", "std", "quantity", "mean", "ci_low", "ci_high",
               *[f"q{int(round(q * 100)):02d}" for q in QUANTILES]]
    run.write_csv("axis_retention", axis_rows, columns=columns)
    fig = _figure(results, Y, np.asarray(stds), n_train, sched.name)
    run.save_figure(fig, "score_field")
    pyplot().close(fig)
    run.write_record({"n_train": n_train, "stds": stds, "t_values": ts, "schedule": sched.name,
                      "grid": grid, "n_test": n_test},
                     seeds={"seed": seed, "training_set": "SeedSequence(seed)",
                            "test_points": "SeedSequence(seed, spawn_key=(panel index,))"},
                     extra={"executor": getattr(executor, "describe", lambda: {})()})
    return run


def register(app: typer.Typer) -> None:
    @app.command("score-field")
    def score_field_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        n_train: Annotated[int, typer.Option("--n-train", min=2, help="Training points N.")] = 10,
        stds: Annotated[str, typer.Option(help="Stds of the two axes, 'high,low'.")] = "1,0.25",
        t_values: Annotated[str, typer.Option(
            "--t-values", help="Three (or more) diffusion times, comma-separated.")
        ] = "1,0.1,0.01",
        schedule: Annotated[str, typer.Option(help="VE, VP, DDPM or GeometricVE.")] = "VE",
        grid: Annotated[int, typer.Option(min=8, max=400, help="Mesh points per axis.")] = 120,
        n_test: Annotated[int, typer.Option("--n-test", min=2, help="Test points per panel.")
                          ] = 4000,
        seed: SeedOption = 0,
        quick: QuickOption = False,
        workers: WorkersOption = 1,
        scheduler: SchedulerOption = None,
        dask_workers: DaskWorkersOption = None,
    ) -> None:
        """Figure 3: empirical score over the density of a 2D Gaussian at three noise levels.

        --quick: grid 24, n-test 200, except for sizes given explicitly."""
        std_list = parse_floats("--stds", stds)
        if len(std_list) != 2:
            raise bad_option("--stds", f"expected two stds, got {stds!r}")
        ts = parse_floats("--t-values", t_values)
        sched = checked("--schedule", get_schedule, schedule)
        checked("--t-values", sched.check_time, ts, "t")
        executor = cli_executor(workers, scheduler, dask_workers)
        sizes = quick_sizes(ctx, quick, {"grid": 24, "n_test": 200})
        grid, n_test = sizes["grid"], sizes["n_test"]
        with executor:
            run_score_field(out or default_out(COMMAND), n_train=n_train, stds=std_list,
                            t_values=ts, schedule=schedule, grid=grid, n_test=n_test, seed=seed,
                            executor=executor)

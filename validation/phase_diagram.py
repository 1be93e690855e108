"""``geomem phase-diagram``: which tangent subspace is lost where in the (N, t) plane (theory).

For a linear-manifold geometry (default: the losing-dimensions Figure-4 model with the
published theory's residual std, ``LinearManifold.figure4(theory=True)``) the command evaluates
:func:`geomem.theory.phase.phase_diagram` for the published per-direction theory ("paper",
THEORY §5a, VE only) and the large-deviation REM ("rem", §5b) on a log N x log t grid and draws,
per method (rows), the retained fraction of each subspace's spectral gap (columns) with the
subspace's loss boundary t_c,k(N), the REM collapse time t_C(N), and a summary panel with the
number of lost subspaces. The gap is measured on the linear scale by default
(``--gap linear``: ``(1/Delta - sigma_k)/(1/Delta - sigma_k^inf)``, the criterion
:func:`geomem.theory.phase.gap_fraction` / :func:`~geomem.theory.phase.gap_retained` that the
Monte-Carlo measurements share, via :func:`geomem.numerics.retained.subspace_retained_dimension`);
``--gap log`` uses
``ln(1/(Delta sigma_k)) / ln(1/(Delta sigma_k^inf))``, the log scale of the spectrum plots
(see :mod:`geomem.theory.phase`). Under "rem" the two scales differ a lot: on the linear scale
a subspace loses half its gap only at small N, on the log scale at every N.

Outputs in ``--out`` (default ``results/phase-diagram``): ``phase_diagram.png/.pdf``,
``phase_diagram.csv`` (tidy: N, t, subspace, method, condensed, retained_fraction, gap),
``boundaries.csv`` (N, subspace, method, t_c), ``record.json``. Each method's diagram is cached,
so a re-run with the same options only redraws.

The plotting lives in :func:`plot_phase_diagrams` (takes PhaseDiagram objects and returns the
figure and axes) so that Monte-Carlo layers can be added on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from ..theory.manifold import LinearManifold
from ..theory.schedules import VE, Schedule, get_schedule
from ._common import bad_option, checked, default_out, pyplot
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
from .progress import progress
from .records import RunOutput

if TYPE_CHECKING:
    from ..theory.phase import PhaseDiagram

__all__ = ["plot_phase_diagrams", "register", "run_phase_diagram"]

COMMAND = "phase-diagram"
#: bump when the cached PhaseDiagram layout changes, so stale caches are not reused
RESULT_FORMAT = 1
#: grid sizes of the default run and of --quick
DEFAULT_N_GRID, DEFAULT_T_GRID = 200, 200
QUICK_N_GRID, QUICK_T_GRID = 12, 16
#: default axis ranges (N from 10 to 1e6; t spans the Figure-4 transitions under VE and VP)
N_RANGE = (10.0, 1e6)
T_RANGE = (1e-4, 1.0)
SCHEDULE_CHOICES = ("VE", "VP")
# the theory modules are imported when the command runs, so that registering the command never
# breaks the CLI; these mirror geomem.theory.phase.PHASE_METHODS and GAP_SCALES
METHOD_CHOICES = ("auto", "paper", "rem", "both")
GAP_SCALES = ("linear", "log")


def _methods_for(method: str, schedule: Schedule) -> list[str]:
    """'auto' = paper and rem under VE, rem alone otherwise; 'both' insists on paper too."""
    if method == "auto":
        return ["paper", "rem"] if isinstance(schedule, VE) else ["rem"]
    if method == "both":
        return ["paper", "rem"]
    return [method]


def plot_phase_diagrams(diagrams: Sequence[PhaseDiagram], title: str | None = None):
    """Figure with one row per diagram: retained gap fraction of each subspace (heat map, with
    the subspace's loss boundary t_c,k(N) solid and the REM collapse time t_C(N) dashed) and a
    last panel counting the lost subspaces. Axes: N (log, x) and t (log, y).

    Returns ``(fig, axes)`` with axes of shape (len(diagrams), K + 1).
    """
    plt = pyplot()
    n_rows = len(diagrams)
    n_sub = diagrams[0].n_subspaces
    fig, axes = plt.subplots(n_rows, n_sub + 1, figsize=(4.0 * (n_sub + 1), 3.4 * n_rows),
                             squeeze=False, constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, diag in zip(axes, diagrams, strict=True):
        n, t = diag.n_train, diag.t
        for k in range(n_sub):
            ax = row[k]
            mesh = ax.pcolormesh(n, t, diag.retained_fraction[:, :, k].T, vmin=0.0, vmax=1.0,
                                 cmap="viridis", shading="auto")
            ax.plot(n, diag.subspace_boundary[:, k], color="white", lw=2.0,
                    label=f"loss boundary $t_{{c,{k}}}(N)$")
            ax.plot(n, diag.collapse_time, color="red", lw=1.5, ls="--",
                    label="REM collapse $t_C(N)$")
            ax.set_title(f"{diag.method}: subspace {k} (dim {diag.subspace_dims[k]}, "
                         f"std {diag.subspace_stds[k]:g})", fontsize=9)
            fig.colorbar(mesh, ax=ax, label=f"retained gap fraction ({diag.gap})")
        ax = row[n_sub]
        lost = diag.condensed.sum(axis=-1)
        cmap = plt.get_cmap("Greys", n_sub + 1)
        mesh = ax.pcolormesh(n, t, lost.T, vmin=-0.5, vmax=n_sub + 0.5, cmap=cmap,
                             shading="auto")
        for k in range(n_sub):
            ax.plot(n, diag.subspace_boundary[:, k], color=colors[k % len(colors)], lw=2.0,
                    label=f"$t_{{c,{k}}}(N)$ (std {diag.subspace_stds[k]:g})")
        ax.plot(n, diag.collapse_time, color="red", lw=1.5, ls="--", label="REM $t_C(N)$")
        if diag.freezing_parameter is not None:
            cs = ax.contour(n, t, diag.freezing_parameter.T, levels=[0.1, 0.5],
                            colors="tab:blue", linewidths=0.8, linestyles=":")
            ax.clabel(cs, fmt=lambda v: f"λ*={v:g}", fontsize=7)
            ax.plot([], [], color="tab:blue", lw=0.8, ls=":", label="annealed λ* = 0.5, 0.1")
        ax.set_title(f"{diag.method}: number of lost subspaces", fontsize=9)
        fig.colorbar(mesh, ax=ax, ticks=range(n_sub + 1), label="lost subspaces")
        ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
        for ax in row:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(n[0], n[-1])
            ax.set_ylim(t[0], t[-1])
            ax.set_xlabel("training-set size N")
            ax.set_ylabel(f"time t ({diag.schedule})")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig, axes


def run_phase_diagram(out: Path, *, schedule: str = "VE", method: str = "auto",
                      gap: str = "linear", n_grid: int = DEFAULT_N_GRID,
                      t_grid: int = DEFAULT_T_GRID,
                      n_range: tuple[float, float] = N_RANGE,
                      t_range: tuple[float, float] = T_RANGE,
                      model: LinearManifold | None = None) -> list[PhaseDiagram]:
    """Compute (or load from cache), draw and record the phase diagrams; returns them."""
    from ..theory.phase import PhaseDiagram, phase_diagram

    sched = get_schedule(schedule)
    model = model if model is not None else LinearManifold.figure4(theory=True)
    methods = _methods_for(method, sched)
    n_values = np.geomspace(n_range[0], n_range[1], n_grid)
    t_values = np.geomspace(t_range[0], t_range[1], t_grid)
    run = RunOutput(out, COMMAND)
    diagrams = []
    for name in progress(methods, "phase-diagram methods"):
        key = {"format": RESULT_FORMAT, "method": name, "gap": gap, "schedule": sched.to_dict(),
               "model": model.to_dict(), "n_values": n_values, "t_values": t_values}
        data = run.cached(key, lambda name=name: phase_diagram(model, n_values, t_values,
                                                               sched, name, gap=gap).to_dict())
        diagrams.append(PhaseDiagram.from_dict(data))
    rows = [dict(row, gap=gap) for diag in diagrams for row in diag.to_rows()]
    run.write_csv("phase_diagram", rows, columns=["N", "t", "subspace", "method", "condensed",
                                                  "retained_fraction", "gap"])
    run.write_csv("boundaries", [row for diag in diagrams for row in diag.boundary_rows()],
                  columns=["N", "subspace", "method", "t_c"])
    title = (f"Phase diagram, {sched.name}, d={model.d}, dims={model.dims}, "
             f"stds={model.stds}{', normalised' if model.normalized else ''}: colour = retained "
             f"fraction of each subspace's spectral gap ({gap} scale);\nwhite = loss boundary "
             "t_c,k(N) (lost below it), red dashed = REM collapse time t_C(N)")
    fig, _ = plot_phase_diagrams(diagrams, title=title)
    run.save_figure(fig, "phase_diagram")
    pyplot().close(fig)
    summary: dict[str, Any] = {}
    for diag in diagrams:
        picks = sorted({0, diag.n_train.size // 2, diag.n_train.size - 1})
        summary[diag.method] = {"first_lost_subspace_at_N": {
            f"{diag.n_train[i]:g}": _first_lost(diag, i) for i in picks}}
    run.write_record(
        {"schedule": sched.to_dict(), "methods": methods, "gap": gap, "model": model.to_dict(),
         "n_grid": n_grid, "t_grid": t_grid, "n_range": list(n_range), "t_range": list(t_range)},
        seeds=None, extra={"summary": summary})
    return diagrams


def _first_lost(diag: PhaseDiagram, i: int) -> str:
    """Which subspace is lost at the largest t (as t decreases) for the i-th N."""
    boundary = diag.subspace_boundary[i]
    if not np.any(np.isfinite(boundary)):
        return "none in range"
    k = int(np.nanargmax(boundary))
    return f"subspace {k} (t_c = {boundary[k]:.4g})"


#: memory per (N, t) grid point and method: float64 fields per subspace plus the tidy CSV row
#: dicts (two subspaces, ~600 bytes each), measured at the default grid
GRID_POINT_BYTES = 1400


def register(app: typer.Typer) -> None:
    @app.command(COMMAND)
    def phase_diagram_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        schedule: Annotated[str, typer.Option(help="VE or VP.")] = "VE",
        method: Annotated[str, typer.Option(
            help="auto (paper+rem under VE, rem under VP), paper, rem or both.")] = "auto",
        gap: Annotated[str, typer.Option(
            help="Scale of the retained gap fraction: linear (as the Monte-Carlo criterion) "
                 "or log (as the spectrum plots).")] = "linear",
        n_grid: Annotated[int, typer.Option("--n-grid", help="Number of N values (log grid).")
                          ] = DEFAULT_N_GRID,
        t_grid: Annotated[int, typer.Option("--t-grid", help="Number of t values (log grid).")
                          ] = DEFAULT_T_GRID,
        n_min: Annotated[float, typer.Option("--n-min", help="Smallest N (>= 2).")] = N_RANGE[0],
        n_max: Annotated[float, typer.Option("--n-max", help="Largest N.")] = N_RANGE[1],
        t_min: Annotated[float, typer.Option("--t-min", help="Smallest t.")] = T_RANGE[0],
        t_max: Annotated[float, typer.Option("--t-max", help="Largest t.")] = T_RANGE[1],
        quick: QuickOption = False,
        monte_carlo: Annotated[bool, typer.Option(
            "--monte-carlo", help="Also measure the retained dimension per subspace by Monte "
                                  "Carlo (validation/phase_mc.py; into <out>/monte_carlo).")
                               ] = False,
        seed: SeedOption = 0,
        workers: WorkersOption = 2,
        scheduler: SchedulerOption = None,
        dask_workers: DaskWorkersOption = None,
    ) -> None:
        """Theory phase diagram (paper vs REM): which subspace loses its gap where in (N, t).

        --quick: a small grid, except for --n-grid/--t-grid given explicitly."""
        executor = cli_executor(workers, scheduler, dask_workers)
        if schedule.upper() not in SCHEDULE_CHOICES:
            raise bad_option("--schedule", f"must be one of {SCHEDULE_CHOICES}, got {schedule!r}")
        sched = get_schedule(schedule)
        if method not in METHOD_CHOICES:
            raise bad_option("--method", f"must be one of {METHOD_CHOICES}, got {method!r}")
        if "paper" in _methods_for(method, sched) and not isinstance(sched, VE):
            raise bad_option("--method", "the paper's theory (THEORY 5a) is VE only; use "
                                         "--method rem (or auto) with --schedule VP")
        if gap not in GAP_SCALES:
            raise bad_option("--gap", f"must be one of {GAP_SCALES}, got {gap!r}")
        for name, value in (("--n-grid", n_grid), ("--t-grid", t_grid)):
            if value < 2:
                raise bad_option(name, f"must be an integer >= 2, got {value}")
        if not (2 <= n_min < n_max < np.inf):
            raise bad_option("--n-min/--n-max", f"need 2 <= n-min < n-max < inf, got "
                                                f"{n_min}, {n_max}")
        if not (0 < t_min < t_max):
            raise bad_option("--t-min/--t-max", f"need 0 < t-min < t-max, got {t_min}, {t_max}")
        checked("--t-max", sched.check_time, t_max, "t_max")
        sizes = quick_sizes(ctx, quick, {"n_grid": QUICK_N_GRID, "t_grid": QUICK_T_GRID})
        n_grid, t_grid = sizes["n_grid"], sizes["t_grid"]
        n_methods = len(_methods_for(method, sched))
        check_memory("--n-grid/--t-grid", n_methods * n_grid * t_grid * GRID_POINT_BYTES,
                     f"a {n_grid} x {t_grid} phase diagram ({n_methods} method(s))")
        run_phase_diagram(out or default_out(COMMAND), schedule=sched.name, method=method,
                          gap=gap, n_grid=n_grid, t_grid=t_grid, n_range=(n_min, n_max),
                          t_range=(t_min, t_max))
        if monte_carlo:
            from .phase_mc import run_phase_mc_defaults

            with executor:
                run_phase_mc_defaults(out or default_out(COMMAND), [sched.name], quick=quick,
                                      seed=seed, executor=executor)

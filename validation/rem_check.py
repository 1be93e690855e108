"""``geomem rem-check``: Monte Carlo versus the large-deviation REM (THEORY §5b) across t and d.

Geometry scaled with d at fixed ``alpha = ln N / d``: subspaces of dimension
``round(f_k d)`` (default fractions 1/15 and 1/6: (2, 5) at d = 30, (20, 50) at d = 300) with
*variances* (1, 0.3), no residual, un-normalised, VP schedule, fresh test points x ~ p_t --
the setting of THEORY's quick MC (d = 300, N = 1000). ``N = round(exp(alpha d))``.

Per (d, t): R independent training sets ("replicates") x B fresh test points. Quantities:

- ``sum_w2``       E[sum_mu w_mu^2]; theory 1 - lam* (Poisson-Dirichlet PD(lam*));
- ``lam_star``     freezing parameter; the MC estimate is 1 - mean sum w^2 (same PD relation);
- ``n_eff``        participation ratio 1/sum w^2 and exp(entropy) (MC only: the REM predicts
                   O(1) in the condensed phase, 1/(1 - lam*) for the typical value);
- ``jac_k``        Delta * (per-direction mean eigenvalue of J on subspace k)
                   = -1 + (a^2/Delta) tr(P_k C_w P_k)/m_k; theory -Delta/(Delta + lam* a^2 v_k).

Theory is given twice: *quenched* (lam*(x) solved at each test point, then averaged) and
*annealed* (lam* solving E_x KL = ln N). MC: mean with a 95% t-interval over replicate means,
median and 5/25/75/95% quantiles over all test points (E[J] is heavy-tailed at small t).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from ..theory.manifold import LinearManifold
from ..theory.schedules import get_schedule
from ._common import (
    bad_option,
    checked,
    default_out,
    parse_floats,
    parse_ints,
    pyplot,
    summarize,
)
from .executors import run_grid
from .measurements import fresh_test_points
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

__all__ = ["register", "rem_check_model", "rem_check_point", "run_rem_check"]

#: bump when a grid point's result layout changes, so stale caches are not reused
RESULT_FORMAT = 1
COMMAND = "rem-check"
QUANTITIES = ("sum_w2", "lam_star", "n_eff", "n_eff_entropy")


def rem_check_model(d: int, fractions: list[float], variances: list[float]) -> LinearManifold:
    """The scaled linear manifold at dimension d (subspace dims round(f d), at least 1)."""
    dims = [max(1, int(round(f * d))) for f in fractions]
    return LinearManifold(d, dims, variances=variances)


def n_train_at(d: int, alpha: float) -> int:
    """N = round(exp(alpha d)), at least 2."""
    return max(2, int(round(np.exp(alpha * d))))


def rem_check_point(point: dict[str, Any], seed: np.random.SeedSequence) -> dict[str, Any]:
    """One (d, t, replicate): a fresh training set and ``n_test`` fresh test points.

    Returns per-test-point lists: sum_w2, participation, entropy, jac (B x K, Delta-scaled
    mean tangent eigenvalue per subspace) and the quenched lam*(x) at the same points.
    """
    from ..numerics.empirical import weight_statistics
    from ..theory.rem import freezing_parameter

    model = rem_check_model(point["d"], point["fractions"], point["variances"])
    schedule = get_schedule(point["schedule"])
    t, n_train = float(point["t"]), int(point["n_train"])
    a, delta = float(schedule.a(t)), float(schedule.delta(t))
    rng = np.random.default_rng(seed)
    Y = model.sample(n_train, rng)
    X = fresh_test_points(model, int(point["n_test"]), a, delta, rng)
    bases = [model.subspace_basis(k) for k in range(model.n_subspaces)]
    ws = weight_statistics(X, Y, a=a, delta=delta, subspaces=bases)
    jac = -1.0 + (a * a / delta) * ws.subspace_trace / np.asarray(model.dims)
    lam = np.asarray(freezing_parameter(model, t, n_train, schedule, x=X), dtype=np.float64)
    return {"sum_w2": np.asarray(ws.sum_w2).tolist(),
            "participation": np.asarray(ws.participation_ratio).tolist(),
            "entropy": np.asarray(ws.entropy).tolist(),
            "jac": jac.tolist(), "lam_quenched": lam.reshape(-1).tolist()}


def _theory(model: LinearManifold, t: float, n_train: int, schedule, lam_quenched: np.ndarray
            ) -> dict[str, Any]:
    from ..theory.rem import annealed_freezing_parameter

    lam_a = float(np.asarray(annealed_freezing_parameter(model, t, n_train, schedule)))
    a, delta = float(schedule.a(t)), float(schedule.delta(t))
    v = np.asarray(model.variances)
    jac_q = np.mean(-delta / (delta + np.outer(lam_quenched, a * a * v)), axis=0)
    jac_a = -delta / (delta + lam_a * a * a * v)
    return {"lam_annealed": lam_a, "lam_quenched": float(np.mean(lam_quenched)),
            "sum_w2_annealed": 1.0 - lam_a, "sum_w2_quenched": float(np.mean(1 - lam_quenched)),
            "jac_annealed": jac_a.tolist(), "jac_quenched": jac_q.tolist()}


def summary_rows(points: list[dict], results: list[dict]) -> list[dict]:
    """Tidy rows: one per (d, t, quantity[, subspace]) with theory and MC summaries."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault((p["d"], p["t"]), []).append(i)
    rows = []
    for (d, t), idx in groups.items():
        p0 = points[idx[0]]
        model = rem_check_model(d, p0["fractions"], p0["variances"])
        schedule = get_schedule(p0["schedule"])
        rep = np.concatenate([np.full(len(results[i]["sum_w2"]), j) for j, i in enumerate(idx)])

        def cat(name, idx=idx):
            return np.concatenate([np.asarray(results[i][name], dtype=np.float64)
                                   for i in idx])

        lam_q = cat("lam_quenched")
        th = _theory(model, t, p0["n_train"], schedule, lam_q)
        base = {"d": d, "n_train": p0["n_train"], "alpha": np.log(p0["n_train"]) / d, "t": t}
        sw2 = cat("sum_w2")
        measured = {
            "sum_w2": (sw2, th["sum_w2_quenched"], th["sum_w2_annealed"]),
            "lam_star": (1.0 - sw2, th["lam_quenched"], th["lam_annealed"]),
            "n_eff": (cat("participation"), None, None),
            "n_eff_entropy": (np.exp(cat("entropy")), None, None),
        }
        for name, (values, tq, ta) in measured.items():
            rows.append({**base, "quantity": name, "subspace": "", "theory_quenched": tq,
                         "theory_annealed": ta, **summarize(values, rep, "mc_")})
        jac = np.concatenate([np.asarray(results[i]["jac"]) for i in idx])
        for k in range(model.n_subspaces):
            rows.append({**base, "quantity": "jac_scaled", "subspace": k,
                         "theory_quenched": th["jac_quenched"][k],
                         "theory_annealed": th["jac_annealed"][k],
                         **summarize(jac[:, k], rep, "mc_")})
    return rows


def _figure(rows: list[dict], ds: list[int], n_subspaces: int, schedule: str):
    plt = pyplot()
    panels = [("sum_w2", None, "E[sum w^2]"), ("n_eff", None, "N_eff = 1/sum w^2 (median, IQR)")]
    panels += [("jac_scaled", k, f"Delta * E[J] on subspace {k + 1}") for k in range(n_subspaces)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6),
                             constrained_layout=True)
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(ds)))
    for ax, (quantity, sub, title) in zip(axes, panels, strict=True):
        for color, d in zip(colors, ds, strict=True):
            sel = [r for r in rows if r["d"] == d and r["quantity"] == quantity
                   and (sub is None or r["subspace"] == sub)]
            t = np.array([r["t"] for r in sel])
            order = np.argsort(t)
            t = t[order]
            n = sel[0]["n_train"]
            if quantity == "n_eff":
                med = np.array([r["mc_q50"] for r in sel])[order]
                lo = np.array([r["mc_q25"] for r in sel])[order]
                hi = np.array([r["mc_q75"] for r in sel])[order]
                ax.plot(t, med, "o-", color=color, ms=3, label=f"d={d}, N={n}")
                ax.fill_between(t, lo, hi, color=color, alpha=0.2)
                ax.set_yscale("log")
                continue
            mean = np.array([r["mc_mean"] for r in sel])[order]
            err = np.abs(np.array([[r["mc_ci_low"], r["mc_ci_high"]] for r in sel])[order].T
                         - mean)
            ax.errorbar(t, mean, yerr=np.nan_to_num(err), fmt="o", color=color, ms=3,
                        capsize=2, label=f"MC d={d}, N={n}")
            ax.plot(t, np.array([r["mc_q50"] for r in sel])[order], "x", color=color, ms=4)
            ax.plot(t, np.array([r["theory_annealed"] for r in sel], dtype=float)[order], "-",
                    color=color, lw=1.2)
            ax.plot(t, np.array([r["theory_quenched"] for r in sel], dtype=float)[order], ":",
                    color=color, lw=1.2)
        ax.set_xscale("log")
        ticks = sorted({r["t"] for r in rows})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel(f"t ({schedule})")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle("REM check: dots = MC mean (95% CI over training sets), x = MC median, "
                 "solid = annealed REM, dotted = quenched REM", fontsize=9)
    return fig


def run_rem_check(out: Path, *, ds: list[int], alpha: float, fractions: list[float],
                  variances: list[float], schedule: str, t_values: list[float],
                  replicates: int, n_test: int, seed: int, executor: Any = None,
                  show_progress: bool = True) -> tuple[RunOutput, list[dict]]:
    """Run (resumably), summarise, plot and record the REM check; returns (run, rows)."""
    sched = get_schedule(schedule)
    sched.check_time(t_values, "t_values")
    for d in ds:
        rem_check_model(d, fractions, variances)  # validates the geometry before any work
    run = RunOutput(out, COMMAND)
    points = [{"d": d, "n_train": n_train_at(d, alpha), "t": t, "replicate": r,
               "fractions": fractions, "variances": variances, "schedule": sched.name,
               "n_test": n_test}
              for d in ds for t in sorted(t_values) for r in range(replicates)]
    results = run_grid(rem_check_point, points, seed=seed, run=run, executor=executor,
                       label=COMMAND, key_extra={"format": RESULT_FORMAT},
                       show_progress=show_progress)
    rows = summary_rows(points, results)
    run.write_csv("rem_check", rows)
    fig = _figure(rows, ds, len(fractions), sched.name)
    run.save_figure(fig, "rem_check")
    pyplot().close(fig)
    run.write_record({"ds": ds, "alpha": alpha, "n_train": {d: n_train_at(d, alpha) for d in ds},
                      "fractions": fractions, "variances": variances, "schedule": sched.name,
                      "t_values": sorted(t_values), "replicates": replicates, "n_test": n_test},
                     seeds={"seed": seed, "grid": "SeedSequence(seed, spawn_key=(index,))"},
                     extra={"executor": getattr(executor, "describe", lambda: {})()})
    return run, rows


def register(app: typer.Typer) -> None:
    @app.command("rem-check")
    def rem_check_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        ds: Annotated[str, typer.Option("--ds", help="Ambient dimensions.")] = "30,100,300",
        alpha: Annotated[float, typer.Option(
            help="ln N / d, held fixed across d (default: N = 1000 at d = 300).")
        ] = float(np.log(1000) / 300),
        fractions: Annotated[str, typer.Option(help="Subspace dims as fractions of d.")
                             ] = "0.0666667,0.1666667",
        variances: Annotated[str, typer.Option(help="Subspace variances.")] = "1,0.3",
        schedule: Annotated[str, typer.Option(help="VE, VP, DDPM or GeometricVE.")] = "VP",
        t_values: Annotated[str, typer.Option("--t-values", help="Diffusion times.")
                            ] = "0.02,0.05,0.1,0.2,0.3,0.5,0.8",
        replicates: Annotated[int, typer.Option(min=2, help="Training sets per (d, t).")] = 16,
        n_test: Annotated[int, typer.Option("--n-test", min=1, help="Test points per set.")
                          ] = 64,
        seed: SeedOption = 0,
        quick: QuickOption = False,
        workers: WorkersOption = 2,
        scheduler: SchedulerOption = None,
        dask_workers: DaskWorkersOption = None,
    ) -> None:
        """Monte Carlo vs the large-deviation REM: E(sum w^2), lam*, N_eff, E(J) per subspace.

        --quick: smallest and largest d, first two times, 2 replicates
        x 8 test points, except for sizes given explicitly."""
        d_list = parse_ints("--ds", ds, minimum=2)
        if not (alpha > 0 and np.isfinite(alpha)) or max(np.exp(alpha * np.array(d_list))) > 1e6:
            raise bad_option("--alpha", f"need alpha > 0 with exp(alpha d) <= 1e6 for every d "
                                        f"(N is sampled in memory), got {alpha!r}")
        frac = parse_floats("--fractions", fractions)
        var = parse_floats("--variances", variances)
        if len(frac) != len(var) or sum(frac) > 1:
            raise bad_option("--fractions", "need one fraction per variance, summing to <= 1")
        ts = parse_floats("--t-values", t_values)
        sizes = quick_sizes(ctx, quick, {"ds": None, "t_values": None, "replicates": 2,
                                         "n_test": 8})
        d_list = d_list if sizes["ds"] is not None else sorted({min(d_list), max(d_list)})
        ts = ts if sizes["t_values"] is not None else ts[:2]
        replicates, n_test = sizes["replicates"], sizes["n_test"]
        sched = checked("--schedule", get_schedule, schedule)
        checked("--t-values", sched.check_time, ts, "t")
        for d in d_list:
            checked("--ds/--fractions/--variances", rem_check_model, d, frac, var)
        executor = cli_executor(workers, scheduler, dask_workers)
        with executor:
            run_rem_check(out or default_out(COMMAND), ds=d_list, alpha=alpha, fractions=frac,
                          variances=var, schedule=schedule, t_values=ts,
                          replicates=replicates, n_test=n_test, seed=seed, executor=executor)

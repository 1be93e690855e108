"""``geomem report``: run every validation at default sizes and write ``index.md``.

Sub-runs (each in its own folder under ``--out``, each resumable):

- ``score-field/``          Figure 3;
- ``spectra-<geometry>-<schedule>/``  Figure 4 panels at the paper's geometry (``fig4``: dims 2
  and 5, stds 1 and 0.3) and at an equal-dimension geometry (``equal``: dims 5 and 5, same
  stds), VE and VP -- the data that answers THEORY §5c;
- ``rem-check/``            Monte Carlo versus the large-deviation REM across t and d;
- ``phase-diagram-VE/``, ``phase-diagram-VP/``  the theory phase diagrams (both methods);
- ``phase-diagram/monte_carlo/``  Monte-Carlo retained dimension on the (log N, t) plane;
- ``finite-n/``             the exact finite-N theory versus Monte Carlo (and the REM), d = 30.

``index.md`` shows the figures and one agreement table: prediction, theory value, MC estimate
with its 95% CI, relative discrepancy ``(theory - MC)/|MC|`` and a verdict
(:func:`geomem.validation._common.verdict`: ``agree`` when the theory lies inside the CI or
within ``REL_TOL``, ``disagree`` otherwise, ``inconclusive`` when the CI is wider than
``MAX_CI_FRACTION`` of the MC value, ``n/a`` when either side is missing), plus the §5c table
(which subspace loses its gap first) and the finite-N coverage table. Under ``--quick`` the
sizes are smoke-test sizes: the tables are marked so and carry no verdicts.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from ..theory.manifold import LinearManifold
from ._common import MAX_CI_FRACTION, REL_TOL, default_out, verdict
from .options import (
    DaskWorkersOption,
    OutOption,
    SchedulerOption,
    SeedOption,
    WorkersOption,
    cli_executor,
)
from .records import RunOutput, git_revision

__all__ = ["SMOKE_TEST", "VERDICTS", "agreement_row", "register", "run_report", "verdict"]

COMMAND = "report"
#: the verdict column of a --quick report: test sizes support no conclusion
SMOKE_TEST = "no verdict (smoke-test size)"
VERDICTS = ("agree", "disagree", "inconclusive", "n/a")
#: finite-N rows of the agreement table: d, and the times (nearest grid time) per schedule
FINITE_N_D = 30
FINITE_N_TABLE_QUANTILES = (0.0, 0.5, 1.0)
#: how each command averages the quenched REM over test points (they differ for the
#: Jacobian rows, which are non-linear in lam*): named in the table's theory column
REM_AVERAGING = {
    "rem-check": "rem (quenched: prediction averaged over lam*(x) at the MC points)",
    "finite-n": "rem (quenched: mean lam* over fresh x plugged into the prediction)",
}
#: the rem-check times (VP) and the time of the per-subspace Jacobian rows quoted in the table
REM_TABLE_TIMES = (0.05, 0.1, 0.3)
REM_JAC_TIME = 0.1
#: (theory, MC protocol) pairs of the gap-loss rows: the published theory against the paper's
#: protocol and single fresh points; the REM (a statement about the Jacobian averaged over the
#: disorder) against single fresh points and against the mean Jacobian over fresh points
COMPARISONS = (("published", "origin"), ("published", "fresh"), ("rem", "fresh"),
               ("rem", "fresh_mean"))
PROTOCOL_NAMES = {"origin": "origin protocol", "fresh": "fresh x (per point)",
                  "fresh_mean": "fresh x (mean Jacobian)"}


def geometries() -> dict[str, LinearManifold]:
    """The geometries of the §5c question (d = 30, stds 1 and 0.3, residual std 0.01): the
    paper's (dims 2 and 5, normalised samples), the same un-normalised (a Gaussian, as both
    theories assume), and an equal-dimension one (dims 5 and 5, normalised)."""
    return {"fig4": LinearManifold.figure4(),
            "fig4-gaussian": LinearManifold(30, (2, 5), stds=(1.0, 0.3), residual_std=0.01),
            "equal": LinearManifold(30, (5, 5), stds=(1.0, 0.3), residual_std=0.01,
                                    normalized=True)}


def agreement_row(prediction: str, theory_name: str, theory: float | None, mc: float,
                  low: float, high: float) -> dict[str, Any]:
    """One row of the agreement table (see :func:`verdict`)."""
    rel, v = verdict(theory, mc, low, high)
    return {"prediction": prediction, "theory": theory_name,
            "theory_value": float("nan") if theory is None else float(theory),
            "mc_mean": mc, "mc_ci_low": low, "mc_ci_high": high,
            "relative_discrepancy": rel, "verdict": v}


def _spectra_rows(name: str, gap_rows: list[dict]) -> tuple[list[dict], list[dict]]:
    by = {(r["source"], r["subspace"]): r for r in gap_rows}
    K = 1 + max(r["subspace"] for r in gap_rows)
    rows, order = [], []
    for k in range(K):
        for theory, protocol in COMPARISONS:
            mc = by[(protocol, k)]
            if theory == "published" and not name.endswith(" VE"):
                continue  # THEORY 5a is stated for VE only
            label = (f"{name}: t at which subspace {k + 1} (m={mc['dim']}, std "
                     f"{mc['std']:g}) loses half its gap, {PROTOCOL_NAMES[protocol]}")
            row = agreement_row(label, theory, by[(theory, k)]["t_loss"], mc["t_loss"],
                                mc["t_loss_ci_low"], mc["t_loss_ci_high"])
            never_t, never_mc = (not np.isfinite(by[(theory, k)]["t_loss"]),
                                 not np.isfinite(mc["t_loss"]))
            if never_t or never_mc:
                # "never lost in the time range" is a prediction too
                row["verdict"] = "agree" if never_t and never_mc else "disagree"
                row["prediction"] += (" (theory: never lost in range)" if never_t else "") + (
                    " (MC: never lost in range)" if never_mc else "")
            rows.append(row)
    for source in ("published", "rem", "origin", "fresh", "fresh_mean"):
        times = [by[(source, k)]["t_loss"] for k in range(K)]
        finite = [t for t in times if np.isfinite(t)]
        first = (f"subspace {int(np.nanargmax(times)) + 1}" if finite else "none lost in range")
        if source == "published" and not name.endswith(" VE"):
            first = "n/a (THEORY 5a is VE only)"
        order.append({"run": name, "source": source, "first_to_lose_gap": first,
                      **{f"t_loss_subspace_{k + 1}": times[k] for k in range(K)}})
    return rows, order


def _rem_rows(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        t_match = any(np.isclose(r["t"], t) for t in REM_TABLE_TIMES)
        if r["quantity"] == "sum_w2" and t_match:
            label = f"E[sum w^2], d={r['d']}, N={r['n_train']}, t={r['t']:g} (VP, fresh x)"
        elif r["quantity"] == "jac_scaled" and np.isclose(r["t"], REM_JAC_TIME):
            label = (f"Delta*E[J] on subspace {int(r['subspace']) + 1}, d={r['d']}, "
                     f"N={r['n_train']}, t={r['t']:g} (VP, fresh x)")
        else:
            continue
        # rem-check's quenched REM: lam*(x) solved at each MC test point, the prediction
        # (1 - lam*(x), or -Delta/(Delta + lam*(x) a^2 v_k)) averaged over the points; the
        # finite-n command instead plugs the mean lam* into the formula (see REM_AVERAGING)
        out.append(agreement_row(label, REM_AVERAGING["rem-check"], r["theory_quenched"],
                                 r["mc_mean"], r["mc_ci_low"], r["mc_ci_high"]))
    return out


def _finite_n_rows(rows: list[dict]) -> list[dict]:
    """Agreement rows of the exact finite-N theory against MC at the smallest, middle and
    largest time of each schedule (every quantity)."""
    out = []
    for schedule in sorted({r["schedule"] for r in rows}):
        ts = sorted({r["t"] for r in rows if r["schedule"] == schedule})
        picks = sorted({ts[int(round(q * (len(ts) - 1)))] for q in FINITE_N_TABLE_QUANTILES})
        for r in rows:
            if r["schedule"] != schedule or r["t"] not in picks:
                continue
            what = ("E[sum w^2]" if r["quantity"] == "sum_w2"
                    else f"Delta*E[J] on subspace {int(r['subspace']) + 1}")
            label = (f"{what}, d={r['d']}, N={r['n_train']}, t={r['t']:g} "
                     f"({schedule}, fresh x)")
            out.append(agreement_row(label, "exact finite-N", r["exact"], r["mc_mean"],
                                     r["mc_ci_low"], r["mc_ci_high"]))
    return out


def _fmt(x: Any) -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return f"{x:.3g}"


def _markdown(figures: list[tuple[str, str]], table: list[dict], order: list[dict],
              info: dict) -> str:
    lines = ["# geomem validation report", "",
             f"Generated {info['finished']} (git {info['git']}), quick={info['quick']}, "
             f"wall time {info['wall_s']:.0f} s.", ""]
    if info["quick"]:
        lines += ["**Smoke-test sizes (`--quick`)**: every stage ran at test size; the numbers "
                  "below show that the pipeline works, not whether the theory holds, so no "
                  "verdicts are drawn. Run `geomem report` without `--quick` for verdicts.", ""]
    lines += ["## Agreement table" + (" (smoke-test size, no verdict)" if info["quick"]
                                      else ""), "",
             f"Verdict: *agree* when the theory value lies inside the Monte-Carlo 95% CI or "
             f"within {REL_TOL:.0%} of the MC mean, *disagree* otherwise; *inconclusive* when "
             f"the CI is wider than {MAX_CI_FRACTION:.0%} of the MC mean (too wide to tell); "
             "relative discrepancy = (theory - MC)/|MC|. "
             "Gap-loss times: MC CI is the 95% interval of the geometric mean over independent "
             "training sets.", "",
             "| prediction | theory | theory value | MC estimate [95% CI] | rel. discrepancy | "
             "verdict |", "|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['prediction']} | {r['theory']} | {_fmt(r['theory_value'])} | "
                     f"{_fmt(r['mc_mean'])} [{_fmt(r['mc_ci_low'])}, {_fmt(r['mc_ci_high'])}] | "
                     f"{_fmt(r['relative_discrepancy'])} | {r['verdict']} |")
    counts = _counts(table)
    lines += ["", "Totals: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".", "",
              "## Which subspace loses its gap first (THEORY §5c)", "",
              "Gap lost = half of the subspace's dimensions fail the gap criterion "
              "(see geomem.validation.measurements); the subspace with the larger gap-loss "
              "time loses its gap first as t decreases.", "",
              "| run | source | first to lose its gap | t_loss subspace 1 | t_loss subspace 2 |",
              "|---|---|---|---|---|"]
    for o in order:
        lines.append(f"| {o['run']} | {o['source']} | {o['first_to_lose_gap']} | "
                     f"{_fmt(o.get('t_loss_subspace_1'))} | {_fmt(o.get('t_loss_subspace_2'))} |")
    lines += ["", "## Exact finite-N theory vs Monte Carlo (coverage of the MC 95% CI)"
              + (" (smoke-test size, no verdict)" if info["quick"] else ""), "",
              info["finite_n_table"], "", "## Figures", ""]
    for caption, path in figures:
        lines += [f"### {caption}", "", f"![{caption}]({path})", ""]
    return "\n".join(lines) + "\n"


def _counts(table: list[dict]) -> dict[str, int]:
    """Rows per verdict, in a fixed order (only verdicts that occur, plus the four main)."""
    seen = [v for v in (*VERDICTS, SMOKE_TEST) if v in VERDICTS or
            any(r["verdict"] == v for r in table)]
    return {v: sum(r["verdict"] == v for r in table) for v in seen}


def run_report(out: Path, *, quick: bool, seed: int, executor: Any = None) -> RunOutput:
    """Run all validations (resumable), then write index.md, report.csv and record.json."""
    from .finite_n import (
        DEFAULT_RANGES,
        QUICK,
        SUMMARY_COLUMNS,
        markdown_table,
        run_finite_n,
        time_grid,
    )
    from .phase_diagram import run_phase_diagram
    from .phase_mc import run_phase_mc_defaults
    from .rem_check import run_rem_check
    from .score_field import run_score_field
    from .spectra import run_spectra

    out = Path(out)
    run = RunOutput(out, COMMAND)
    started = _dt.datetime.now(_dt.timezone.utc)
    figures: list[tuple[str, str]] = []
    table: list[dict] = []
    order: list[dict] = []

    run_score_field(out / "score-field", n_train=10, stds=[1.0, 0.25],
                    t_values=[1.0, 0.1, 0.01], schedule="VE", grid=24 if quick else 120,
                    n_test=200 if quick else 4000, seed=seed, executor=executor)
    figures.append(("Figure 3: empirical score field (VE, N = 10)",
                    "score-field/score_field.png"))

    n_times = 5 if quick else 30
    for geom, model in geometries().items():
        for schedule in ("VE", "VP"):
            name = f"spectra-{geom}-{schedule}"
            _, res = run_spectra(out / name, model=model, n_train=200 if quick else 1000,
                                 schedule=schedule, t_values=np.geomspace(1e-4, 1.0, n_times),
                                 repetitions=2 if quick else 5, n_test=4 if quick else 32,
                                 replicates=2 if quick else 6, seed=seed, executor=executor)
            rows, ords = _spectra_rows(f"{geom} {schedule}", res["gap_rows"])
            table += rows
            order += ords
            figures.append((f"Figure 4 ({geom} geometry, {schedule}): spectra",
                            f"{name}/spectra.png"))
            figures.append((f"Retained dimension per subspace ({geom}, {schedule})",
                            f"{name}/retained.png"))

    _, rem_rows = run_rem_check(
        out / "rem-check", ds=[30, 100] if quick else [30, 100, 300],
        alpha=float(np.log(1000) / 300), fractions=[1 / 15, 1 / 6], variances=[1.0, 0.3],
        schedule="VP", t_values=list(REM_TABLE_TIMES) + ([] if quick else [0.02, 0.2, 0.5, 0.8]),
        replicates=2 if quick else 16, n_test=8 if quick else 64, seed=seed, executor=executor)
    table += _rem_rows(rem_rows)
    figures.append(("REM check: Monte Carlo vs large-deviation REM (VP)",
                    "rem-check/rem_check.png"))

    for schedule in ("VE", "VP"):
        size = {"n_grid": 12, "t_grid": 16} if quick else {}
        run_phase_diagram(out / f"phase-diagram-{schedule}", schedule=schedule, **size)
        figures.append((f"Phase diagram, theory only ({schedule}; geomem phase-diagram)",
                        f"phase-diagram-{schedule}/phase_diagram.png"))
    run_phase_mc_defaults(out / "phase-diagram", ["VE", "VP"], quick=quick, seed=seed,
                          executor=executor)
    figures.append(("Phase diagram: Monte-Carlo retained dimension with theory boundaries",
                    "phase-diagram/monte_carlo/phase_mc.png"))

    schedules = ["VP"] if quick else ["VP", "VE"]
    grids = {s: (time_grid(*DEFAULT_RANGES[s], n_times=QUICK["n_times"]) if quick
                 else time_grid(*DEFAULT_RANGES[s], per_decade=4.0)) for s in schedules}
    sizes = ({k: QUICK[k] for k in ("replicates", "n_test", "n_nodes")} if quick
             else {"replicates": 200, "n_test": 100, "n_nodes": None})
    _, fn_rows, fn_summary = run_finite_n(out / "finite-n", ds=[FINITE_N_D], schedules=schedules,
                                          t_values=grids, n_train=1000, seed=seed,
                                          executor=executor, **sizes)
    table += _finite_n_rows(fn_rows)
    figures.append((f"Exact finite-N theory vs Monte Carlo vs REM (d = {FINITE_N_D})",
                    "finite-n/finite_n.png"))
    if quick:
        for r in table:
            r["verdict"] = SMOKE_TEST
        for o in order:
            o["first_to_lose_gap"] += " (smoke-test size)"

    run.write_csv("report", table)
    run.write_csv("gap_order", order)
    finished = _dt.datetime.now(_dt.timezone.utc)
    info = {"finished": finished.strftime("%Y-%m-%d %H:%M UTC"), "git": git_revision(),
            "quick": quick, "wall_s": (finished - started).total_seconds(),
            "finite_n_table": markdown_table(fn_summary, SUMMARY_COLUMNS)}
    (out / "index.md").write_text(_markdown(figures, table, order, info))
    run.files.append("index.md")
    run.write_record({"quick": quick, "rel_tol": REL_TOL, "max_ci_fraction": MAX_CI_FRACTION,
                      "sub_runs": [f[1] for f in figures]},
                     seeds={"seed": seed},
                     extra={"executor": getattr(executor, "describe", lambda: {})(),
                            "verdicts": _counts(table)})
    return run


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        out: OutOption = None,
        seed: SeedOption = 0,
        quick: Annotated[bool, typer.Option(help="Smoke-test sizes: every stage runs, the "
                                                 "tables carry no verdicts.")] = False,
        workers: WorkersOption = 2,
        scheduler: SchedulerOption = None,
        dask_workers: DaskWorkersOption = None,
    ) -> None:
        """Run every validation (score field, spectra, REM check, phase diagrams, finite N) and
        write index.md with figures and the agreement table."""
        executor = cli_executor(workers, scheduler, dask_workers)
        with executor:
            run = run_report(out or default_out(COMMAND), quick=quick, seed=seed,
                             executor=executor)
        typer.echo(f"report written to {run.path / 'index.md'}")

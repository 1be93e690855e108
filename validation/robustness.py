"""Robustness of the gap-loss times and of "which subspace is lost first" (issue 17).

For each measured source (``origin``, ``fresh``, ``fresh_mean``), every retained-dimension
definition of :mod:`geomem.numerics.retained` and every gap threshold of
:data:`~geomem.validation.measurements.ROBUSTNESS_THRESHOLDS`, :func:`gap_loss_rows` gives the
gap-loss time of each subspace (t at which fewer than m_k/2 directions are retained) with its
95% CI and censoring counts (:func:`geomem.validation._common.gap_loss_statistics`), and
:func:`first_lost_rows` says which subspace goes first: the one with the largest t_loss,
*resolved* when the 95% CI of the paired ratio t_loss(first)/t_loss(second) over training sets
excludes 1, "tie" otherwise. ``fresh_mean`` (one pooled mean Jacobian per t) has no CI.

``geomem spectra`` writes both tables (``gap_loss_robustness.csv``, ``first_lost.csv``). The
runner ``python -m geomem.validation.robustness --out DIR`` runs ``geomem spectra`` on the
report's geometries (fig4, fig4-gaussian, equal) under VE and VP and concatenates them into
``DIR/robustness.csv`` (first-lost rows), ``DIR/robustness_gap_loss.csv`` (every gap-loss time
with its CI and censoring counts), ``DIR/robustness.md`` (every first-lost row) and
``DIR/robustness_summary.md`` (the table of docs/findings.md §1). Stored copies: docs/data/.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np

from ..numerics.retained import RETAINED_DEFINITIONS
from ._common import crossing_time, gap_loss_statistics, paired_log_ratio
from .measurements import ROBUSTNESS_THRESHOLDS

__all__ = ["first_lost_rows", "gap_loss_rows", "main", "run_robustness", "summary_markdown"]

#: sources with one curve per training set (CI from replicates) and the pooled one (no CI)
REPLICATED, POOLED = ("origin", "fresh"), "fresh_mean"


def _threshold_name(th: float) -> str:
    return {1 / 3: "1/3", 0.5: "1/2", 2 / 3: "2/3"}.get(th, f"{th:.3g}")


def gap_loss_rows(ts: np.ndarray, per_rep: dict[str, np.ndarray], pooled: np.ndarray,
                  dims: tuple[int, ...]) -> tuple[list[dict], dict]:
    """Tidy gap-loss rows and the per-replicate log crossings.

    ts (T,); ``per_rep[source]`` (R, T, D, L, K) per-replicate mean counts for the replicated
    sources; ``pooled`` (T, D, L, K) counts of the pooled mean Jacobian. Returns (rows, logs)
    with ``logs[(source, definition, threshold)]`` (R, K) log crossing times (NaN: censored).
    """
    rows, logs = [], {}
    for source in (*REPLICATED, POOLED):
        for di, definition in enumerate(RETAINED_DEFINITIONS):
            for li, th in enumerate(ROBUSTNESS_THRESHOLDS):
                per_k = []
                for k, m in enumerate(dims):
                    row = {"source": source, "definition": definition,
                           "threshold": _threshold_name(th), "subspace": k + 1, "dim": m}
                    if source == POOLED:
                        tl = crossing_time(ts, pooled[:, di, li, k], m / 2)
                        row.update(t_loss=tl, ci_low=None, ci_high=None, n_replicates=1,
                                   n_crossed=int(np.isfinite(tl)), n_not_lost=None,
                                   n_lost_at_start=None)
                        per_k.append(np.array([np.log(tl)]))
                    else:
                        st = gap_loss_statistics(ts, per_rep[source][:, :, di, li, k], m / 2)
                        row.update({key: st[key] for key in (
                            "t_loss", "ci_low", "ci_high", "n_replicates", "n_crossed",
                            "n_not_lost", "n_lost_at_start")})
                        per_k.append(st["log_crossings"])
                    rows.append(row)
                logs[(source, definition, _threshold_name(th))] = np.stack(per_k, axis=-1)
    return rows, logs


def first_lost_rows(gap_rows: list[dict], logs: dict, resolution: float = 1.0) -> list[dict]:
    """Which subspace loses its gap first, per (source, definition, threshold) (module doc);
    ``resolution``: the grid ratio of the times (see ``_common.paired_log_ratio``)."""
    out = []
    for (source, definition, th), log_t in logs.items():
        sel = [r for r in gap_rows if (r["source"], r["definition"], r["threshold"]) ==
               (source, definition, th)]
        times = np.array([r["t_loss"] for r in sel], dtype=float)
        row: dict[str, Any] = {"source": source, "definition": definition, "threshold": th,
                               **{f"t_loss_{r['subspace']}": r["t_loss"] for r in sel},
                               **{f"ci_{r['subspace']}": _ci_text(r) for r in sel}}
        if np.sum(np.isfinite(times)) == 0:
            row.update(first_lost="none in range", ratio=None, ratio_ci_low=None,
                       ratio_ci_high=None, n_paired=0)
            out.append(row)
            continue
        order = np.argsort(np.where(np.isfinite(times), -times, np.inf))
        first, second = int(order[0]), int(order[1]) if len(order) > 1 else int(order[0])
        pair = paired_log_ratio(log_t[:, first], log_t[:, second], resolution)
        row.update(pair)
        if log_t.shape[1] >= 2:  # the same ratio as t_loss(1)/t_loss(2), for the tables
            r12 = paired_log_ratio(log_t[:, 0], log_t[:, 1], resolution)
            row.update(ratio_12=r12["ratio"], ratio_12_ci_low=r12["ratio_ci_low"],
                       ratio_12_ci_high=r12["ratio_ci_high"])
        if not np.isfinite(times[second]):
            censored = [r for r in sel if r["subspace"] == second + 1][0]
            verdict = (f"{first + 1} (the other never lost)"
                       if censored.get("n_lost_at_start") in (0, None) else "unresolved")
        elif source == POOLED or not np.isfinite(pair["ratio_ci_low"]):
            verdict = f"{first + 1} (no CI)"
        elif pair["ratio_ci_low"] > 1.0:
            verdict = str(first + 1)
        elif pair["ratio_ci_high"] < 1.0:  # the paired ratio reverses the geometric means
            verdict = str(second + 1)
        else:
            verdict = "tie"
        row["first_lost"] = verdict
        out.append(row)
    return out


def _ci_text(row: dict) -> str:
    if row.get("ci_low") is None or not np.isfinite(row["ci_low"]):
        return ""
    return f"[{row['ci_low']:.3g}, {row['ci_high']:.3g}]"


def _fmt_t(value: Any, ci: str = "") -> str:
    if value is None or not np.isfinite(value):
        return "never"
    return f"{value:.3g} {ci}".strip()


def _markdown(rows: list[dict]) -> str:
    lines = ["| geometry, schedule | protocol | definition | threshold | t_loss 1 [95% CI] | "
             "t_loss 2 [95% CI] | ratio 1/2 [95% CI] | first lost |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r.get("ratio")
        ratio_text = "" if ratio is None or not np.isfinite(ratio) else (
            f"{ratio:.2f}" + (f" [{r['ratio_ci_low']:.2f}, {r['ratio_ci_high']:.2f}]"
                              if np.isfinite(r["ratio_ci_low"]) else ""))
        lines.append(f"| {r['run']} | {r['source']} | {r['definition']} | {r['threshold']} | "
                     f"{_fmt_t(r.get('t_loss_1'), r.get('ci_1', ''))} | "
                     f"{_fmt_t(r.get('t_loss_2'), r.get('ci_2', ''))} | {ratio_text} | "
                     f"{r['first_lost']} |")
    return "\n".join(lines) + "\n"


def summary_markdown(rows: list[dict]) -> str:
    """One row per (run, protocol): per definition, the first-lost verdicts at thresholds
    1/3, 1/2, 2/3 and the paired ratio t_loss(1)/t_loss(2) [95% CI] at 1/2."""
    head = " | ".join(f"{d}: first lost (1/3, 1/2, 2/3); t1/t2 at 1/2" for d in
                      RETAINED_DEFINITIONS)
    lines = [f"| geometry, schedule | protocol | {head} |",
             "|---|---|" + "---|" * len(RETAINED_DEFINITIONS)]
    keys = list(dict.fromkeys((r["run"], r["source"]) for r in rows))
    for run, source in keys:
        cells = []
        for definition in RETAINED_DEFINITIONS:
            sel = {r["threshold"]: r for r in rows if (r["run"], r["source"],
                                                       r["definition"]) == (run, source,
                                                                           definition)}
            verdicts = ", ".join(str(sel[th]["first_lost"]).replace(" (no CI)", "")
                                 .replace(" (the other never lost)", "*")
                                 for th in ("1/3", "1/2", "2/3"))
            mid = sel["1/2"]
            low, high = mid.get("ratio_12_ci_low"), mid.get("ratio_12_ci_high")
            if mid.get("ratio_12") is None or not np.isfinite(mid["ratio_12"]):
                ratio = "–"
            elif low is not None and np.isfinite(low):
                ratio = f"{mid['ratio_12']:.2f} [{low:.2f}, {high:.2f}]"
            else:
                ratio = f"{mid['ratio_12']:.2f}"
            cells.append(f"{verdicts}; {ratio}")
        lines.append(f"| {run} | {source} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_robustness(out: Path, *, n_train: int = 1000, n_times: int = 40,
                   t_range: tuple[float, float] = (1e-4, 1.0), repetitions: int = 5,
                   n_test: int = 32, replicates: int = 6, seed: int = 0, workers: int = 1,
                   geometries: list[str] | None = None, schedules: tuple[str, ...] = ("VE", "VP")
                   ) -> list[dict]:
    """Run ``geomem spectra`` per geometry and schedule and write robustness.csv/.md."""
    from .executors import make_executor
    from .report import geometries as report_geometries
    from .spectra import run_spectra

    out = Path(out)
    models = report_geometries()
    rows, gap_rows = [], []
    with make_executor(workers, None, None) as executor:
        for geom in geometries or list(models):
            for schedule in schedules:
                _, res = run_spectra(out / f"spectra-{geom}-{schedule}", model=models[geom],
                                     n_train=n_train, schedule=schedule,
                                     t_values=np.geomspace(*t_range, n_times),
                                     repetitions=repetitions, n_test=n_test,
                                     replicates=replicates, seed=seed, executor=executor)
                rows += [{"run": f"{geom} {schedule}", **r} for r in res["first_lost_rows"]]
                gap_rows += [{"run": f"{geom} {schedule}", **r}
                             for r in res["robustness_rows"]]
    for stem, table in (("robustness", rows), ("robustness_gap_loss", gap_rows)):
        columns = list(dict.fromkeys(key for r in table for key in r))
        with (out / f"{stem}.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(table)
    (out / "robustness.md").write_text(_markdown(rows))
    (out / "robustness_summary.md").write_text(summary_markdown(rows))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/robustness"))
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-times", type=int, default=40)
    parser.add_argument("--t-min", type=float, default=1e-4)
    parser.add_argument("--t-max", type=float, default=1.0)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--n-test", type=int, default=32)
    parser.add_argument("--replicates", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--geometries", default="fig4,fig4-gaussian,equal")
    parser.add_argument("--schedules", default="VE,VP")
    args = parser.parse_args(argv)
    run_robustness(args.out, n_train=args.n_train, n_times=args.n_times,
                   t_range=(args.t_min, args.t_max), repetitions=args.repetitions,
                   n_test=args.n_test, replicates=args.replicates, seed=args.seed,
                   workers=args.workers, geometries=args.geometries.split(","),
                   schedules=tuple(args.schedules.split(",")))


if __name__ == "__main__":
    main()

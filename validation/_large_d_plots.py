"""Figure and markdown summary of ``geomem large-d`` (private; rows as `large_d.analyse` makes
them: curves with d, schedule, subspace, t, source, quantity, value, ci_low, ci_high; gap-loss
rows with t_loss, ci_low, ci_high and t_collapse; order rows with ratio and its CI)."""

from __future__ import annotations

import math

import numpy as np

from ._common import pyplot

__all__ = ["large_d_figure", "summary_markdown"]

#: line style per subspace (1: std 1, 2: std 0.3)
_STYLES = {1: "-", 2: "--"}
_SOURCES = {"per_point": ("o", "per point"), "mean_jacobian": ("s", "mean J (MC)"),
            "exact": ("^", "mean J (exact)")}


def _select(rows, **match):
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def _err(rows):
    v = np.array([r["value"] if "value" in r else r["t_loss"] for r in rows], float)
    lo = np.array([np.nan if r["ci_low"] is None else r["ci_low"] for r in rows], float)
    hi = np.array([np.nan if r["ci_high"] is None else r["ci_high"] for r in rows], float)
    return v, np.nan_to_num(np.abs(np.stack([v - lo, hi - v])))


def large_d_figure(curves, losses, ds, schedules):
    """Rows: schedules. Columns: per-point retained fraction vs t; mean-Jacobian gap
    fraction vs t (MC, exact, REM); gap-loss time over t_C vs d."""
    plt = pyplot()
    fig, axes = plt.subplots(len(schedules), 3, figsize=(14, 3.8 * len(schedules)),
                             constrained_layout=True, squeeze=False)
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(ds)))
    for row, sched in zip(axes, schedules, strict=True):
        t_c = _select(losses, schedule=sched)[0]["t_collapse"]
        for d, colour in zip(ds, colours, strict=True):
            for k in (1, 2):
                sel = _select(curves, schedule=sched, d=d, subspace=k, source="per_point")
                t = [r["t"] for r in sel]
                v, err = _err(sel)
                row[0].errorbar(t, v, yerr=err, fmt=_STYLES[k], color=colour, lw=1.2,
                                capsize=1.5, label=f"d={d}" if k == 1 else None)
                mc = _select(curves, schedule=sched, d=d, subspace=k, source="mean_jacobian")
                v, err = _err(mc)
                row[1].errorbar([r["t"] for r in mc], v, yerr=err, fmt="o", ms=2.5,
                                color=colour, capsize=1.5, mfc="none" if k == 2 else colour)
                ex = _select(curves, schedule=sched, d=d, subspace=k, source="exact")
                row[1].plot([r["t"] for r in ex], [r["value"] for r in ex], _STYLES[k],
                            color=colour, lw=1.0)
        for k in (1, 2):
            rem = _select(curves, schedule=sched, d=ds[-1], subspace=k, source="rem")
            row[1].plot([r["t"] for r in rem], [r["value"] for r in rem], _STYLES[k],
                        color="C3", lw=1.6, label=f"REM, subspace {k}")
        for ax in row[:2]:
            ax.axvline(t_c, color="k", ls=":", lw=1.0)
            ax.axhline(0.5, color="0.6", lw=0.8)
            ax.set_xscale("log")
            ax.set_xlabel(f"t ({sched}); dotted: REM t_C = {t_c:.3g}")
        row[0].set_ylabel("retained fraction of subspace")
        row[0].set_title(f"{sched}: per-point Jacobian (solid: subspace 1, s = 1; dashed: "
                         "2, s = 0.3)", fontsize=8)
        row[1].set_ylabel("gap fraction of E[J]")
        row[1].set_ylim(-0.3, 1.15)   # MC intervals of the heavy-tailed mean reach beyond
        row[1].set_title(f"{sched}: mean Jacobian; points MC (filled 1, open 2), lines exact "
                         "finite N, red REM", fontsize=8)
        for source, (marker, label) in _SOURCES.items():
            for k in (1, 2):
                sel = sorted(_select(losses, schedule=sched, subspace=k, source=source),
                             key=lambda r: r["d"])
                d_arr = np.array([r["d"] for r in sel], float) * (1.0 + 0.04 * (k - 1.5))
                v, err = _err(sel)
                row[2].errorbar(d_arr, v / t_c, yerr=err / t_c, fmt=marker + _STYLES[k],
                                ms=4, capsize=2, color=f"C{list(_SOURCES).index(source)}",
                                mfc="none" if k == 2 else None,
                                label=f"{label}, subspace {k}")
        row[2].axhline(1.0, color="k", ls=":", lw=1.0)
        row[2].set_xscale("log")
        row[2].set_yscale("log")
        row[2].set_xlabel("d (N = e^{alpha d})")
        row[2].set_ylabel("gap-loss time / t_C")
        row[2].set_title(f"{sched}: gap-loss times (95% CI) over the REM collapse time",
                         fontsize=8)
    axes[0, 0].legend(fontsize=7)
    axes[0, 1].legend(fontsize=7)
    axes[0, 2].legend(fontsize=6)
    return fig


def _fmt(row):
    if not math.isfinite(row["t_loss"]):
        return "not lost" if row.get("n_not_lost", 0) or row.get("status") == "not_lost" \
            else "n/a"
    tc = row["t_collapse"]
    lo, hi = row["ci_low"], row["ci_high"]
    ci = (f" [{lo / tc:.2f}, {hi / tc:.2f}]" if lo is not None and math.isfinite(lo)
          and hi is not None and math.isfinite(hi) else "")
    return f"{row['t_loss'] / tc:.2f}{ci}"


def summary_markdown(losses, order_rows) -> str:
    """Gap-loss times over t_C per (schedule, d) and the per-point order of loss."""
    lines = ["# geomem large-d: gap-loss times over the REM collapse time t_C", "",
             "Subspace 1: std 1; 2: std 0.3. Loss: the t below which half of the subspace's "
             "gap is gone (95% CI).", "",
             "| schedule | d | log10 N | t_C | per point 1 / t_C | per point 2 / t_C | "
             "t_1/t_2 per point [95% CI] | mean J 1 / t_C (MC) | mean J 2 / t_C (MC) | "
             "exact 1 / 2 |", "|" + "---|" * 10]
    for order in order_rows:
        key = {"schedule": order["schedule"], "d": order["d"]}

        def cell(source, k, key=key):
            found = _select(losses, **key, subspace=k, source=source)
            return _fmt(found[0]) if found else "not run"
        ratio = (f"{order['ratio']:.2f} [{order['ratio_ci_low']:.2f}, "
                 f"{order['ratio_ci_high']:.2f}]" if math.isfinite(order["ratio_ci_low"])
                 else f"{order['ratio']:.2f}")
        lines.append(f"| {order['schedule']} | {order['d']} | {order['log10_n_train']:.1f} | "
                     f"{order['t_collapse']:.3g} | {cell('per_point', 1)} | "
                     f"{cell('per_point', 2)} | {ratio} | {cell('mean_jacobian', 1)} | "
                     f"{cell('mean_jacobian', 2)} | {cell('exact', 1)} / {cell('exact', 2)} |")
    return "\n".join(lines) + "\n"

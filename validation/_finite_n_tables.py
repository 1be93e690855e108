"""Tables of ``geomem finite-n``: the large-d REM values beside the exact theory, the
per-point comparison rows (exact vs MC vs REM), the per-configuration summary and their
markdown (split from :mod:`geomem.validation.finite_n`, which runs the grid and draws)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from ..theory.manifold import LinearManifold
from ..theory.schedules import get_schedule
from ._common import CI_LEVEL, QUANTILES

__all__ = ["MC_FIELDS", "REM_TOLERANCE", "SUMMARY_COLUMNS", "compare_rows", "markdown_table",
           "rem_values", "summary_markdown", "summary_rows"]

#: relative REM discrepancy above which a point is flagged (when the exact theory passes)
REM_TOLERANCE = 0.2
#: MC summary fields in column order (``summarize``: mean, 95% CI, quantiles)
MC_FIELDS = ("mean", "ci_low", "ci_high") + tuple(f"q{int(round(q * 100)):02d}" for q in QUANTILES)


# ----------------------------------------------------------------------------- REM
def rem_values(model: LinearManifold, t: Any, n_train: int, schedule: Any) -> dict[str, Any]:
    """Large-d REM at times t (T,): sum_w2 = 1 - lam* and jac (T, K), quenched and annealed.

    Quenched: lam* = E_x lam*(x) over fresh x (deterministic quadrature), plugged into
    -Delta/(Delta + lam* a^2 s_k^2); annealed: lam* solving E_x KL = ln N.
    """
    from ..theory.rem import annealed_freezing_parameter, freezing_parameter

    schedule = get_schedule(schedule)
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    a, delta = schedule.a(t)[:, None], schedule.delta(t)[:, None]
    v = np.asarray(model.variances)
    out: dict[str, Any] = {}
    for name, lam in (("quenched", freezing_parameter(model, t, n_train, schedule)),
                      ("annealed", annealed_freezing_parameter(model, t, n_train, schedule))):
        lam = np.asarray(lam, dtype=np.float64).reshape(t.shape)
        out[f"sum_w2_{name}"] = 1.0 - lam
        out[f"jac_{name}"] = -delta / (delta + lam[:, None] * a * a * v)
    return out


# ----------------------------------------------------------------------------- tables
def _deviation(exact: float, low: float, high: float, mean: float) -> float:
    """|exact - mean| / half-width of the interval (inf when the interval is empty)."""
    half = 0.5 * (high - low)
    if not np.isfinite(half):
        return float("nan")
    if half == 0.0:
        return 0.0 if exact == mean else float("inf")
    return abs(exact - mean) / half


def _relative(value: float, reference: float) -> float:
    return (value - reference) / abs(reference) if reference != 0 else float("inf")


def compare_rows(points: list[dict], exact: list[dict], mc: list[dict], *,
                 model_of: Any) -> list[dict]:
    """Tidy rows, one per (d, schedule, t, quantity[, subspace]): exact, REM, MC, verdicts.

    ``points[i]`` is the grid point shared by ``exact[i]`` and ``mc[i]``.
    """
    rows = []
    rem_cache: dict[tuple, dict] = {}
    for p, ex, mcr in zip(points, exact, mc, strict=True):
        model = model_of(p["d"])   # the geometry of dimension d (finite_n_model)
        key = (p["d"], p["schedule"], p["n_train"])
        if key not in rem_cache:
            ts = sorted(q["t"] for q in points if (q["d"], q["schedule"], q["n_train"]) == key)
            rem_cache[key] = {"t": ts, **rem_values(model, ts, p["n_train"], p["schedule"])}
        rem = rem_cache[key]
        j = rem["t"].index(p["t"])
        base = {"d": p["d"], "dims": "+".join(str(m) for m in model.dims),
                "schedule": p["schedule"], "n_train": p["n_train"], "t": p["t"],
                "delta": ex["delta"]}
        entries = [("sum_w2", "", "", "", ex["sum_w2"], rem["sum_w2_quenched"][j],
                    rem["sum_w2_annealed"][j], mcr["sum_w2"])]
        for k in range(model.n_subspaces):
            entries.append(("jac_scaled", k, model.dims[k], model.stds[k], ex["jac"][k],
                            rem["jac_quenched"][j, k], rem["jac_annealed"][j, k],
                            mcr["jac"][k]))
        for quantity, sub, dim, std, ev, rq, ra, summ in entries:
            # the cache stores non-finite floats as strings ('nan'); float() restores them
            ev, summ = float(ev), {k: float(v) for k, v in summ.items()}
            dev = _deviation(ev, summ["ci_low"], summ["ci_high"], summ["mean"])
            inside = bool(dev <= 1.0)
            rel_q, rel_a = _relative(float(rq), ev), _relative(float(ra), ev)
            rows.append({
                **base, "quantity": quantity, "subspace": sub, "subspace_dim": dim,
                "subspace_std": std, "exact": ev, "rem_quenched": float(rq),
                "rem_annealed": float(ra), **{f"mc_{k}": summ[k] for k in MC_FIELDS},
                "deviation": dev, "inside_ci": inside,
                "rem_quenched_rel": rel_q, "rem_annealed_rel": rel_a,
                "flag_rem_quenched": inside and abs(rel_q) > REM_TOLERANCE,
                "flag_rem_annealed": inside and abs(rel_a) > REM_TOLERANCE,
            })
    return rows


def _coverage_p_value(inside: int, total: int) -> float:
    """Two-sided binomial p-value of ``inside`` successes at the nominal CI coverage."""
    if total == 0:
        return float("nan")
    return float(stats.binomtest(inside, total, CI_LEVEL).pvalue)


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per (d, schedule, quantity, subspace): coverage, worst deviation, REM discrepancy;
    then one overall row (d = "all")."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["d"], r["dims"], r["schedule"], r["quantity"], r["subspace"]),
                          []).append(r)
    out = []
    for (d, dims, sched, quantity, sub), sel in list(groups.items()) + [
            (("all", "", "", "all", ""), rows)]:
        devs = np.array([r["deviation"] for r in sel], dtype=float)
        worst = int(np.nanargmax(devs)) if np.any(np.isfinite(devs)) else 0
        inside = sum(r["inside_ci"] for r in sel)
        where = sel[worst]
        out.append({
            "d": d, "dims": dims, "schedule": sched, "quantity": quantity, "subspace": sub,
            "points": len(sel), "inside_ci": inside,
            "coverage_p_value": _coverage_p_value(inside, len(sel)),
            "worst_deviation": float(devs[worst]), "worst_t": where["t"],
            "worst_at": f"d={where['d']} {where['schedule']} {where['quantity']}"
                        f"{'' if where['subspace'] == '' else ' k=' + str(where['subspace'])}",
            "max_abs_rem_quenched_rel": max(abs(r["rem_quenched_rel"]) for r in sel),
            "max_abs_rem_annealed_rel": max(abs(r["rem_annealed_rel"]) for r in sel),
            "flagged_rem_quenched": sum(r["flag_rem_quenched"] for r in sel),
            "flagged_rem_annealed": sum(r["flag_rem_annealed"] for r in sel),
        })
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub markdown table of ``columns`` (floats to 3 significant digits)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


SUMMARY_COLUMNS = ["d", "dims", "schedule", "quantity", "subspace", "points", "inside_ci",
                   "coverage_p_value", "worst_deviation", "worst_t",
                   "max_abs_rem_quenched_rel", "max_abs_rem_annealed_rel",
                   "flagged_rem_quenched", "flagged_rem_annealed"]
POINT_COLUMNS = ["d", "schedule", "t", "quantity", "subspace", "exact", "mc_mean", "mc_ci_low",
                 "mc_ci_high", "mc_q50", "deviation", "inside_ci", "rem_quenched",
                 "rem_annealed", "rem_quenched_rel", "rem_annealed_rel"]


def summary_markdown(summary: list[dict], rows: list[dict]) -> str:
    """The summary (aggregate table, worst deviation, REM flags) and the per-point table."""
    overall = summary[-1]
    flagged = [r for r in rows if r["flag_rem_quenched"] or r["flag_rem_annealed"]]
    parts = [
        "# geomem finite-n: exact finite-N theory vs Monte Carlo vs large-d REM", "",
        f"Exact value inside the MC {CI_LEVEL:.0%} interval at {overall['inside_ci']}/"
        f"{overall['points']} comparisons (nominal {CI_LEVEL:.0%}; binomial p = "
        f"{overall['coverage_p_value']:.3g}). Worst deviation "
        f"{overall['worst_deviation']:.3g} half-widths at {overall['worst_at']}, "
        f"t = {overall['worst_t']:g}.", "",
        f"REM off by more than {REM_TOLERANCE:.0%} where the exact theory passes: "
        f"{overall['flagged_rem_quenched']} (quenched), {overall['flagged_rem_annealed']} "
        "(annealed) points. Where the REM is not condensed (lam* = 1) it predicts "
        "E[sum w^2] = 0, omitting the O(1/N) term, so its relative discrepancy there is "
        "-100% by construction; Delta E[J]_k there is the population value.", "",
        "## Summary", "", markdown_table(summary, SUMMARY_COLUMNS), "",
    ]
    if flagged:
        parts += ["## REM flagged (exact passes, REM off by > "
                  f"{REM_TOLERANCE:.0%})", "", markdown_table(flagged, POINT_COLUMNS), ""]
    parts += ["## All comparisons", "", markdown_table(rows, POINT_COLUMNS), ""]
    return "\n".join(parts)



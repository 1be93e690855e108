"""``geomem speciation``: the cloning experiment against the speciation time t_S.

Data: the symmetric two-class Gaussian mixture of Biroli, Bonnaire, de Bortoli & Mézard 2024
(`GaussianMixture.symmetric`: means ``±mu e`` in R^d, unit isotropic components), for several
largest covariance eigenvalues ``Lambda = mu^2 + 1``. For each Lambda and schedule, reverse SDE
trajectories of the exact population score (`geomem.numerics.cloning`) are cloned at times
t_c on a ln-SNR grid around t_S; the fraction of pairs whose two branches end on the same side
of the hyperplane between the means estimates ``phi(t_c)``.

Measured t_S: where phi rises through the midpoint ``(1 + 1/2) / 2 = 3/4`` (a rule fixed
before looking at the results), interpolated in ln t, with a 95% parametric-bootstrap CI
(binomial redraws of every clone time, ``BOOTSTRAP`` replicates). Predictions beside it:

- ``exact``: the 3/4 crossing of the exact cloning probability
  (`geomem.theory.cloning_probability`, no simulation);
- ``snr``: `speciation_time` (``a^2 Lambda = Delta``, any schedule);
- ``published``: ``(1/2) ln Lambda`` (VP only; Biroli et al., large Lambda).

Outputs under ``--out``: ``cloning.csv`` (schedule, Lambda, t_clone, n_pairs, n_same,
same_fraction, theory), ``speciation.csv`` (one row per schedule and Lambda: measured t_S and
CI, the predictions), ``speciation.png/.pdf``, ``record.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from scipy import optimize

from geomem.numerics.cloning import cloning_experiment
from geomem.theory import GaussianMixture, cloning_probability, speciation_time
from geomem.theory.schedules import VP, get_schedule
from geomem.theory.speciation import two_class_direction

from ._common import bad_option, crossing_status, default_out, parse_choices, parse_floats, pyplot
from .options import OutOption, QuickOption, SeedOption, quick_sizes
from .progress import progress
from .records import RunOutput

__all__ = ["MIDPOINT", "run_speciation"]

COMMAND = "speciation"
RESULT_FORMAT = 1
#: phi level that defines the measured t_S: halfway between 1/2 (t -> inf) and 1 (t -> 0)
MIDPOINT = 0.75
#: parametric-bootstrap replicates of the measured crossing
BOOTSTRAP = 1000
#: ln-SNR window around t_S: the start (phi = 1/2 to 1e-3) and the end of the runs (the
#: classes fixed), and the clone grid inside it
START_LOG_SNR_OFFSET = -6.0
END_LOG_SNR = math.log(1e4)
CLONE_LOG_SNR_RANGE = (-4.0, 4.0)
SCHEDULES = ("vp", "ve")


def _model(lam: float, d: int) -> GaussianMixture:
    return GaussianMixture.symmetric(d, mean_norm=math.sqrt(lam - 1.0), std=1.0, seed=0)


def _clone_times(schedule, t_s: float, n_clone: int) -> np.ndarray:
    centre = float(schedule.log_snr(t_s))
    grid = centre + np.linspace(*CLONE_LOG_SNR_RANGE, n_clone)
    return np.asarray(schedule.time_at_log_snr(grid), dtype=float)


def _measure(schedule_name: str, lam: float, d: int, pairs: int, n_clone: int, steps: int,
             seed: int) -> dict[str, Any]:
    schedule = get_schedule(schedule_name)
    model = _model(lam, d)
    e, _, _ = two_class_direction(model)
    t_s = speciation_time(model, schedule)
    centre = float(schedule.log_snr(t_s))
    t_start = float(schedule.time_at_log_snr(centre + START_LOG_SNR_OFFSET))
    t_end = float(schedule.time_at_log_snr(END_LOG_SNR))
    start = model.noised(t_start, schedule).sample(pairs, np.random.default_rng([seed, 7]))
    res = cloning_experiment(lambda x, t: model.population_score(x, t, schedule), schedule,
                             start, t_start=t_start, t_end=t_end,
                             clone_times=_clone_times(schedule, t_s, n_clone),
                             label=lambda x: x @ e > 0, steps=steps, seed=seed)
    return {"t_clone": res.clone_times.tolist(), "n_pairs": res.n_pairs.tolist(),
            "n_same": res.n_same.tolist()}


def _crossing(t: np.ndarray, phi: np.ndarray) -> float:
    """ln-t interpolated time where phi rises through MIDPOINT as t decreases (NaN if not)."""
    return crossing_status(t, 1.0 - phi, 1.0 - MIDPOINT)[0]


def exact_crossing(model: GaussianMixture, schedule, t_s: float) -> float:
    """Root of ``cloning_probability = MIDPOINT`` in ln SNR (bracket: the clone window)."""
    centre = float(schedule.log_snr(t_s))

    def excess(log_snr: float) -> float:
        t = float(schedule.time_at_log_snr(log_snr))
        return float(cloning_probability(model, t, schedule)) - MIDPOINT

    lo, hi = centre + CLONE_LOG_SNR_RANGE[0], centre + CLONE_LOG_SNR_RANGE[1]
    return float(schedule.time_at_log_snr(optimize.brentq(excess, lo, hi, xtol=1e-12)))


def _bootstrap_ci(t: np.ndarray, n_same: np.ndarray, n_pairs: np.ndarray, seed: int
                  ) -> tuple[float, float, int]:
    rng = np.random.default_rng([seed, 99])
    p = n_same / n_pairs
    draws = rng.binomial(n_pairs[None, :], p[None, :], size=(BOOTSTRAP, p.size)) / n_pairs
    roots = np.array([_crossing(t, row) for row in draws])
    ok = roots[np.isfinite(roots)]
    if ok.size < BOOTSTRAP // 2:
        return float("nan"), float("nan"), int(ok.size)
    return float(np.percentile(ok, 2.5)), float(np.percentile(ok, 97.5)), int(ok.size)


def run_speciation(out: Path, *, lambdas: Sequence[float] = (4.0, 11.0, 31.0, 101.0, 301.0,
                                                            1001.0),
                   schedules: Sequence[str] = SCHEDULES, d: int = 20, pairs: int = 2000,
                   n_clone: int = 17, steps: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    """Measure (cached per schedule and Lambda), tabulate, draw, record; returns the t_S rows."""
    run = RunOutput(out, COMMAND)
    clone_rows, ts_rows = [], []
    jobs = [(s, lam) for s in schedules for lam in lambdas]
    for schedule_name, lam in progress(jobs, COMMAND):
        schedule = get_schedule(schedule_name)
        model = _model(lam, d)
        key = {"format": RESULT_FORMAT, "schedule": schedule_name, "lambda": lam, "d": d,
               "pairs": pairs, "n_clone": n_clone, "steps": steps, "seed": seed}
        res = run.cached(key, lambda s=schedule_name, lam=lam: _measure(s, lam, d, pairs,
                                                                        n_clone, steps, seed))
        t = np.asarray(res["t_clone"])
        n_same, n_pairs = np.asarray(res["n_same"]), np.asarray(res["n_pairs"])
        phi = n_same / n_pairs
        theory = cloning_probability(model, t, schedule)
        clone_rows += [{"schedule": schedule_name, "Lambda": lam, "t_clone": ti, "n_pairs": int(n),
                        "n_same": int(k), "same_fraction": p, "theory": th,
                        "z_score": (p - th) / math.sqrt(th * (1 - th) / n)}
                       for ti, n, k, p, th in zip(t, n_pairs, n_same, phi, theory, strict=True)]
        t_s = speciation_time(model, schedule)
        low, high, n_ok = _bootstrap_ci(t, n_same, n_pairs, seed)
        exact = exact_crossing(model, schedule, t_s)
        ts_rows.append({
            "schedule": schedule_name, "Lambda": lam, "t_S_measured": _crossing(t, phi),
            "ci_low": low, "ci_high": high, "bootstrap_crossed": n_ok, "t_S_exact": exact,
            "exact_in_ci": bool(low <= exact <= high),
            "t_S_snr": t_s,
            "t_S_published": (speciation_time(model, schedule, form="published")
                              if isinstance(schedule, VP) else float("nan")),
            "phi_at_t_S_snr": float(cloning_probability(model, t_s, schedule))})
    run.write_csv("cloning", clone_rows)
    run.write_csv("speciation", ts_rows)
    _plot(run, clone_rows, ts_rows, schedules, lambdas, d)
    run.write_record({"lambdas": list(lambdas), "schedules": list(schedules), "d": d,
                      "pairs": pairs, "n_clone": n_clone, "steps": steps,
                      "midpoint": MIDPOINT, "bootstrap": BOOTSTRAP,
                      "clone_log_snr_range": list(CLONE_LOG_SNR_RANGE),
                      "end_log_snr": END_LOG_SNR, "label": "sign of x . e at the end"},
                     seeds={"seed": seed}, extra={"speciation": ts_rows})
    return ts_rows


def _plot(run: RunOutput, clone_rows, ts_rows, schedules, lambdas, d) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(len(schedules), 2, figsize=(10, 3.8 * len(schedules)),
                             squeeze=False, constrained_layout=True)
    for row, name in zip(axes, schedules, strict=True):
        schedule = get_schedule(name)
        ax = row[0]
        for i, lam in enumerate(lambdas):
            mine = [r for r in clone_rows if r["schedule"] == name and r["Lambda"] == lam]
            t = np.array([r["t_clone"] for r in mine])
            p = np.array([r["same_fraction"] for r in mine])
            err = 1.96 * np.sqrt(p * (1 - p) / np.array([r["n_pairs"] for r in mine]))
            model = _model(lam, d)
            t_s = speciation_time(model, schedule)
            x = t / t_s
            ax.errorbar(x, p, yerr=err, fmt="o", ms=3, color=f"C{i}", label=f"Lambda={lam:g}")
            fine = np.geomspace(t.min(), t.max(), 200)
            ax.plot(fine / t_s, cloning_probability(model, fine, schedule), "-", lw=1,
                    color=f"C{i}")
        ax.axhline(MIDPOINT, color="k", ls=":", lw=0.8)
        ax.axvline(1.0, color="k", ls="--", lw=0.8, label="t = t_S (formula)")
        ax.set(xscale="log", xlabel="cloning time t / t_S(formula)",
               ylabel="P(both clones in the same class)",
               title=f"{name.upper()}: measured (points, 95% CI) and exact (lines)")
        ax.legend(fontsize=7)
        ax = row[1]
        mine = [r for r in ts_rows if r["schedule"] == name]
        lam = np.array([r["Lambda"] for r in mine])
        meas = np.array([r["t_S_measured"] for r in mine])
        yerr = np.abs(np.array([[r["ci_low"] for r in mine], [r["ci_high"] for r in mine]])
                      - meas)
        ax.errorbar(lam, meas, yerr=yerr, fmt="o", color="C0", label="measured (phi = 3/4)")
        ax.plot(lam, [r["t_S_exact"] for r in mine], "s", mfc="none", color="C1",
                label="exact phi = 3/4 crossing")
        fine = np.geomspace(lam.min(), lam.max(), 100)
        ax.plot(fine, [speciation_time(_model(v, d), schedule) for v in fine], "k-", lw=1,
                label="t_S: a^2 Lambda = Delta")
        if isinstance(schedule, VP):
            ax.plot(fine, 0.5 * np.log(fine), "k--", lw=1, label="(1/2) ln Lambda [pub]")
            ax.set(xscale="log")
        else:
            ax.set(xscale="log", yscale="log")
        ax.set(xlabel="Lambda (largest covariance eigenvalue)", ylabel="speciation time",
               title=f"{name.upper()}: t_S against Lambda")
        ax.legend(fontsize=7)
    fig.suptitle(f"Cloning experiment, two-class Gaussian mixture in d = {d}", fontsize=10)
    run.save_figure(fig, "speciation")
    plt.close(fig)


def register(app: typer.Typer) -> None:
    @app.command("speciation")
    def speciation_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        lambdas: Annotated[str, typer.Option(help="Largest covariance eigenvalues Lambda (> 1).")
                           ] = "4,11,31,101,301,1001",
        schedules: Annotated[str, typer.Option(help=f"Comma-separated, from {SCHEDULES}.")
                             ] = ",".join(SCHEDULES),
        dim: Annotated[int, typer.Option("--dim", help="Ambient dimension d.")] = 20,
        pairs: Annotated[int, typer.Option(help="Cloned pairs per clone time.")] = 2000,
        clone_times: Annotated[int, typer.Option("--clone-times",
                                                 help="Clone times per Lambda.")] = 17,
        steps: Annotated[int, typer.Option(help="Reverse-SDE steps (ln-SNR grid).")] = 300,
        seed: SeedOption = 0,
        quick: QuickOption = False,
    ) -> None:
        """Cloning experiment: measured speciation time against t_S = (1/2) ln Lambda.

        --quick: Lambda 11,101, 200 pairs, 9 clone times, 100 steps, except for sizes given
        explicitly."""
        sizes = quick_sizes(ctx, quick, {"lambdas": "11,101", "pairs": 200,
                                         "clone_times": 9, "steps": 100})
        lam = parse_floats("--lambdas", sizes["lambdas"])
        if any(v <= 1.0 for v in lam):
            raise bad_option("--lambdas", f"every Lambda must be > 1, got {sizes['lambdas']}")
        names = parse_choices("--schedules", schedules, SCHEDULES)
        for option, value, low in (("--dim", dim, 1), ("--pairs", sizes["pairs"], 10),
                                   ("--clone-times", sizes["clone_times"], 3),
                                   ("--steps", sizes["steps"], 10)):
            if value < low:
                raise bad_option(option, f"must be >= {low}, got {value}")
        run_speciation(out or default_out(COMMAND), lambdas=lam, schedules=names, d=dim,
                       pairs=sizes["pairs"], n_clone=sizes["clone_times"],
                       steps=sizes["steps"], seed=seed)

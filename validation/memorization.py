"""``geomem memorization``: when do trained score networks memorize? The memorization diagram
in (N, training step) on a linear manifold, with the exact empirical score (the
infinite-training limit) and the population score (the generalization limit) beside it.

Per training-set size N and seed, one network is trained with the fast protocol
(:class:`geomem.numerics.training.TrainingConfig`); networks of one N form one stacked
ensemble, and the ensembles run through the executor interface (``--workers``, Dask). EMA
snapshots are saved at log-spaced steps (8 per decade); at each snapshot, for every noise
level sigma of ``--sigmas`` and 16 training points + noise and 16 fresh points x = y + sigma xi:

- the per-subspace retained dimension of the network's score Jacobian
  (:func:`geomem.numerics.retained.subspace_retained_dimension`, default definition), and of
  the exact empirical score of the same training set at the same points; the population
  value is the full subspace dimension m_k by construction of the gap criterion;
- the relative distance ``|s - s_ref|^2/|s_ref|^2`` of the network's score to the empirical
  score and (Gaussian geometry only: closed form) to the population score;
- the memorized fraction of 64 probability-flow samples (nearest / second-nearest training
  point distance below 1/3).

``tau_mem`` of a network is the first snapshot step at which the total retained dimension at
the reference sigma (the first of ``--sigmas``) on training points falls below half of the
population value (log-interpolated between snapshots; censored when never within its budget).
Per N: geometric mean over seeds with a t interval on log tau (empty when any seed is censored).
The exponent of ``tau_mem ~ N^b`` is an ordinary least-squares fit of log tau on log N over
all uncensored (N, seed) pairs, with its t interval.

Budget: network N trains ``min(--max-steps, --steps-per-point * N)`` steps (the memorization
time grows about linearly with N). Outputs: ``memorization.png/.pdf`` (heat maps, memorized
fraction, tau_mem), ``memorization.csv`` (n_train, seed, step, sigma, points, subspace,
source, retained), ``samples.csv``, ``score_distance.csv``, ``tau_mem.csv``, ``record.json``;
networks under the checkpoint folder (``--cache-dir``), measurements in ``cache/``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from scipy import stats

from ._common import checkpoint_dir, default_out, parse_floats, parse_ints
from ._memorization_tasks import GEOMETRIES, group_budget, train_and_measure
from .executors import run_grid
from .options import (
    CacheDirOption,
    DaskWorkersOption,
    OutOption,
    QuickOption,
    SchedulerOption,
    SeedOption,
    WorkersOption,
    cli_executor,
    quick_sizes,
)
from .progress import note
from .records import RunOutput

__all__ = ["COMMAND", "DEFAULTS", "QUICK", "fit_exponent", "memorization_time",
           "register", "run_memorization", "tau_summary"]

COMMAND = "memorization"
#: default grid: budgets 300 x N steps (4.8k ... 154k), about 1.5-2x the memorization time
#: of the fast protocol, which grows about linearly with N; ~12 min of training on 2 cores
DEFAULTS = {"n_values": (16, 32, 64, 128, 256, 512), "seeds": 2, "max_steps": 160_000,
            "steps_per_point": 300, "sigmas": (0.02, 0.05, 0.1)}
QUICK = {"n_values": (8, 16), "seeds": 2, "max_steps": 300, "steps_per_point": 40,
         "sigmas": (0.02, 0.1)}
#: fraction of the population retained dimension below which a network counts as memorizing
MEMORIZED_LEVEL = 0.5


# ----------------------------------------------------------------------------- statistics
def memorization_time(steps: Sequence[float], retained: Sequence[float], population: float,
                      level: float = MEMORIZED_LEVEL) -> float:
    """First step at which ``retained`` falls below ``level * population``, log-interpolated
    between the two snapshots around the crossing; NaN when it never does (censored)."""
    steps, retained = np.asarray(steps, float), np.asarray(retained, float)
    threshold = level * population
    below = np.flatnonzero(retained < threshold)
    if below.size == 0:
        return float("nan")
    i = int(below[0])
    if i == 0:
        return float(steps[0])
    r0, r1 = retained[i - 1], retained[i]
    frac = (r0 - threshold) / (r0 - r1)
    return float(np.exp(np.log(steps[i - 1]) + frac * (np.log(steps[i]) - np.log(steps[i - 1]))))


def tau_summary(taus: Sequence[float]) -> dict[str, Any]:
    """Geometric mean of the seeds' tau_mem with a 95% t interval on log tau; None entries
    when any seed is censored (NaN) or fewer than 2 seeds are finite."""
    taus = np.asarray(taus, float)
    censored = int(np.sum(~np.isfinite(taus)))
    out = {"tau_mem": None, "ci_low": None, "ci_high": None, "n_seeds": int(taus.size),
           "n_censored": censored}
    if censored or taus.size < 1:
        return out
    logs = np.log(taus)
    out["tau_mem"] = float(np.exp(logs.mean()))
    if taus.size >= 2:
        half = stats.t.ppf(0.975, taus.size - 1) * logs.std(ddof=1) / np.sqrt(taus.size)
        out["ci_low"], out["ci_high"] = float(np.exp(logs.mean() - half)), \
            float(np.exp(logs.mean() + half))
    return out


def fit_exponent(n_train: Sequence[float], taus: Sequence[float]) -> dict[str, Any]:
    """OLS slope b of log tau = c + b log N over the finite pairs, with its 95% t interval."""
    n, tau = np.asarray(n_train, float), np.asarray(taus, float)
    ok = np.isfinite(tau) & (tau > 0)
    out = {"exponent": None, "ci_low": None, "ci_high": None, "n_pairs": int(ok.sum()),
           "n_sizes": int(np.unique(n[ok]).size)}
    if out["n_sizes"] < 2:
        return out
    fit = stats.linregress(np.log(n[ok]), np.log(tau[ok]))
    out.update(exponent=float(fit.slope), intercept=float(fit.intercept))
    if ok.sum() > 2:
        half = stats.t.ppf(0.975, ok.sum() - 2) * fit.stderr
        out.update(ci_low=float(fit.slope - half), ci_high=float(fit.slope + half))
    return out


# ----------------------------------------------------------------------------- the run
def run_memorization(out: Path, *, n_values: Sequence[int] = DEFAULTS["n_values"],
                     seeds: int = DEFAULTS["seeds"], max_steps: int = DEFAULTS["max_steps"],
                     steps_per_point: int = DEFAULTS["steps_per_point"],
                     sigmas: Sequence[float] = DEFAULTS["sigmas"], geometry: str = "fig4",
                     seed: int = 0, executor: Any = None, cache_dir: Path | None = None,
                     device: str = "cpu", quick: bool = False) -> dict[str, Any]:
    """Train, measure, write every output; returns the summary written to record.json."""
    from ._memorization_plots import plot_memorization

    started = time.perf_counter()
    run = RunOutput(out, COMMAND)
    ckpt = checkpoint_dir(out, cache_dir)
    points = [{"n_train": int(n), "seeds": [seed + s for s in range(seeds)],
               "steps": group_budget(n, max_steps, steps_per_point), "geometry": geometry,
               "sigmas": [float(s) for s in sigmas], "checkpoints": str(ckpt),
               "device": device, "quick": bool(quick)} for n in n_values]
    order = sorted(range(len(points)), key=lambda i: -points[i]["steps"])   # longest first
    results_sorted = run_grid(train_and_measure, [points[i] for i in order], seed=seed,
                              run=run, executor=executor, label=f"{COMMAND} networks",
                              key_extra={"checkpoints": None})
    results = [None] * len(points)
    for pos, i in enumerate(order):
        results[i] = results_sorted[pos]
    rows, sample_rows, distance_rows, tau_rows, per_seed = [], [], [], [], []
    subspace_rows: list[dict] = []
    model = GEOMETRIES[geometry]()
    population_total = float(sum(model.dims))
    ref_sigma = float(sigmas[0])
    for point, res in zip(points, results, strict=True):
        rows += res["retained"]
        sample_rows += res["samples"]
        distance_rows += res["distance"]
        taus = []
        for s in point["seeds"]:
            tau = _network_loss_time(res["retained"], s, "train", "all", ref_sigma,
                                     population_total)
            taus.append(tau)
            per_seed.append({"n_train": point["n_train"], "seed": s, "tau_mem": tau,
                             "budget": point["steps"]})
        tau_rows.append({"n_train": point["n_train"], **tau_summary(taus),
                         "budget": point["steps"]})
        subspace_rows += _subspace_taus(res["retained"], point, model, ref_sigma)
    exponent = fit_exponent([r["n_train"] for r in per_seed], [r["tau_mem"] for r in per_seed])
    run.write_csv("memorization", rows, ["n_train", "seed", "step", "sigma", "points",
                                         "subspace", "source", "retained"])
    run.write_csv("samples", sample_rows, ["n_train", "seed", "step", "memorized_fraction"])
    run.write_csv("score_distance", distance_rows, ["n_train", "seed", "step", "sigma",
                                                    "points", "reference",
                                                    "relative_distance"])
    run.write_csv("tau_mem", tau_rows, ["n_train", "tau_mem", "ci_low", "ci_high", "n_seeds",
                                        "n_censored", "budget"])
    run.write_csv("tau_mem_seeds", per_seed, ["n_train", "seed", "tau_mem", "budget"])
    run.write_csv("tau_subspace", subspace_rows, ["n_train", "seed", "subspace", "points",
                                                  "tau_loss", "budget"])
    plot_memorization(run, rows, sample_rows, tau_rows, per_seed, exponent, model=model,
                      ref_sigma=ref_sigma, quick=quick)
    summary = {"tau_mem": tau_rows, "exponent": exponent,
               "first_lost_subspace": _first_lost(subspace_rows),
               "retained_at_ref_sigma_final": _final_retained(rows, points, ref_sigma),
               "wall_seconds": time.perf_counter() - started,
               "training": [r["training"] for r in results]}
    run.write_record(
        parameters={"n_values": list(n_values), "seeds": seeds, "max_steps": max_steps,
                    "steps_per_point": steps_per_point, "sigmas": list(sigmas),
                    "geometry": geometry, "device": device, "quick": quick,
                    "memorized_level": MEMORIZED_LEVEL, "checkpoints": str(ckpt),
                    "training_config": results[0]["training"]["config"] if results else None},
        seeds={"seed": seed, "network_seeds": points[0]["seeds"] if points else []},
        extra={"summary": summary, "smoke_test": bool(quick)})
    return summary


def _network_loss_time(rows: list[dict], seed: int, points: str, subspace: Any, sigma: float,
                       population: float) -> float:
    """:func:`memorization_time` of one network's retained-dimension curve (snapshot steps in
    order) for one kind of points, subspace (or "all") and noise level."""
    curve = sorted((r["step"], r["retained"]) for r in rows
                   if r["seed"] == seed and r["source"] == "network" and r["points"] == points
                   and r["subspace"] == subspace and r["sigma"] == sigma)
    return memorization_time([c[0] for c in curve], [c[1] for c in curve], population)


def _subspace_taus(rows: list[dict], point: dict, model: Any, sigma: float) -> list[dict]:
    """Per seed, subspace and kind of points: the first step at which the network's retained
    dimension of the subspace falls below half of m_k (log-interpolated; NaN: censored)."""
    out = []
    for s in point["seeds"]:
        for kind in ("train", "fresh"):
            for k, m in enumerate(model.dims):
                out.append({"n_train": point["n_train"], "seed": s, "subspace": k,
                            "points": kind, "budget": point["steps"],
                            "tau_loss": _network_loss_time(rows, s, kind, k, sigma, float(m))})
    return out


def _first_lost(rows: list[dict]) -> list[dict]:
    """Per N and kind of points: the paired ratio tau_loss(subspace 0) / tau_loss(subspace 1)
    over seeds (geometric mean; < 1: the high-variance subspace 0 is lost first)."""
    out = []
    for n in sorted({r["n_train"] for r in rows}):
        for kind in ("train", "fresh"):
            sel = [r for r in rows if r["n_train"] == n and r["points"] == kind]
            seeds = sorted({r["seed"] for r in sel})
            ratios = []
            for s in seeds:
                t = {r["subspace"]: r["tau_loss"] for r in sel if r["seed"] == s}
                if np.isfinite(t.get(0, np.nan)) and np.isfinite(t.get(1, np.nan)):
                    ratios.append(t[0] / t[1])
            out.append({"n_train": n, "points": kind, "n_pairs": len(ratios),
                        "ratio_0_over_1": float(np.exp(np.mean(np.log(ratios))))
                        if ratios else None})
    return out


def _final_retained(rows: list[dict], points: list[dict], sigma: float) -> list[dict]:
    """Mean total retained dimension at the last snapshot (network and empirical), per N."""
    out = []
    for p in points:
        sel = [r for r in rows if r["n_train"] == p["n_train"] and r["subspace"] == "all"
               and r["sigma"] == sigma and r["points"] == "train"]
        if not sel:
            continue
        last = max(r["step"] for r in sel if r["source"] == "network")
        net = [r["retained"] for r in sel if r["source"] == "network" and r["step"] == last]
        emp = [r["retained"] for r in sel if r["source"] == "empirical"]
        out.append({"n_train": p["n_train"], "step": last, "network": float(np.mean(net)),
                    "empirical": float(np.mean(emp)) if emp else None})
    return out


def register(app: typer.Typer) -> None:
    @app.command(COMMAND)
    def memorization_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        n_values: Annotated[str, typer.Option(
            "--n-values", help="Training-set sizes N, comma-separated (>= 2).")] =
            ",".join(map(str, DEFAULTS["n_values"])),
        seeds: Annotated[int, typer.Option("--seeds", min=1, max=32,
                                           help="Networks per N (seeds).")] = DEFAULTS["seeds"],
        max_steps: Annotated[int, typer.Option(
            "--max-steps", min=100, max=10_000_000,
            help="Largest training budget of one network (steps).")] = DEFAULTS["max_steps"],
        steps_per_point: Annotated[int, typer.Option(
            "--steps-per-point", min=1, max=1_000_000,
            help="Budget per training point: network N trains min(max-steps, this x N) "
                 "steps.")] = DEFAULTS["steps_per_point"],
        sigmas: Annotated[str, typer.Option(
            "--sigmas", help="Noise levels of the measurements; the first is the reference "
                             "for tau_mem. In [0.01, 2].")] =
            ",".join(map(str, DEFAULTS["sigmas"])),
        geometry: Annotated[str, typer.Option(
            "--geometry", help=f"Data: one of {', '.join(GEOMETRIES)} (fig4: the paper's "
                               "normalised generator; fig4-gaussian: un-normalised, exact "
                               "population score).")] = "fig4",
        device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
        seed: SeedOption = 0,
        quick: QuickOption = False,
        workers: WorkersOption = 2,
        scheduler: SchedulerOption = None,
        dask_workers: DaskWorkersOption = None,
        cache_dir: CacheDirOption = None,
    ) -> None:
        """Memorization diagram of trained networks in (N, training step); tau_mem(N)."""
        sizes = quick_sizes(ctx, quick, {"n_values": ",".join(map(str, QUICK["n_values"])),
                                         "seeds": QUICK["seeds"],
                                         "max_steps": QUICK["max_steps"],
                                         "steps_per_point": QUICK["steps_per_point"],
                                         "sigmas": ",".join(map(str, QUICK["sigmas"]))})
        ns = parse_ints("--n-values", sizes["n_values"], minimum=2)
        sig = parse_floats("--sigmas", sizes["sigmas"])
        if any(not 0.01 <= s <= 2.0 for s in sig):
            raise typer.BadParameter(f"allowed 0.01 <= sigma <= 2 (the training range), got "
                                     f"{sig}", param_hint="--sigmas")
        if geometry not in GEOMETRIES:
            raise typer.BadParameter(f"allowed one of {', '.join(GEOMETRIES)}, got "
                                     f"{geometry!r}", param_hint="--geometry")
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise typer.BadParameter(f"allowed cpu, cuda or cuda:N, got {device!r}",
                                     param_hint="--device")
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise typer.BadParameter("CUDA is not available on this machine; allowed: cpu",
                                         param_hint="--device")
        executor = cli_executor(workers, scheduler, dask_workers)
        target = out or default_out(COMMAND)
        with executor:
            summary = run_memorization(
                target, n_values=ns, seeds=sizes["seeds"], max_steps=sizes["max_steps"],
                steps_per_point=sizes["steps_per_point"], sigmas=sig, geometry=geometry,
                seed=seed, executor=executor, cache_dir=cache_dir, device=device,
                quick=quick)
        for row in summary["tau_mem"]:
            note(f"N = {row['n_train']}: tau_mem = {row['tau_mem']} "
                 f"[{row['ci_low']}, {row['ci_high']}] (budget {row['budget']}, "
                 f"{row['n_censored']} censored)")
        e = summary["exponent"]
        note(f"tau_mem ~ N^b: b = {e['exponent']} [{e['ci_low']}, {e['ci_high']}]; "
             f"outputs in {target}")

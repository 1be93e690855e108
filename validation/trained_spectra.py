"""``geomem trained-spectra``: Jacobian spectra and spectral-gap dimension of trained score
networks on the Figure-4 linear manifold, versus t and N (the losing-dimensions Figure 5).

Per training-set size N (default 250, 500, 1000, 20000; data: ``LinearManifold.figure4()``,
d = 30, subspaces of dimension 2 and 5 with stds 1 and 0.3, residual std 0.01, samples
normalised; true tangent dimension 7):

1. train (or load from ``<out>/checkpoints/<key>/``) a ScoreMLP by denoising score matching on
   the GeometricVE schedule sigma(t) = 0.01 * 5000^t (geomem.numerics.training; the step
   budget is scaled down from the paper's 2M steps, recorded as ``scale_down``);
2. at ``--n-times`` times t in linspace(0.8, 1e-5) (the paper's grid) and ``--points`` fresh
   data points x0, measure the singular values of the score Jacobian
   - ``network_ogroup``: the paper's orthogonal-group estimator around x0 at noise sigma(t)
     (largest value dropped before the dimension read-off: it is the mean-score artefact);
   - ``network_exact``: the exact torch.func Jacobian of the network at x = x0 + sigma xi;
   - ``empirical_exact``: the exact Jacobian of the empirical score of the same training set at
     the same x (THEORY §4);
   and the theory at VE time Delta = sigma^2: ``population`` (N = infinity), ``paper`` (THEORY
   §5a) and ``rem`` (THEORY §5b); spectra are averaged over the points (sorted, as the paper);
3. read off the dimension with geomem.numerics.dimension (``cliff``: the paper's detector,
   ``gap``: the deepest log gap), versus t and, at reference noise levels, versus N; values
   above the median are clipped to it first (see :func:`dimension_of`), and a flat spectrum
   (no gap: nothing resolved) counts as dimension 0 in the figures and the table;
4. baselines: scikit-dimension MLE, TwoNN and lPCA on the same training sets.

Every value in the spectra figure is ``Delta * sigma_i`` (normal directions at 1, a tangent
direction of variance v at Delta/(Delta + v)). Outputs: ``spectra.png/.pdf``,
``dimension.png/.pdf``, ``loss.png/.pdf``, ``spectra.csv``, ``dimensions.csv``,
``dimension_table.csv`` and ``.md`` (also printed), ``loss.csv``, ``record.json``; trained
networks under ``checkpoints/`` (re-used by re-runs), per-N measurements under ``cache/``.
"""

from __future__ import annotations

import copy
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from ..numerics.dimension import estimate_dimension
from ..numerics.empirical import jacobian_eigenvalues
from ..numerics.jacobians import orthogonal_group_singular_values, score_jacobian
from ..numerics.training import (
    PAPER_STEPS,
    TrainingConfig,
    checkpoint_key,
    load_score_model,
    train_or_load,
)
from ..theory.manifold import LinearManifold
from ..theory.predictions import predicted_singular_values
from ..theory.schedules import VE, GeometricVE
from ._common import bad_option, checkpoint_dir, default_out, parse_floats, parse_ints
from ._trained_spectra_plots import plot_dimensions, plot_loss, plot_spectra
from .executors import run_grid
from .options import (
    CacheDirOption,
    DaskWorkersOption,
    OutOption,
    SchedulerOption,
    WorkersOption,
    cli_executor,
)
from .progress import note, progress, training_progress
from .records import RunOutput

__all__ = ["COMMAND", "DEFAULT_N_VALUES", "QUICK", "THEORY_METHODS", "TRUE_DIMENSION",
           "register", "run_trained_spectra", "skdim_estimates"]

COMMAND = "trained-spectra"
#: scaled down from the paper's N = 250 ... 20000 to where the default budget shows the trend:
#: with the fast protocol a network memorizes after ~100-200 x N steps (geomem memorization),
#: so at 50k steps N = 16 and 64 have memorized, 256 is at the onset and 1024 has not
DEFAULT_N_VALUES = (16, 64, 256, 1024)
#: tangent dimension of LinearManifold.figure4() (2 + 5)
TRUE_DIMENSION = 7
#: the paper's measurement grid: 100 training times linspace(0.8, 1e-5) (THEORY §6)
T_GRID = (0.8, 1e-5)
#: noise levels sigma at which "dimension versus N" is summarised (nearest grid time)
DEFAULT_REF_SIGMAS = (0.02, 0.05, 0.1, 0.2)
THEORY_METHODS = ("population", "paper", "rem")
MEASURED = ("network_ogroup", "network_exact", "empirical_exact")
DIMENSION_METHODS = ("cliff", "gap")
SKDIM_ESTIMATORS = ("MLE", "TwoNN", "lPCA")
#: default CPU budget: 50k steps of the fast protocol (2.5% of the paper's 2M steps)
DEFAULT_STEPS = 50_000
QUICK = {"n_values": (64, 256), "steps": 300, "width": 32, "depth": 2, "n_times": 8,
         "points": 2, "ref_sigmas": (0.05, 0.2)}


# ----------------------------------------------------------------------------- Jacobian tools
#: where the Jacobians come from (recorded in record.json)
JACOBIAN_TOOLS = "geomem.numerics.jacobians (torch.func jacrev; orthogonal group)"


def _ogroup(score_fn: Callable, x0: np.ndarray, sigma: float, *, rng: np.random.Generator
            ) -> np.ndarray:
    return np.asarray(orthogonal_group_singular_values(score_fn, x0, sigma, rng=rng))


# ----------------------------------------------------------------------------- measurements
def _training_set(n: int, data_seed: int) -> np.ndarray:
    return LinearManifold.figure4().sample(n, np.random.default_rng([data_seed, n]))


def _train_one(point: dict, seed_sequence: Any = None) -> dict:
    """Grid task: train (resume, or load) the network of one N (one thread in a worker)."""
    if multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)
    n, config = int(point["n"]), TrainingConfig(**point["config"])
    bar = training_progress(config.steps, f"{COMMAND} N={n}")

    def hook(step: int, loss: float) -> None:
        bar.step(step - bar.n, loss=loss)

    try:
        net = train_or_load(point["root"], _training_set(n, point["data_seed"]), config,
                            point["seed"], data_seed=point["data_seed"], progress=hook)
    finally:
        bar.close()
    if net.loaded:
        note(f"{COMMAND} N={n}: reused checkpoint {net.path}")
    return {"n": n, "path": str(net.path), "loaded": net.loaded,
            "train_seconds": net.config.get("train_seconds"),
            "step": net.step}


def measure_spectra(net: Any, Y: np.ndarray, times: np.ndarray, n_points: int,
                    seed: int) -> dict[str, Any]:
    """Mean sorted singular values (T, d) of the three measured estimators (module doc) at
    ``n_points`` fresh data points per time, plus the network Jacobian's relative asymmetry
    |J - J^T|/|J| and the fraction of positive eigenvalues of its symmetric part (T,)."""
    jacobian, ogroup = score_jacobian, _ogroup
    model = LinearManifold.figure4()
    schedule = net.schedule
    net64 = copy.deepcopy(net).double().eval()
    for p in net64.parameters():
        p.requires_grad_(False)
    rng = np.random.default_rng([seed, len(Y), 1])
    x0 = model.sample(n_points, rng)
    out = {name: [] for name in (*MEASURED, "asymmetry", "positive_fraction")}
    for t in times:
        sigma = float(schedule.sigma(t))
        delta = sigma * sigma

        def score_fn(x, t=t):
            with torch.no_grad():
                return net64.score(torch.as_tensor(np.asarray(x), dtype=torch.float64),
                                   float(t)).numpy()

        x = x0 + sigma * rng.standard_normal(x0.shape)
        og = np.stack([ogroup(score_fn, x0[p], sigma, rng=rng) for p in range(n_points)])
        jac = jacobian(lambda v, t=t: net64.score(v, float(t)),
                       torch.as_tensor(x, dtype=torch.float64)).detach().numpy()
        sym = 0.5 * (jac + np.swapaxes(jac, 1, 2))
        emp = np.abs(jacobian_eigenvalues(x, Y, a=1.0, delta=delta))
        out["network_ogroup"].append(np.mean(-np.sort(-og, axis=1), axis=0))
        out["network_exact"].append(np.mean(np.linalg.svd(jac, compute_uv=False), axis=0))
        out["empirical_exact"].append(np.mean(-np.sort(-emp, axis=1), axis=0))
        out["asymmetry"].append(float(np.mean(np.linalg.norm(jac - np.swapaxes(jac, 1, 2),
                                                             axis=(1, 2))
                                              / np.linalg.norm(jac, axis=(1, 2)))))
        out["positive_fraction"].append(float(np.mean(np.linalg.eigvalsh(sym) > 0)))
    return {k: np.asarray(v).tolist() for k, v in out.items()}


def theory_spectra(n: int, sigmas: np.ndarray) -> dict[str, np.ndarray]:
    """Predicted singular values (T, d), descending, at VE time Delta = sigma^2."""
    model = LinearManifold.figure4()
    return {m: predicted_singular_values(model, sigmas**2, n, VE(), m) for m in THEORY_METHODS}


def dimension_of(source: str, spectra: np.ndarray, method: str):
    """Dimension estimate of (T, d) spectra (``method``: cliff or gap).

    The orthogonal-group spectra lose their largest value first (THEORY §6: it carries the
    mean score s(x0)/sigma, not the Jacobian). Values above the median are clipped to the
    median: the paper's fluctuation term makes *lost* directions much larger than the normal
    value ~1/Delta, and near-ties give the empirical score large positive eigenvalues; neither
    is a kept (tangent) direction, and unclipped they would put a false cliff at the top. In
    this geometry 23 of the 30 directions are normal, so the median is a normal-direction value.
    """
    sv = np.asarray(spectra)[..., 1:] if source == "network_ogroup" else np.asarray(spectra)
    sv = np.minimum(sv, np.median(sv, axis=-1, keepdims=True))
    return estimate_dimension(sv, method)


def skdim_estimates(Y: np.ndarray) -> dict[str, float]:
    """scikit-dimension global estimates on the training set (NaN when an estimator fails)."""
    import skdim

    out = {}
    for name in SKDIM_ESTIMATORS:
        try:
            out[name] = float(getattr(skdim.id, name)().fit(Y).dimension_)
        except (ValueError, np.linalg.LinAlgError):
            out[name] = float("nan")
    return out


# ----------------------------------------------------------------------------- the command
def run_trained_spectra(out: Path, *, n_values: Sequence[int] = DEFAULT_N_VALUES,
                        config: TrainingConfig | None = None, n_times: int = 100,
                        points: int = 5, ref_sigmas: Sequence[float] = DEFAULT_REF_SIGMAS,
                        seed: int = 0, data_seed: int = 0, executor: Any = None,
                        cache_dir: Path | None = None, quick: bool = False) -> dict[str, Any]:
    """Run the experiment into ``out`` (see the module docstring); returns the summary."""
    config = config or TrainingConfig(steps=DEFAULT_STEPS)
    run = RunOutput(out, COMMAND)
    ckpt_root = checkpoint_dir(out, cache_dir)
    times = np.linspace(T_GRID[0], T_GRID[1], n_times)
    schedule = GeometricVE(config.sigma_min, config.sigma_max)
    sigmas = schedule.sigma(times)
    started = time.perf_counter()

    # 1. training (checkpointed, resumable), in parallel over N through the executor
    tasks = [{"root": str(ckpt_root), "n": int(n), "config": asdict(config),
              "seed": seed, "data_seed": data_seed} for n in n_values]
    trained = run_grid(_train_one, tasks, seed=seed, executor=executor,
                       label=f"{COMMAND} training")
    train_wall = time.perf_counter() - started

    # 2-4. measurements (cached per N), theory, dimensions, baselines
    spectra_rows, dim_rows, loss_rows, table_rows = [], [], [], []
    per_n: dict[int, dict[str, Any]] = {}
    for info in progress(trained, f"{COMMAND} spectra"):
        n = info["n"]
        net = load_score_model(info["path"])
        Y = _training_set(n, data_seed)
        key = {"n": n, "checkpoint": checkpoint_key(config, [seed], [Y]), "step": net.step,
               "n_times": n_times,
               "points": points, "seed": seed, "t_grid": T_GRID}
        measured = run.cached(key, lambda net=net, Y=Y: {
            "spectra": measure_spectra(net.model, Y, times, points, seed),
            "skdim": skdim_estimates(Y)})
        spectra = {k: np.asarray(measured["spectra"][k]) for k in MEASURED}
        spectra.update(theory_spectra(n, sigmas))
        per_n[n] = {"spectra": spectra, "net": net, "skdim": measured["skdim"],
                    "asymmetry": np.asarray(measured["spectra"]["asymmetry"]),
                    "positive_fraction": np.asarray(measured["spectra"]["positive_fraction"])}
        for source, values in spectra.items():
            for k, t in enumerate(times):
                for rank, value in enumerate(values[k]):
                    spectra_rows.append({"N": n, "t": t, "sigma": sigmas[k], "source": source,
                                         "rank": rank, "singular_value": value,
                                         "delta_times_value": sigmas[k] ** 2 * value})
            for method in DIMENSION_METHODS:
                est = dimension_of(source, values, method)
                per_n[n].setdefault("dims", {})[(source, method)] = est
                for k, t in enumerate(times):
                    dim_rows.append({"N": n, "t": t, "sigma": sigmas[k], "source": source,
                                     "method": method, "dimension": est.dimension[k],
                                     "found": bool(est.found[k]), "n_gaps": int(est.n_gaps[k])})
        for step, loss in net.losses:
            loss_rows.append({"N": n, "step": int(step), "loss": loss})
        ref_idx = [int(np.argmin(np.abs(np.log(sigmas / s)))) for s in ref_sigmas]
        row: dict[str, Any] = {"N": n, "true_dimension": TRUE_DIMENSION}
        row.update({f"skdim_{k}": v for k, v in measured["skdim"].items()})
        for source in (*MEASURED, *THEORY_METHODS):
            for method in DIMENSION_METHODS:
                est = per_n[n]["dims"][(source, method)]
                for s, i in zip(ref_sigmas, ref_idx, strict=True):
                    # no gap (flat spectrum) is written as 0: nothing resolved (see docs)
                    value = est.dimension[i] if est.found[i] else 0.0
                    row[f"{source}_{method}_sigma{s:g}"] = value
        table_rows.append(row)

    run.write_csv("spectra", spectra_rows)
    run.write_csv("dimensions", dim_rows)
    run.write_csv("loss", loss_rows)
    run.write_csv("dimension_table", table_rows)
    markdown = _markdown_table(table_rows, ref_sigmas)
    (Path(out) / "dimension_table.md").write_text(markdown)
    typer.echo(markdown)
    plot_spectra(run, per_n, sigmas, n_values)
    plot_dimensions(run, per_n, sigmas, n_values, ref_sigmas, table_rows,
                    true_dimension=TRUE_DIMENSION, methods=DIMENSION_METHODS,
                    skdim_names=SKDIM_ESTIMATORS)
    plot_loss(run, per_n, n_values)

    summary = {str(n): {"network_exact_cliff_at_smallest_ref": r[
        f"network_exact_cliff_sigma{ref_sigmas[0]:g}"],
        "empirical_exact_cliff_at_smallest_ref": r[f"empirical_exact_cliff_sigma{ref_sigmas[0]:g}"],
        "max_asymmetry": float(per_n[n]["asymmetry"].max()),
        "max_positive_fraction": float(per_n[n]["positive_fraction"].max())}
        for n, r in zip(n_values, table_rows, strict=True)}
    run.write_record(
        parameters={"n_values": list(n_values), "training": config.to_dict(),
                    "n_times": n_times, "t_grid": T_GRID, "points": points,
                    "ref_sigmas": list(ref_sigmas), "quick": quick,
                    "executor": getattr(executor, "describe", lambda: None)(),
                    "n_values_note": "scaled down from the paper's 250-20000 so that the "
                                     "default budget shows the trend (module docstring)",
                    "manifold": LinearManifold.figure4().to_dict(),
                    "theory_time": "VE time Delta = sigma(t)^2",
                    "jacobian_tools": JACOBIAN_TOOLS,
                    "scale_down": f"{config.steps} steps = {config.scale_down:.4g} x the paper's "
                                  f"{PAPER_STEPS}; fast protocol ({config.architecture} "
                                  f"{config.depth}x{config.width}, {config.optimizer} lr "
                                  f"{config.lr}, EMA {config.ema_decay}, sigma in "
                                  f"[{config.sigma_min}, {config.sigma_max}]) vs the paper's "
                                  f"ScoreMLP, RAdam 1e-4, EMA 0.9999, sigma in [0.01, 50]"},
        seeds={"seed": seed, "data_seed": data_seed},
        extra={"training": trained, "train_wall_seconds": train_wall,
               "total_wall_seconds": time.perf_counter() - started, "summary": summary})
    return summary


def _markdown_table(rows: list[dict], ref_sigmas: Sequence[float]) -> str:
    s0 = f"{ref_sigmas[0]:g}"
    head = ["N", "true", *(f"skdim {k}" for k in SKDIM_ESTIMATORS),
            *(f"{src} cliff@σ={s:g}" for src in ("network_exact", "empirical_exact")
              for s in ref_sigmas),
            f"network_ogroup cliff@σ={s0}", f"population cliff@σ={s0}", f"paper cliff@σ={s0}",
            f"rem cliff@σ={s0}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [r["N"], r["true_dimension"], *(r[f"skdim_{k}"] for k in SKDIM_ESTIMATORS),
                *(r[f"{src}_cliff_sigma{s:g}"] for src in ("network_exact", "empirical_exact")
                  for s in ref_sigmas),
                r[f"network_ogroup_cliff_sigma{s0}"], r[f"population_cliff_sigma{s0}"],
                r[f"paper_cliff_sigma{s0}"], r[f"rem_cliff_sigma{s0}"]]
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v)
                                       for v in vals) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- CLI
def register(app: typer.Typer) -> None:
    @app.command(COMMAND)
    def trained_spectra_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        n_values: Annotated[str, typer.Option("--n-values", help="Training-set sizes N.")
                            ] = ",".join(str(n) for n in DEFAULT_N_VALUES),
        steps: Annotated[int, typer.Option(min=1, max=100_000_000, help=(
            f"Training steps per network (the paper: {PAPER_STEPS}).")
        )] = DEFAULT_STEPS,
        paper: Annotated[bool, typer.Option(
            "--paper", help="The paper's recipe (ScoreMLP, RAdam 1e-4, EMA 0.9999; for GPU "
                            "users) instead of the fast protocol.")] = False,
        width: Annotated[int | None, typer.Option(min=1, max=8192, help=(
            "Network width (default: the protocol's).")
        )] = None,
        n_times: Annotated[int, typer.Option("--n-times", min=2, max=10_000,
                                             help="Measurement times.")] = 100,
        points: Annotated[int, typer.Option(min=1, max=1000,
                                            help="Fresh test points per time.")] = 5,
        ref_sigmas: Annotated[str, typer.Option(
            "--ref-sigmas", help="Noise levels of the dimension-vs-N table.")
        ] = ",".join(f"{s:g}" for s in DEFAULT_REF_SIGMAS),
        seed: Annotated[int, typer.Option(min=0, help="Training seed.")] = 0,
        data_seed: Annotated[int, typer.Option("--data-seed", min=0,
                                               help="Training-set seed.")] = 0,
        quick: Annotated[bool, typer.Option(help="Tiny preset (tests); sizes given "
                                                 "explicitly win.")] = False,
        workers: WorkersOption = 2,
        scheduler: SchedulerOption = None,
        dask_workers: DaskWorkersOption = None,
        cache_dir: CacheDirOption = None,
    ) -> None:
        """Trained score networks: Jacobian spectra and spectral-gap dimension vs t and N."""
        from .options import quick_sizes

        sizes = quick_sizes(ctx, quick, {
            "n_values": ",".join(map(str, QUICK["n_values"])), "steps": QUICK["steps"],
            "width": QUICK["width"], "n_times": QUICK["n_times"], "points": QUICK["points"],
            "ref_sigmas": ",".join(map(str, QUICK["ref_sigmas"]))})
        ns = parse_ints("--n-values", sizes["n_values"], minimum=2)
        refs = parse_floats("--ref-sigmas", sizes["ref_sigmas"])
        fields: dict[str, Any] = {"steps": sizes["steps"],
                                  "log_every": max(1, min(100, sizes["steps"] // 20))}
        if sizes["width"] is not None:
            fields["width"] = sizes["width"]
        if quick:
            fields["depth"] = QUICK["depth"]
        try:
            config = TrainingConfig.paper(**fields) if paper else TrainingConfig(**fields)
        except ValueError as err:
            raise bad_option("--steps/--width", str(err)) from err
        low, high = config.sigma_min, config.sigma_max
        if any(not low <= r <= high for r in refs):
            raise bad_option("--ref-sigmas", f"allowed {low} <= sigma <= {high} (the training "
                                             f"range), got {refs}")
        executor = cli_executor(workers, scheduler, dask_workers)
        with executor:
            run_trained_spectra(out or default_out(COMMAND), n_values=ns, config=config,
                                n_times=sizes["n_times"], points=sizes["points"],
                                ref_sigmas=refs, seed=seed, data_seed=data_seed,
                                executor=executor, cache_dir=cache_dir, quick=quick)

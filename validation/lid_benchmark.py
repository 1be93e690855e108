"""``geomem lid-benchmark``: score-based local intrinsic dimension against ground truth.

Data sets with a known dimension (``DATASETS``): linear manifolds (LinearManifold; one with
two variances), spheres S^k embedded in R^d by a fixed random isometry, and 8x8 disk images
(5 parameters). For each data set and training-set size N the exact empirical score of the
N training points is read at ``B`` held-out clean points by every estimator of
:mod:`geomem.numerics.lid_estimators` (FLIPD, normal bundle, spectral gap, closed-form LID)
over a grid of noise levels ``delta`` (VE, a = 1), beside skdim's MLE, TwoNN and lPCA on the
training points (global estimates). For the linear manifolds the expected FLIPD of the
population score (``theory.expected_population_flipd``) is drawn beside the measured curves.

Headline table (``mae.csv``): mean absolute error to the true dimension per method and data
set, pooled over N and points, at the read-off noise ``READOUT_DELTA_FRACTION`` x the mean
per-direction variance of the manifold -- a rule fixed here before any result was looked at
(noise below every tangent variance, above the data's rounding). Points where an estimator
finds no dimension (NaN) are left out and counted (``n_undetermined``).

Trained networks (`_lid_networks`, ``--networks``, on by default): for the data sets in R^20
and every N, the memorization engine's fast-protocol networks trained on the same points are
read by the same estimators (methods ``*_network``) at two training steps (``train_step``),
cached in the checkpoint folder (``--cache-dir``) and resumed when interrupted.

Outputs under ``--out``: ``lid.csv`` (dataset, N, delta, method, train_step, point,
estimate), ``mae.csv``, ``lid_benchmark.png/.pdf`` (LID against delta per data set, empirical
score), ``lid_networks.png/.pdf`` (the networks beside the empirical score), ``record.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from geomem.numerics.images import disk_images
from geomem.numerics.lid_estimators import (
    ClosedFormEstimator,
    FlipdEstimator,
    NormalBundleEstimator,
    SpectralGapEstimator,
)
from geomem.theory import LinearManifold
from geomem.theory.flipd import expected_population_flipd

from ._common import (
    bad_option,
    checked,
    checkpoint_dir,
    default_out,
    parse_choices,
    parse_ints,
    pyplot,
)
from ._lid_networks import NETWORK_DIM, NETWORK_METHODS, network_datasets, network_rows
from ._lid_plots import plot_networks
from .image_dimensions import SKDIM_ESTIMATORS, skdim_estimates
from .options import CacheDirOption, OutOption, QuickOption, SeedOption, quick_sizes
from .progress import progress
from .records import RunOutput

__all__ = ["DATASETS", "METHODS", "READOUT_DELTA_FRACTION", "dataset_sample", "register",
           "run_lid_benchmark"]

COMMAND = "lid-benchmark"
RESULT_FORMAT = 2
#: version of the cached network read-outs
NETWORK_FORMAT = 1
#: read-off noise of the MAE table, in units of the mean per-direction variance of the data
READOUT_DELTA_FRACTION = 0.01
#: the delta grid of the curves, in the same units
DELTA_FRACTIONS = (1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)
METHODS = ("flipd", "normal_bundle", "spectral_gap", "closed_form")
_ESTIMATORS: dict[str, Callable[..., Any]] = {
    "flipd": FlipdEstimator, "normal_bundle": NormalBundleEstimator,
    "spectral_gap": SpectralGapEstimator, "closed_form": ClosedFormEstimator}


def _linear(d: int, dims: tuple[int, ...], stds: tuple[float, ...]):
    model = LinearManifold(d, dims, stds=stds)
    return (lambda n, rng: model.sample(n, rng)), sum(dims), model


def _sphere(k: int, d: int):
    """S^k of radius 1 in R^{k+1}, embedded by a fixed (seed 0) random isometry into R^d."""
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((d, k + 1)))[0]

    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((n, k + 1))
        return (z / np.linalg.norm(z, axis=1, keepdims=True)) @ basis.T
    return sample, k, None


def _disks(n: int, rng: np.random.Generator) -> np.ndarray:
    return disk_images(n, 8, rng)[0].reshape(n, -1)


#: name -> (sampler(n, rng) -> (n, d), true dimension, LinearManifold or None)
DATASETS: dict[str, tuple[Callable, int, Any]] = {
    "linear2_d20": _linear(20, (2,), (1.0,)),
    "linear5_d20": _linear(20, (3, 2), (1.0, 0.3)),
    "sphere2_d10": _sphere(2, 10),
    "sphere4_d20": _sphere(4, 20),
    "disks8x8": (_disks, 5, None),
}


def dataset_sample(name: str, n: int, seed: int) -> np.ndarray:
    """``n`` points (n, d) of data set ``name`` from ``default_rng(seed)``."""
    return DATASETS[name][0](n, np.random.default_rng(seed))


def _scale(train: np.ndarray, true_dim: int) -> float:
    """Mean per-direction variance of the manifold: total variance / true dimension."""
    return float(train.var(axis=0).sum() / true_dim)


def _measure(name: str, n: int, n_points: int, seed: int) -> dict[str, Any]:
    train = dataset_sample(name, n, seed)
    test = dataset_sample(name, n_points, seed + 10_000)      # held out: another stream
    scale = _scale(train, DATASETS[name][1])
    rows = []
    for frac in sorted({*DELTA_FRACTIONS, READOUT_DELTA_FRACTION}):   # the read-off once
        delta = frac * scale
        for method in METHODS:
            est = _ESTIMATORS[method](train, 1.0, delta).fit_pw(test)
            rows += [{"delta_fraction": frac, "delta": delta, "method": method, "point": p,
                      "estimate": float(v)} for p, v in enumerate(est.dimension_pw_)]
    return {"rows": rows, "skdim": skdim_estimates(train), "scale": scale}


def run_lid_benchmark(out: Path, *, datasets: Sequence[str] = tuple(DATASETS),
                      n_values: Sequence[int] = (100, 1000), n_points: int = 32,
                      seed: int = 0, networks: bool = True, quick_networks: bool = False,
                      cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """Measure (cached per data set and N), tabulate, draw and record; returns the MAE rows.

    networks: also train and read the networks of the data sets in R^20 (`_lid_networks`);
    quick_networks: smoke-test networks (200 steps, 2 x 32); cache_dir: checkpoint folder
    (default `checkpoint_dir(out)`)."""
    run = RunOutput(out, COMMAND)
    rows, mae_input = [], []
    for name in progress(list(datasets), COMMAND):
        true_dim = DATASETS[name][1]
        for n in n_values:
            key = {"format": RESULT_FORMAT, "dataset": name, "n": n, "n_points": n_points,
                   "seed": seed}
            res = run.cached(key, lambda name=name, n=n: _measure(name, n, n_points, seed))
            for r in res["rows"]:
                rows.append({"dataset": name, "true_dimension": true_dim, "N": n, **r})
            mae_input += [{"dataset": name, "method": f"skdim_{k}", "N": n,
                           "error": abs(v - true_dim), "undetermined": not np.isfinite(v)}
                          for k, v in res["skdim"].items()]
    net_names = network_datasets(datasets, {k: _dim(k) for k in datasets}) if networks else []
    if net_names:
        rows += _network_rows(run, net_names, n_values, n_points, seed, quick_networks,
                              checkpoint_dir(out, cache_dir))
    readout = [r for r in rows if r["delta_fraction"] == READOUT_DELTA_FRACTION]
    mae_input += [{"dataset": r["dataset"], "method": r["method"], "N": r["N"],
                   "train_step": r.get("train_step"),
                   "error": abs(r["estimate"] - r["true_dimension"]),
                   "undetermined": not np.isfinite(r["estimate"])} for r in readout]
    mae_rows = _mae_table(mae_input, datasets)
    curve_rows = [r for r in rows if r["delta_fraction"] in DELTA_FRACTIONS]
    run.write_csv("lid", curve_rows, ["dataset", "true_dimension", "N", "delta_fraction",
                                      "delta", "method", "train_step", "point", "estimate"])
    run.write_csv("mae", mae_rows)
    _plot(run, curve_rows, datasets, n_values)
    if net_names:
        plot_networks(run, curve_rows, net_names, n_values, METHOD_LABELS)
    run.write_record({"datasets": list(datasets), "n_values": list(n_values),
                      "n_points": n_points, "delta_fractions": list(DELTA_FRACTIONS),
                      "readout_delta_fraction": READOUT_DELTA_FRACTION, "schedule": "VE (a = 1)",
                      "true_dimensions": {k: DATASETS[k][1] for k in datasets},
                      "networks": net_names, "quick_networks": quick_networks},
                     seeds={"train": seed, "test": seed + 10_000, "networks": seed},
                     extra={"mae": mae_rows})
    return mae_rows


#: display names of the estimator methods in the figures
METHOD_LABELS = {"flipd": "FLIPD", "normal_bundle": "normal bundle",
                 "spectral_gap": "spectral gap", "closed_form": "closed form"}


def _dim(name: str) -> int:
    return int(dataset_sample(name, 1, 0).shape[1])


def _network_rows(run: RunOutput, names: Sequence[str], n_values: Sequence[int],
                  n_points: int, seed: int, quick: bool, checkpoints: Path
                  ) -> list[dict[str, Any]]:
    """Network read-outs of every (data set, N) of dimension NETWORK_DIM, cached as one job."""
    key = {"format": NETWORK_FORMAT, "networks": list(names), "n_values": list(n_values),
           "n_points": n_points, "seed": seed, "quick": quick}
    fracs = sorted({*DELTA_FRACTIONS, READOUT_DELTA_FRACTION})

    def compute() -> list[dict[str, Any]]:
        jobs = []
        for name in names:
            for n in n_values:
                train = dataset_sample(name, n, seed)
                test = dataset_sample(name, n_points, seed + 10_000)
                jobs.append((name, n, train, test, _scale(train, DATASETS[name][1])))
        return network_rows(jobs, fracs, checkpoints, seed=seed, quick=quick)
    return [{**r, "true_dimension": DATASETS[r["dataset"]][1]} for r in run.cached(key, compute)]


def _mae_table(mae_input: list[dict[str, Any]], datasets: Sequence[str]) -> list[dict[str, Any]]:
    """Mean absolute error per data set, method and (networks) training step."""
    groups = [(m, None) for m in (*METHODS, *(f"skdim_{k}" for k in SKDIM_ESTIMATORS))]
    steps = sorted({m["train_step"] for m in mae_input if m.get("train_step") is not None})
    groups += [(f"{m}_network", s) for m in NETWORK_METHODS for s in steps]
    mae_rows = []
    for name in datasets:
        for method, step in groups:
            mine = [m for m in mae_input if m["dataset"] == name and m["method"] == method
                    and m.get("train_step") == step]
            if step is not None and not mine:
                continue                 # no network for this data set
            errs = [m["error"] for m in mine if not m["undetermined"]]
            mae_rows.append({"dataset": name, "true_dimension": DATASETS[name][1],
                             "method": method, "train_step": step,
                             "mae": float(np.mean(errs)) if errs else np.nan,
                             "n_estimates": len(errs),
                             "n_undetermined": sum(m["undetermined"] for m in mine)})
    return mae_rows


def _plot(run: RunOutput, rows, datasets, n_values) -> None:
    plt = pyplot()
    cols = min(3, len(datasets))
    nrows = -(-len(datasets) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False,
                             constrained_layout=True)
    for ax in axes.ravel()[len(datasets):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), datasets, strict=False):
        true_dim, model = DATASETS[name][1], DATASETS[name][2]
        for i, method in enumerate(METHODS):
            for j, n in enumerate(n_values):
                mine = [r for r in rows if r["dataset"] == name and r["method"] == method
                        and r["N"] == n]
                fr = sorted({r["delta_fraction"] for r in mine})
                med = [np.nanmedian([r["estimate"] for r in mine if r["delta_fraction"] == f]
                                    or [np.nan]) for f in fr]
                # FLIPD and the closed form coincide exactly: FLIPD drawn with open markers
                ax.semilogx(fr, med, ("o-", "s--")[j % 2], color=f"C{i}",
                            ms=7 if method == "flipd" else 3,
                            mfc="none" if method == "flipd" else f"C{i}",
                            label=f"{method}, N={n}")
        if model is not None:     # expected FLIPD of the population score (no N)
            scale = float(np.mean(np.repeat(np.square(model.stds), model.dims)))
            fr = np.geomspace(DELTA_FRACTIONS[0], DELTA_FRACTIONS[-1], 60)
            ax.semilogx(fr, expected_population_flipd(model, fr * scale, "VE"), "k-", lw=1.5,
                        label="population FLIPD (theory)")
        ax.axhline(true_dim, color="k", ls=":", lw=0.8, label="true dimension")
        top = 4 * true_dim      # FLIPD grows like |x - y_nearest|^2 / delta: clipped here
        ax.set(title=f"{name} (true {true_dim})", xlabel="delta / mean tangent variance",
               ylabel="median LID over held-out points", ylim=(-0.5, top))
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("Score-based LID of the exact empirical score (VE) at held-out points "
                 "(y clipped at 4x the true dimension; values in lid.csv)", fontsize=10)
    run.save_figure(fig, "lid_benchmark")
    plt.close(fig)


def register(app: typer.Typer) -> None:
    @app.command("lid-benchmark")
    def lid_benchmark_cmd(
        ctx: typer.Context,
        out: OutOption = None,
        datasets: Annotated[str, typer.Option(help=f"Comma-separated, from {tuple(DATASETS)}.")
                            ] = ",".join(DATASETS),
        n_values: Annotated[str, typer.Option("--n-values", help="Training-set sizes N.")
                            ] = "100,1000",
        points: Annotated[int, typer.Option(help="Held-out points per data set and N.")] = 32,
        networks: Annotated[bool, typer.Option(
            help=f"Also train and read score networks on the data sets in R^{NETWORK_DIM}.")
                            ] = True,
        cache_dir: CacheDirOption = None,
        seed: SeedOption = 0,
        quick: QuickOption = False,
    ) -> None:
        """Score-based LID estimators and skdim against data sets of known dimension.

        --quick: N in 30,60, 4 points, smoke-test networks (200 steps), except for sizes given
        explicitly."""
        names = parse_choices("--datasets", datasets, tuple(DATASETS))
        sizes = quick_sizes(ctx, quick, {"n_values": "30,60", "points": 4})
        grid = parse_ints("--n-values", sizes["n_values"], minimum=2)
        if sizes["points"] < 1:
            raise bad_option("--points", f"must be >= 1, got {sizes['points']}")
        target = out or default_out(COMMAND)
        cache = checked("--cache-dir", checkpoint_dir, target, cache_dir)
        run_lid_benchmark(target, datasets=names, n_values=grid, n_points=sizes["points"],
                          seed=seed, networks=networks, quick_networks=quick, cache_dir=cache)

"""CLI --quick runs of the image commands and the crossover-N computation."""

import csv
import json

import numpy as np
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from geomem.validation import generalization
from geomem.validation.generalization import crossover_n, default_n_values, disjoint_subsets


def _app(*modules) -> typer.Typer:
    """A typer group with only the image commands (a one-command app would drop the name)."""
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """geomem image commands (tests)."""

    for module in modules:
        module.register(app)
    return app


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints")


def test_crossover_on_synthetic_similarity_data():
    n = [1, 10, 100, 1000]
    assert crossover_n(n, [0.1, 0.5, 0.8, 1.0]) == pytest.approx(10 ** 2.5)
    assert crossover_n(n, [0.95, 0.96, 0.97, 0.99]) == 1.0
    assert crossover_n(n, [0.1, 0.2, 0.3, 0.4]) is None
    # a coincidental agreement at N = 1 is not the crossover
    assert crossover_n(n, [0.95, 0.5, 0.8, 1.0]) == pytest.approx(10 ** 2.5)
    assert crossover_n(n, [0.1, 0.95, 0.5, 0.6]) is None
    # noisy synthetic medians around a logistic curve centred at N = 300
    rng = np.random.default_rng(0)
    grid = np.geomspace(1, 1e5, 11)
    medians = [np.median(np.clip(1 / (1 + (300 / g) ** 1.5) + 0.01 * rng.standard_normal(200),
                                 -1, 1)) for g in grid]
    true = 300 * (0.9 / 0.1) ** (1 / 1.5)
    assert crossover_n(grid, medians) == pytest.approx(true, rel=0.25)
    with pytest.raises(ValueError, match="increasing"):
        crossover_n([10, 1], [0.1, 0.2])


@settings(max_examples=30, deadline=None)
@given(m=st.lists(st.floats(-1, 1), min_size=2, max_size=6))
def test_crossover_lies_in_bracket(m):
    n = np.geomspace(1, 10 ** (len(m) - 1), len(m))
    star = crossover_n(n, m)
    if star is None:
        assert m[-1] < 0.9
    else:
        assert m[-1] >= 0.9
        below = np.flatnonzero(np.asarray(m) < 0.9)
        i = int(below[-1]) + 1 if below.size else 0
        assert n[max(i - 1, 0)] <= star * (1 + 1e-12) and star <= n[i] * (1 + 1e-12)


def test_subsets_are_disjoint_and_n_grid():
    pool = np.arange(20.0).reshape(20, 1, 1, 1)
    a, b = disjoint_subsets(pool, 10)
    assert not set(a.ravel()) & set(b.ravel())
    with pytest.raises(ValueError, match="n out of range"):
        disjoint_subsets(pool, 11)
    assert default_n_values(1797) == [1, 10, 100, 898]
    assert default_n_values(4000) == [1, 10, 100, 1000, 2000]


def test_generalization_quick(tmp_path, cache_dir):
    out = tmp_path / "gen"
    args = ["generalization", "--quick", "--out", str(out), "--cache-dir", str(cache_dir)]
    result = CliRunner().invoke(_app(generalization), args)
    assert result.exit_code == 0, result.output
    for name in ("similarity_histograms.png", "similarity_histograms.pdf", "sample_rows.png",
                 "sample_rows.pdf", "similarities.csv", "summary.csv", "record.json"):
        assert (out / name).exists(), name
    record = json.loads((out / "record.json").read_text())
    assert set(record["summary"]) == {"digits", "disks"}
    assert "scale_down" in record["parameters"]
    for entry in record["summary"].values():
        medians = np.array(entry["median_ab_similarity"], dtype=float)
        medians = medians[np.isfinite(medians)]
        assert entry["n_star_upper_bound_only"] == bool(
            entry["n_star"] is not None and np.all(medians >= 0.9))
    from PIL import Image  # a matplotlib dependency

    width, height = Image.open(out / "sample_rows.png").size
    assert height <= 1.6 * width and width <= 2600, (width, height)  # a grid, not a strip
    first = (out / "summary.csv").read_text()
    # resumable: a re-run reads the per-N cache and rewrites identical tables
    assert CliRunner().invoke(_app(generalization), args).exit_code == 0
    assert (out / "summary.csv").read_text() == first


def test_generalization_bad_options(tmp_path):
    app = _app(generalization)
    bad = CliRunner().invoke(app, ["generalization", "--datasets", "imagenet", "--out",
                                   str(tmp_path)])
    assert bad.exit_code == 2 and "datasets" in bad.output
    bad = CliRunner().invoke(app, ["generalization", "--n-values", "5000", "--out",
                                   str(tmp_path), "--datasets", "digits"])
    assert bad.exit_code == 2 and "n-values" in bad.output


def test_gahb_quick(tmp_path, cache_dir):
    from geomem.validation import gahb

    out = tmp_path / "gahb"
    args = ["gahb", "--quick", "--out", str(out), "--cache-dir", str(cache_dir),
            "--datasets", "digits,calpha2"]
    result = CliRunner().invoke(_app(gahb), args)
    assert result.exit_code == 0, result.output
    for name in ("gahb.png", "gahb.pdf", "gahb_eigenvectors.png", "gahb_eigenvectors.pdf",
                 "gahb.csv", "shrinkage_spectra.csv", "record.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "record.json").read_text())["summary"]
    assert summary["calpha2"]["optimal_slope"] == pytest.approx(4 / 3)
    assert np.isfinite(summary["digits"]["mse_slope"])
    bad = CliRunner().invoke(_app(gahb), ["gahb", "--datasets", "cifar", "--out", str(out)])
    assert bad.exit_code == 2


def test_gahb_size_sets_the_calpha_side_and_is_checked_first(tmp_path, cache_dir):
    """--size wins over --quick's 8x8: the Jacobian spectrum has size^2 eigenvalues."""
    from geomem.validation import gahb

    out = tmp_path / "gahb12"
    args = ["gahb", "--quick", "--out", str(out), "--cache-dir", str(cache_dir),
            "--datasets", "calpha1", "--size", "12"]
    result = CliRunner().invoke(_app(gahb), args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "record.json").read_text())["parameters"]["size"] == 12
    with open(out / "shrinkage_spectra.csv") as f:
        ks = {int(row["k"]) for row in csv.DictReader(f)}
    assert ks == set(range(12 * 12))
    for size in ("10", "4", "68"):
        bad = CliRunner().invoke(_app(gahb), ["gahb", "--size", size, "--out", str(tmp_path)])
        assert bad.exit_code == 2 and "--size" in bad.output, bad.output
        assert not (tmp_path / "record.json").exists()


def test_fit_log_slope_recovers_power_law():
    from geomem.validation.gahb import fit_log_slope, optimal_rate

    sig = np.geomspace(0.01, 0.5, 6)
    assert fit_log_slope(sig, 3.0 * sig ** optimal_rate(3.0)) == pytest.approx(1.5)
    assert optimal_rate(1.0) == 1.0


@settings(max_examples=25, deadline=None)
@given(d=st.integers(20, 80), k=st.integers(1, 10), slope=st.floats(0.0, 0.5),
       seed=st.integers(0, 1000))
def test_spectral_dimensions_read_the_cliff_of_a_linear_denoiser(d, k, slope, seed):
    """A linear denoiser that keeps k directions (eigenvalue 1) and shrinks the rest to ~0 has
    score-Jacobian singular values ~1/sigma^2 on the d - k removed directions and ~0 on the k
    kept ones: the command's read-off (spectral_dimensions) must count k, and the shrinkage
    count must count k too. The removed plateau has a smooth spread (``slope``) -- the paper's
    median rule is not meant for white-noise plateaus (see docs/networks.md)."""
    import torch

    from geomem.validation.image_dimensions import spectral_dimensions

    side = int(np.ceil(np.sqrt(d)))
    n = side * side
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((n, n)))[0]
    keep = np.r_[np.ones(k), 1e-3 * np.linspace(1.0, 1.0 + slope, n - k)]
    matrix = torch.as_tensor(basis @ np.diag(keep) @ basis.T)

    class Linear(torch.nn.Module):
        def forward(self, x):
            return (x.reshape(x.shape[0], -1) @ matrix.T).reshape(x.shape)

    clean = rng.random((2, 1, side, side))
    res = spectral_dimensions(Linear(), clean, sigma=0.1, seed=seed)
    assert res["gap"] == [float(k)] * 2
    assert res["shrinkage"] == [k] * 2


def test_image_dimensions_quick(tmp_path, cache_dir):
    from geomem.validation import image_dimensions

    out = tmp_path / "dims"
    args = ["image-dimensions", "--quick", "--out", str(out), "--cache-dir", str(cache_dir)]
    result = CliRunner().invoke(_app(image_dimensions), args)
    assert result.exit_code == 0, result.output
    for name in ("image_dimensions.png", "image_dimensions.pdf", "dimensions.csv", "skdim.csv",
                 "record.json"):
        assert (out / name).exists(), name
    record = json.loads((out / "record.json").read_text())
    assert set(record["summary"]) == {"digits", "disks"}
    assert record["true_dimension"] == {"disks": 5}
    bad = CliRunner().invoke(_app(image_dimensions), ["image-dimensions", "--sigmas", "-1",
                                                      "--out", str(out)])
    assert bad.exit_code == 2


#: a network trained in a worker process (one torch thread) against the same training run in
#: this process: identical seeds and data, so only the float reduction order may differ
PARALLEL_TRAINING_ATOL = 1e-4


def test_parallel_pretraining_matches_serial_training(tmp_path):
    """pretrain_networks through two worker processes writes the checkpoints the serial path
    (train_or_load in this process) would write, and a second call reuses them."""
    import torch

    from geomem.numerics.denoiser_training import TrainConfig, train_or_load
    from geomem.validation.executors import ProcessExecutor
    from geomem.validation.image_networks import (
        dataset_pool,
        disjoint_subsets,
        pair_jobs,
        pretrain_networks,
    )

    cfg = TrainConfig(arch="bfcnn", width=4, depth=3, steps=30, batch_size=8)
    pool_info = {"data_seed": 0, "size": 8, "pool": 40}
    jobs = pair_jobs("disks", [5], cfg, 3, size=8, data_dir=None, pool_request=40,
                     pool_info=pool_info)
    assert [(j["subset"], j["seed"]) for j in jobs] == [(0, 3), (1, 4)]
    with ProcessExecutor(2) as executor:
        pretrain_networks(tmp_path / "par", jobs, executor)
    subsets = disjoint_subsets(dataset_pool("disks", size=8, pool=40), 5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for k in (0, 1):
            serial = train_or_load(tmp_path / "ser", "disks", subsets[k], k, cfg, 3 + k,
                                   extra=pool_info)[0]
            parallel = train_or_load(tmp_path / "par", "disks", subsets[k], k, cfg, 3 + k,
                                     extra=pool_info)[0]   # loaded: the folder is complete
            for (name, a), b in zip(serial.state_dict().items(),
                                    parallel.state_dict().values(), strict=True):
                torch.testing.assert_close(a, b, atol=PARALLEL_TRAINING_ATOL, rtol=0, msg=name)
    finally:
        torch.set_num_threads(threads)
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "par").rglob("model.pt"))
    with ProcessExecutor(2) as executor:
        pretrain_networks(tmp_path / "par", jobs, executor)   # nothing left to train
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "par").rglob("model.pt")) == before


def test_recipe_options_change_only_their_field_per_data_set():
    # --steps used to replace the digits recipe for every data set, which silently widened
    # the synthetic sets' network (16 -> 32 channels)
    from geomem.validation.image_networks import (
        DEFAULT_CONFIG,
        QUICK_CONFIG,
        SYNTHETIC_CONFIG,
        config_for,
        configs_with,
    )

    assert configs_with(["digits", "disks"], {"steps": None}) is None
    recipes = configs_with(["digits", "disks"], {"steps": 123, "width": None})
    assert config_for("digits", recipes).width == DEFAULT_CONFIG.width
    assert config_for("disks", recipes).width == SYNTHETIC_CONFIG.width
    assert {config_for(n, recipes).steps for n in ("digits", "disks")} == {123}
    quick = configs_with(["disks"], {"steps": 7}, QUICK_CONFIG)
    assert config_for("disks", quick).width == QUICK_CONFIG.width
    assert config_for("disks", quick).steps == 7
    with pytest.raises(ValueError, match="steps"):
        configs_with(["digits"], {"steps": 0})


@pytest.mark.parametrize("command", ["generalization", "image-dimensions"])
def test_bad_steps_is_a_one_line_option_error(tmp_path, command):
    from geomem.validation import image_dimensions

    result = CliRunner().invoke(_app(generalization, image_dimensions),
                                [command, "--steps", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--steps" in result.output


def test_star_text_says_when_n_star_is_only_an_upper_bound():
    """Every grid N above 0.9 puts N* at or below the smallest N, not exactly there."""
    from geomem.validation._generalization_plots import _star_text

    crossing = {"n_star": 61.0, "n_star_upper_bound_only": False,
                "n_star_ci": {"low": 40.0, "high": None}}
    assert _star_text("digits", crossing) == "digits: N*=61 [40, beyond grid]"
    bound = {"n_star": 100.0, "n_star_upper_bound_only": True,
             "n_star_ci": {"low": 100.0, "high": 100.0}}
    assert _star_text("calpha2", bound) == "calpha2: N*<=100 (every N agrees)"
    assert _star_text("disks", {"n_star": None}) == "disks: N* not reached"


def test_pool_record_keys_real_data_by_the_default_side_only():
    """--size shapes synthetic images only, so a real data set's checkpoint key ignores it
    (gahb --size 32 reuses generalization's digits network) and a synthetic one's does not."""
    from geomem.validation.image_networks import DEFAULT_SIDE, dataset_pool, pool_record

    digits = dataset_pool("digits")
    assert pool_record("digits", digits, 32) == pool_record("digits", digits, 8)
    assert pool_record("digits", digits, 32)["size"] == DEFAULT_SIDE
    disks = dataset_pool("disks", size=8, pool=12)
    assert pool_record("disks", disks, 8)["size"] == 8
    assert pool_record("disks", disks, 8) != pool_record("disks", disks, 12)

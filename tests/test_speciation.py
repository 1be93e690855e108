"""Cloning probability (theory), the reverse SDE and the cloning experiment (numerics), and
``geomem speciation`` (CLI)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from geomem.numerics.cloning import cloning_experiment, log_snr_grid, reverse_sde
from geomem.theory import (
    VE,
    VP,
    GaussianMixture,
    cloning_probability,
    speciation_time,
    two_class_direction,
)
from geomem.validation.cli import app

#: z-scores of seeded binomial / Gaussian estimates: |z| < 4 fails by chance with p ~ 6e-5
N_SE = 4.0


def _two_class(lam: float, d: int = 6) -> GaussianMixture:
    return GaussianMixture.symmetric(d, mean_norm=math.sqrt(lam - 1.0), std=1.0, seed=3)


def test_cloning_probability_limits_and_schedule_invariance():
    """1 at t -> 0 (separated classes), 1/2 at t -> inf; depends on t only through the SNR,
    so VP and VE agree at equal SNR."""
    model = _two_class(101.0)
    assert float(cloning_probability(model, 1e-6, VP())) == pytest.approx(1.0, abs=1e-12)
    assert float(cloning_probability(model, 30.0, VP())) == pytest.approx(0.5, abs=1e-12)
    log_snr = np.linspace(-8, 6, 15)
    vp = cloning_probability(model, VP().time_at_log_snr(log_snr), VP())
    ve = cloning_probability(model, VE().time_at_log_snr(log_snr), VE())
    np.testing.assert_allclose(vp, ve, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(lam=st.floats(1.5, 1e4), log_snr=st.floats(-10, 10))
def test_cloning_probability_decreases_in_t(lam, log_snr):
    model = _two_class(lam)
    t = VP().time_at_log_snr(np.array([log_snr + 0.1, log_snr]))       # t increasing
    phi = cloning_probability(model, t, VP())
    assert 0.5 - 1e-12 <= phi[1] <= phi[0] + 1e-12 <= 1.0 + 2e-12


def test_cloning_probability_against_posterior_monte_carlo():
    """Independent route: draw y, x_t = a y + sqrt(Delta) xi, then two posterior draws by
    self-normalised importance sampling from the prior (weights N(x; a y', Delta)): the
    probability that the two draws fall on the same side of the hyperplane."""
    model = _two_class(4.0, d=3)
    e, _, _ = two_class_direction(model)
    rng = np.random.default_rng(11)
    t = 0.6
    a, delta = float(VP().a(t)), float(VP().delta(t))
    prior = model.sample(4000, rng)
    same = []
    for _ in range(400):
        y = model.sample(1, rng)[0]
        x = a * y + math.sqrt(delta) * rng.standard_normal(3)
        logw = -np.sum((x - a * prior) ** 2, axis=1) / (2 * delta)
        w = np.exp(logw - logw.max())
        p_plus = float(np.sum(w * (prior @ e > 0)) / np.sum(w))
        same.append(p_plus**2 + (1 - p_plus) ** 2)
    same = np.array(same)
    theory = float(cloning_probability(model, t, VP()))
    assert abs(same.mean() - theory) < N_SE * same.std() / math.sqrt(same.size) + 5e-3


def test_two_class_direction_refuses_other_mixtures():
    with pytest.raises(ValueError, match="model"):
        cloning_probability(GaussianMixture(np.array([[1.0, 0], [0, 1.0]]), 1.0), 0.5, VP())
    with pytest.raises(ValueError, match="k = 2"):
        cloning_probability(GaussianMixture.symmetric(4, k=3), 0.5, VP())
    with pytest.raises(ValueError, match="model"):
        cloning_probability(np.zeros(3), 0.5, VP())


def test_reverse_sde_keeps_the_gaussian_marginal():
    """Gaussian data N(0, v I): started at p_{t0}, the ancestral reverse SDE ends with the
    marginal variance a^2 v + Delta of t1 (first-order scheme; 300 ln-SNR steps leave ~1%)."""
    v, d, n = 2.0, 4, 20000
    schedule = VP()
    t0, t1 = 3.0, 0.01
    score = lambda x, t: -x / (float(schedule.a(t)) ** 2 * v + float(schedule.delta(t)))  # noqa: E731
    rng = np.random.default_rng(5)
    x0 = math.sqrt(float(schedule.a(t0)) ** 2 * v + float(schedule.delta(t0))) \
        * rng.standard_normal((n, d))
    end = reverse_sde(score, schedule, x0, log_snr_grid(schedule, t0, t1, 300), rng)
    target = float(schedule.a(t1)) ** 2 * v + float(schedule.delta(t1))
    var = end.var(axis=0)
    se = target * math.sqrt(2.0 / n)
    assert np.all(np.abs(var - target) < N_SE * se + 0.01 * target), (var, target)


def test_reverse_sde_rejects_bad_times():
    with pytest.raises(ValueError, match="times"):
        reverse_sde(lambda x, t: -x, VP(), np.zeros((2, 2)), [0.1, 0.5],
                    np.random.default_rng(0))


@pytest.mark.parametrize("schedule", [VP(), VE()], ids=["VP", "VE"])
def test_cloning_experiment_matches_the_exact_probability(schedule):
    """The simulated same-class fraction equals cloning_probability at every clone time
    (binomial z-scores), and the clone times are those asked for."""
    model = _two_class(31.0)
    e, _, _ = two_class_direction(model)
    t_s = speciation_time(model, schedule)
    centre = float(schedule.log_snr(t_s))
    t_start = float(schedule.time_at_log_snr(centre - 6))
    t_end = float(schedule.time_at_log_snr(math.log(1e4)))
    clones = np.asarray(schedule.time_at_log_snr(centre + np.linspace(-3, 3, 5)))
    start = model.noised(t_start, schedule).sample(600, np.random.default_rng(2))
    res = cloning_experiment(lambda x, t: model.population_score(x, t, schedule), schedule,
                             start, t_start=t_start, t_end=t_end, clone_times=clones,
                             label=lambda x: x @ e > 0, steps=120, seed=4)
    np.testing.assert_allclose(np.sort(res.clone_times), np.sort(clones))
    theory = cloning_probability(model, res.clone_times, schedule)
    z = (res.same_fraction - theory) / np.sqrt(theory * (1 - theory) / res.n_pairs + 1e-12)
    assert np.all(np.abs(z) < N_SE), z
    assert res.same_fraction[-1] > 0.95 and res.same_fraction[0] < 0.65


def test_cloning_experiment_rejects_clone_times_outside_the_run():
    with pytest.raises(ValueError, match="clone_times"):
        cloning_experiment(lambda x, t: -x, VP(), np.zeros((3, 2)), t_start=1.0, t_end=0.1,
                           clone_times=[2.0], label=lambda x: x[:, 0] > 0)


def test_speciation_cli_quick(tmp_path):
    out = tmp_path / "sp"
    res = CliRunner().invoke(app, ["speciation", "--quick", "--lambdas", "11", "--schedules",
                                   "vp", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(out / "speciation.csv")))
    assert len(rows) == 1 and rows[0]["schedule"] == "vp"
    measured, exact = float(rows[0]["t_S_measured"]), float(rows[0]["t_S_exact"])
    assert float(rows[0]["ci_low"]) < measured < float(rows[0]["ci_high"])
    assert abs(measured - exact) < 0.3          # 200 pairs: CI half-width ~0.1-0.15
    record = json.loads((out / "record.json").read_text())
    assert record["parameters"]["midpoint"] == 0.75
    for stem in ("speciation.png", "speciation.pdf", "cloning.csv"):
        assert (out / stem).exists()


@pytest.mark.parametrize("args, option", [(["--lambdas", "0.5"], "--lambdas"),
                                          (["--pairs", "3"], "--pairs"),
                                          (["--schedules", "ddpm2"], "--schedules")])
def test_speciation_cli_bad_input(tmp_path, args, option):
    res = CliRunner().invoke(app, ["speciation", *args, "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and option in res.output

"""Denoising score matching (numerics/training.py) and the score MLP (numerics/score_mlp.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.func import jacrev, vmap

from geomem.numerics.score_mlp import MLPConfig, ScoreMLP, torch_a_delta
from geomem.numerics.training import (
    PAPER_STEPS,
    TrainingConfig,
    load_score_model,
    train_or_load,
    train_score_model,
)
from geomem.theory.manifold import LinearManifold
from geomem.theory.schedules import VP, GeometricVE

TINY = {"width": 32, "time_dim": 32, "embed_dim": 16, "log_every": 50}


@pytest.fixture(autouse=True)
def _one_thread():
    # bit-reproducibility is promised for a fixed thread count
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(n=256, seed=0):
    return LinearManifold(4, (1,), stds=1.0, residual_std=0.02, basis="random",
                          seed=3).sample(n, seed)


@pytest.mark.parametrize("schedule", ["GeometricVE", "VP"])
def test_loss_decreases(schedule):
    result = train_score_model(_data(), TrainingConfig(steps=400, lr=3e-3, schedule=schedule,
                                                       **TINY), seed=1)
    losses = result.losses[:, 1]
    assert result.losses.shape == (8, 2) and result.losses[-1, 0] == 400
    assert losses[-2:].mean() < 0.7 * losses[:2].mean()
    assert result.config["training"]["scale_down"] == 400 / PAPER_STEPS


def test_torch_schedules_match_theory():
    t = np.array([1e-5, 0.1, 0.5, 1.0])
    for sched in (GeometricVE(), VP()):
        a, delta = torch_a_delta(sched, torch.tensor(t, dtype=torch.float64))
        np.testing.assert_allclose(a.numpy(), sched.a(t), rtol=1e-12)
        np.testing.assert_allclose(delta.numpy(), sched.delta(t), rtol=1e-12)


def test_score_is_minus_eps_over_noise_std_and_broadcasts_time():
    net = ScoreMLP(MLPConfig(d=3, width=8, time_dim=8, embed_dim=4)).double().eval()
    x = torch.randn(5, 3, dtype=torch.float64)
    sigma = GeometricVE().sigma(0.3)
    with torch.no_grad():
        np.testing.assert_allclose(net.score(x, 0.3).numpy(), -net(x, 0.3).numpy() / sigma,
                                   rtol=1e-12)
        np.testing.assert_array_equal(net(x, 0.3).numpy(),
                                      net(x, torch.full((5,), 0.3, dtype=torch.float64)).numpy())


def test_trained_jacobian_is_symmetric_ish_and_negative_on_a_line():
    model = LinearManifold(4, (1,), stds=1.0, residual_std=0.02, basis="random", seed=3)
    result = train_score_model(model.sample(512, 0), TrainingConfig(steps=1500, lr=3e-3,
                                                                    **TINY), seed=0)
    net = result.model.double()
    sched = GeometricVE()
    t = float(sched.time_at_log_snr(-2 * np.log(0.3)))          # sigma = 0.3
    x = torch.as_tensor(model.sample(16, 1) + 0.3 * np.random.default_rng(2).standard_normal(
        (16, 4)))
    jac = vmap(jacrev(lambda v: net.score(v[None], t)[0]))(x).detach().numpy()
    asym = np.linalg.norm(jac - jac.transpose(0, 2, 1), axis=(1, 2)) / np.linalg.norm(
        jac, axis=(1, 2))
    assert np.median(asym) < 0.25
    eig = np.linalg.eigvalsh(0.5 * (jac + jac.transpose(0, 2, 1)))
    assert np.all(eig < 0)
    # population: -1/(0.09 + 0.0004) on the 3 normal directions, -1/(0.09 + 1) along the line;
    # the tangent direction is the one with the smallest |eigenvalue|
    tangent = model.subspace_basis(0)[:, 0]
    along = np.einsum("i,bij,j->b", tangent, jac, tangent)
    assert np.median(np.abs(along)) < 0.5 * np.median(np.abs(eig[:, 0]))
    # and the values are close to the population ones (loose: 1500 steps of a tiny network)
    assert 0.6 < -np.median(along) * 1.0904 < 1.6
    assert 0.6 < -np.median(eig[:, :3]) * 0.0904 < 1.6


def test_training_is_deterministic_and_checkpoints_round_trip(tmp_path):
    Y = _data(64)
    config = TrainingConfig(steps=60, **TINY)
    first = train_or_load(tmp_path, Y, config, seed=4, data_seed=0)
    assert not first.loaded and (first.path / "loss.csv").exists()
    stored = json.loads((first.path / "config.json").read_text())
    assert stored["data_seed"] == 0 and stored["training"]["steps"] == 60
    again = train_score_model(Y, config, seed=4)
    for p, q in zip(first.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(p, q)
    loaded = train_or_load(tmp_path, Y, config, seed=4)
    assert loaded.loaded and loaded.path == first.path
    np.testing.assert_array_equal(loaded.losses, first.losses)
    x = torch.randn(7, 4)
    t = torch.rand(7)
    with torch.no_grad():
        assert torch.equal(first.model(x, t), loaded.model(x, t))
        assert torch.equal(first.model(x, t), load_score_model(first.path).model(x, t))
    other = train_or_load(tmp_path, Y, config, seed=5)
    assert other.path != first.path and not other.loaded


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps"), ({"lr": 0.0}, "lr"), ({"ema_decay": 1.0}, "ema_decay"),
    ({"schedule": "DDPM"}, "schedule"), ({"t_min": 0.0}, "t_min"),
    ({"t_max": 2.0}, "t_max"), ({"width": 0}, "width")])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        config = TrainingConfig(**kwargs)
        config.mlp_config(3, 1.0)


def test_bad_data():
    with pytest.raises(ValueError, match="Y"):
        train_score_model(np.zeros(5), TrainingConfig(steps=1, **TINY))
    with pytest.raises(ValueError, match="Y"):
        train_score_model(np.full((4, 2), np.nan), TrainingConfig(steps=1, **TINY))

"""Denoising score matching (numerics/training.py) and the score MLP (numerics/score_mlp.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.func import jacrev, vmap

from geomem.numerics.memorization import denoiser_rank, score_jacobians, time_of_sigma
from geomem.numerics.score_mlp import MLPConfig, ScoreMLP, torch_a_delta
from geomem.numerics.training import (
    PAPER_STEPS,
    TrainingConfig,
    checkpoint_steps,
    load_ensemble,
    load_score_model,
    train_ensemble,
    train_or_load,
    train_score_model,
)
from geomem.theory.manifold import LinearManifold
from geomem.theory.schedules import VP, GeometricVE

TINY = {"width": 32, "depth": 2, "embed_dim": 16, "log_every": 50}
#: ensemble vs separate training: the same arithmetic on stacked tensors; float32 batched and
#: single matrix products may round differently, and 200 Adam steps can amplify that
ENSEMBLE_RTOL = 1e-4


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
    extra = {"t_min": 1e-3} if schedule == "VP" else {}
    result = train_score_model(_data(), TrainingConfig(steps=400, lr=3e-3, schedule=schedule,
                                                       **TINY, **extra), seed=1)
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
    sched = result.schedule
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
    config = TrainingConfig(steps=60, first_checkpoint=10, **TINY)
    first = train_or_load(tmp_path, Y, config, seed=4, data_seed=0)
    assert not first.loaded and (first.path / "loss.csv").exists()
    stored = json.loads((first.path / "run.json").read_text())
    assert stored["training"]["steps"] == 60 and stored["snapshots"][-1] == 60
    assert first.config["data_seed"] == 0
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
        assert torch.equal(first.model(x, t), load_score_model(first.path, step=60).model(x, t))
    other = train_or_load(tmp_path, Y, config, seed=5)
    assert other.path != first.path and not other.loaded


def test_resume_equals_uninterrupted_training(tmp_path):
    # 2k steps in one go == 1k steps, stop, and 1k more from the saved state (bit for bit:
    # the state holds weights, EMA, optimiser and every random generator)
    Y = _data(64)
    whole = train_ensemble([Y], TrainingConfig(steps=2000, **TINY), [3])
    folder = tmp_path / "run"
    half = train_ensemble([Y], TrainingConfig(steps=1000, **TINY), [3], folder=folder)
    assert half.step == 1000
    resumed = train_ensemble([Y], TrainingConfig(steps=2000, **TINY), [3], folder=folder)
    assert resumed.trained_steps == 1000
    for p, q in zip(whole.network.parameters(), resumed.network.parameters(), strict=True):
        assert torch.equal(p, q)
    np.testing.assert_array_equal(whole.losses, resumed.losses)
    snap = load_ensemble(folder, 1000)          # a snapshot of the first half is kept
    assert snap.step == 1000 and 1000 in resumed.snapshots


def test_interrupted_training_saves_its_state(tmp_path):
    Y = _data(32)
    config = TrainingConfig(steps=500, **TINY)

    def stop(step, loss, rate):
        if step == 150:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_ensemble([Y], config, [0], folder=tmp_path, progress=stop)
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    assert state["step"] == 150                 # nothing trained is lost
    rest = train_ensemble([Y], config, [0], folder=tmp_path)
    whole = train_ensemble([Y], config, [0])
    assert rest.trained_steps == 350
    for p, q in zip(whole.network.parameters(), rest.network.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("architecture", ["mlp", "paper"])
def test_ensemble_equals_separate_training(architecture):
    # member i of a stacked ensemble == the network trained alone with seed i on data i
    data = [_data(16, 0), _data(48, 1), _data(32, 2)]
    seeds = [5, 6, 7]
    cfg = TrainingConfig(steps=200, **TINY) if architecture == "mlp" else TrainingConfig.paper(
        steps=200, lr=1e-3, width=16, depth=1, embed_dim=8, time_dim=16, log_every=50)
    ensemble = train_ensemble(data, cfg, seeds)
    x = torch.randn(9, 4)
    for i, (Y, s) in enumerate(zip(data, seeds, strict=True)):
        alone = train_score_model(Y, cfg, seed=s)
        with torch.no_grad():
            np.testing.assert_allclose(ensemble.member(i).score(x, 0.4).numpy(),
                                       alone.score(x, 0.4).numpy(), rtol=ENSEMBLE_RTOL,
                                       atol=ENSEMBLE_RTOL)
        np.testing.assert_allclose(ensemble.losses[:, 1 + i], alone.losses[:, 1],
                                   rtol=ENSEMBLE_RTOL)


def test_checkpoint_steps_are_log_spaced():
    steps = checkpoint_steps(100_000, per_decade=8, first=100)
    assert steps[0] == 100 and steps[-1] == 100_000
    per_decade = [sum(10**k <= s < 10 ** (k + 1) for s in steps) for k in (2, 3, 4)]
    assert min(per_decade) >= 6                       # the resolution
    assert np.all(np.diff(steps) > 0)
    assert checkpoint_steps(150, 8, 100) == [100, 133, 150]
    assert checkpoint_steps(50, 8, 100) == [50]


def test_paper_preset():
    cfg = TrainingConfig.paper()
    assert (cfg.steps, cfg.lr, cfg.ema_decay, cfg.optimizer, cfg.architecture) == (
        PAPER_STEPS, 1e-4, 0.9999, "radam", "paper")
    assert cfg.sigma_max == 50.0 and cfg.schedule == "GeometricVE"
    assert TrainingConfig().schedule == "GeometricVE"       # the contract's schedule name


def _kept_dimensions(steps: int) -> list[float]:
    """Mean count of denoiser-Jacobian singular values > 0.5 at training points + noise
    (sigma = 0.02) after ``steps`` of the default protocol on Figure-4 generator data, for the
    networks of N = 16 and N = 1024 (7 tangent dimensions)."""
    model = LinearManifold.figure4()
    data = [model.sample(n, np.random.default_rng(n)) for n in (16, 1024)]
    run = train_ensemble(data, TrainingConfig(steps=steps), [0, 0])
    sigma = 0.02
    kept = []
    for i, Y in enumerate(data):
        net = run.member(i)
        X = Y[:32] + sigma * np.random.default_rng(1).standard_normal((min(32, len(Y)), 30))
        J = score_jacobians(net.score, X, time_of_sigma(net.schedule, sigma))
        kept.append(float(denoiser_rank(J, 1.0, sigma**2).mean()))
    return kept


@pytest.mark.slow
def test_fast_protocol_memorizes_small_n_and_not_large_n():
    # the contract: 10k steps; N = 16 keeps <= 2 of 7 dimensions, N = 1024 >= 5
    kept = _kept_dimensions(10_000)
    assert kept[0] <= 2.0, kept
    assert kept[1] >= 5.0, kept


def test_quarter_protocol_already_loses_dimensions_at_small_n():
    # the default suite's version: after 2500 of the 10k steps the N = 16 network has lost
    # about 2.4 of its 7 dimensions (4.56 measured) while N = 1024 keeps all 7 (7.0); broken
    # training or a score that ignores N leaves both near 7
    kept = _kept_dimensions(2500)
    assert kept[0] <= 5.5, kept
    assert kept[1] >= 6.5, kept


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps"), ({"lr": 0.0}, "lr"), ({"ema_decay": 1.0}, "ema_decay"),
    ({"schedule": "DDPM"}, "schedule"), ({"t_min": -1.0}, "t_min"),
    ({"t_max": 2.0}, "t_max"), ({"width": 0}, "width"), ({"optimizer": "sgd"}, "optimizer"),
    ({"architecture": "unet"}, "architecture"), ({"sigma_max": 0.001}, "sigma"),
    ({"embed_dim": 3}, "embed_dim"), ({"schedule": "VP", "t_min": 0.0}, "t_min")])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainingConfig(**kwargs)


def test_bad_data():
    with pytest.raises(ValueError, match="Y"):
        train_score_model(np.zeros(5), TrainingConfig(steps=1, **TINY))
    with pytest.raises(ValueError, match="Y"):
        train_score_model(np.full((4, 2), np.nan), TrainingConfig(steps=1, **TINY))
    with pytest.raises(ValueError, match="seeds"):
        train_ensemble([np.zeros((4, 2))], TrainingConfig(steps=1, **TINY), [0, 1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_matches_cpu():
    # same seeds, same batches (generated on the CPU): the CUDA network follows the CPU one
    # up to float32 rounding of different kernels over 100 steps
    Y = _data(32)
    cfg = TrainingConfig(steps=100, **TINY)
    cpu = train_ensemble([Y], cfg, [1])
    gpu = train_ensemble([Y], cfg, [1], device="cuda")
    x = torch.randn(5, 4)
    with torch.no_grad():
        np.testing.assert_allclose(gpu.member(0).model.cpu().score(x, 0.3).numpy(),
                                   cpu.member(0).score(x, 0.3).numpy(), rtol=1e-3, atol=1e-3)

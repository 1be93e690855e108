"""Blind-denoiser training recipe (issue 16): noise levels, loss weighting, resume, presets."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from geomem.numerics.denoiser_training import (
    TrainConfig,
    checkpoint_key,
    loss_drift,
    train_or_load,
)
from geomem.numerics.images import load_digits_images

TINY = dict(width=4, depth=3, steps=40, batch_size=8, log_every=5, first_checkpoint=10)


def test_default_noise_covers_every_decade_and_paper_preset_is_the_unet():
    cfg = TrainConfig()
    sigma = cfg.draw_sigma(20_000, torch.Generator().manual_seed(0)).reshape(-1).numpy()
    assert sigma.min() >= cfg.sigma_min and sigma.max() <= cfg.max_train_sigma
    assert cfg.sigma_min <= 0.01 and cfg.max_train_sigma >= 1.0     # the range tested
    # log-uniform: each decade of [0.01, 1] gets the same share (sigma = u^2 gives 10% / 90%)
    low = np.mean((sigma >= 0.01) & (sigma < 0.1))
    high = np.mean((sigma >= 0.1) & (sigma <= 1.0))
    assert low == pytest.approx(high, abs=0.02)
    assert cfg.loss_weight == 1.0
    paper = TrainConfig.paper()
    assert (paper.arch, paper.width, paper.levels, paper.noise, paper.loss_weight) == (
        "unet", 64, 3, "paper", 0.0)
    with pytest.raises(ValueError, match="diverges"):
        TrainConfig(noise="paper", loss_weight=1.0)
    # cosine schedule: decays to lr_final_fraction, so the end of training is quiet
    assert cfg.learning_rate(0) == pytest.approx(cfg.lr)
    assert cfg.learning_rate(cfg.steps) == pytest.approx(cfg.lr * cfg.lr_final_fraction)


def test_loss_drift_is_zero_for_a_flat_end_and_negative_for_a_falling_one():
    steps = np.arange(1, 101) * 10
    flat = np.c_[steps, np.r_[np.linspace(1, 0.1, 80), np.full(20, 0.1)]]
    falling = np.c_[steps, np.linspace(1, 0.1, 100)]
    assert loss_drift(flat) == pytest.approx(0.0, abs=1e-12)
    assert loss_drift(falling) < -0.05
    assert math.isnan(loss_drift([[1, 1.0], [2, 1.0]]))


def test_interrupted_training_resumes_to_the_same_network(tmp_path):
    x = load_digits_images()[:32]
    cfg = TrainConfig(**TINY)
    whole, info = train_or_load(tmp_path / "a", "digits", x, 0, cfg, seed=3)

    def stop(step, loss):
        if step == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_or_load(tmp_path / "b", "digits", x, 0, cfg, seed=3, progress=stop)
    (folder,) = (tmp_path / "b").iterdir()
    assert (folder / "state.pt").exists() and not (folder / "model.pt").exists()
    seen = []
    resumed, info_b = train_or_load(tmp_path / "b", "digits", x, 0, cfg, seed=3,
                                    progress=lambda s, loss: seen.append(s))
    assert seen[0] == 30                                      # continued, not restarted
    y = torch.as_tensor(x[:4] + 0.1, dtype=torch.float32)
    torch.testing.assert_close(resumed(y), whole(y), rtol=0, atol=0)
    assert info_b["loss_trace"] == info["loss_trace"]
    snaps = sorted(p.name for p in (folder / "snapshots").iterdir())
    assert snaps[0] == "step_000000010.pt" and snaps[-1] == "step_000000040.pt"
    assert not (folder / "state.pt").exists()


def test_checkpoint_key_keeps_old_folders_for_zero_padding():
    """Networks trained before ``padding`` was a field keep their folder (the key of a
    zero-padded config hashes the fields without it); any other padding gets its own."""
    import hashlib
    import json

    cfg = TrainConfig(arch="unet", width=16, steps=50)
    old_fields = {k: v for k, v in cfg.to_dict().items() if k != "padding"}
    blob = json.dumps({"dataset": "disks", "n": 10, "subset": 0, "seed": 3,
                       "config": old_fields, "extra": {}}, sort_keys=True)
    key = checkpoint_key("disks", 10, 0, cfg, 3)
    assert key.endswith(hashlib.sha1(blob.encode()).hexdigest()[:10])
    reflect = dataclasses.replace(cfg, padding="reflect")
    assert checkpoint_key("disks", 10, 0, reflect, 3) != key

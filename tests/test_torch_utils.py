"""EMA and checkpoint round-trip."""

import pytest
import torch

from geomem.numerics.torch_utils import EMA, load_checkpoint, save_checkpoint, seed_everything


def test_ema_tracks_parameters():
    seed_everything(0)
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.5)
    before = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.model.weight, 0.5 * before + 0.5 * model.weight)
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


def test_checkpoint_round_trip(tmp_path):
    seed_everything(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 4))
    ema = EMA(model, decay=0.9)
    save_checkpoint(tmp_path / "ck", model, {"width": 8, "seed": 1}, ema=ema)
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 4))
    loaded, config = load_checkpoint(tmp_path / "ck", fresh, use_ema=False)
    x = torch.randn(5, 4)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert config == {"width": 8, "seed": 1}
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing", fresh)

import pytest
import torch
from omegaconf import OmegaConf

from ablate.data import SHAPES, DataError, load_data, make_shapes


def test_shapes_deterministic_balanced_and_varied():
    x, y = make_shapes(600, seed=3)
    x2, y2 = make_shapes(600, seed=3)
    assert x.dtype == torch.uint8 and x.shape == (600, 3, 32, 32)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(make_shapes(600, seed=4)[0], x)
    counts = torch.bincount(y, minlength=len(SHAPES))
    assert len(SHAPES) == 10 and counts.min() > 30
    # colour and background vary within a class
    same = x[y == 0].float()
    assert same.mean((2, 3)).std(0).min() > 5


def test_shapes_are_separable_from_pixels_better_than_chance():
    """A sanity floor: nearest class mean on raw pixels beats the 10% chance level."""
    x, y = make_shapes(2000, seed=0)
    xt, yt = make_shapes(500, seed=1)
    f = lambda a: (a.float() / 255).flatten(1)  # noqa: E731
    means = torch.stack([f(x[y == c]).mean(0) for c in range(10)])
    acc = (torch.cdist(f(xt), means).argmin(1) == yt).float().mean().item()
    assert acc > 0.15


def test_missing_root_and_npz_path_say_what_to_change(tmp_path):
    ev = OmegaConf.create({"bank_size": None, "test_size": None})
    cfg = OmegaConf.create({"name": "cifar10", "root": str(tmp_path / "nope"), "download": False,
                            "image_size": 32, "num_classes": 10, "mean": None, "std": None})
    with pytest.raises(DataError, match="data.root=PATH"):
        load_data(cfg, ev)
    cfg = OmegaConf.create({"name": "npz", "path": str(tmp_path / "x.npz"), "cache_dir": str(tmp_path),
                            "image_size": 32, "num_classes": 10, "mean": None, "std": None})
    with pytest.raises(DataError, match="data.path"):
        load_data(cfg, ev)


def test_npz_arrays_load(tmp_path):
    import numpy as np

    x, y = make_shapes(40, seed=0)
    np.savez(tmp_path / "a.npz", x_train=x.permute(0, 2, 3, 1).numpy(), y_train=y.numpy(),
             x_test=x[:10].permute(0, 2, 3, 1).numpy(), y_test=y[:10].numpy())
    cfg = OmegaConf.create({"name": "npz", "path": str(tmp_path / "a.npz"), "cache_dir": str(tmp_path),
                            "image_size": 32, "num_classes": 10, "mean": None, "std": None})
    d = load_data(cfg, OmegaConf.create({"bank_size": None, "test_size": None}))
    assert torch.equal(d.train_x, x) and torch.equal(d.test_y, y[:10])

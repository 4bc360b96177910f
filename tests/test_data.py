
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


def test_loading_shapes_again_in_a_process_gives_the_same_images_and_fresh_tensors():
    cfg = OmegaConf.create({"name": "shapes", "train_size": 300, "test_size": 100, "image_size": 32,
                            "data_seed": 5, "num_classes": 10, "mean": None, "std": None})
    ev = OmegaConf.create({"bank_size": 200, "test_size": 50})
    first = load_data(cfg, ev, seed=1)
    assert torch.equal(first.ssl_x, make_shapes(300, 5)[0])
    kept = first.ssl_x.clone(), first.test_x.clone()
    first.ssl_x.zero_(), first.test_x.zero_()  # a caller writing into its tensors leaves the next load alone
    again = load_data(cfg, ev, seed=1)
    assert torch.equal(again.ssl_x, kept[0]) and torch.equal(again.test_x, kept[1])
    assert torch.equal(again.bank_x, load_data(cfg, ev, seed=1).bank_x)


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
    assert torch.equal(d.ssl_x, x) and torch.equal(d.test_y, y[:10])


def _image_folder(root, n_per_class=6):
    from PIL import Image

    x, y = make_shapes(n_per_class * 10 * 8, seed=0)
    for s, split in enumerate(("train", "val")):  # every class in both splits, n_per_class images each
        for label, name in enumerate(SHAPES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(x[y == label][s * n_per_class:(s + 1) * n_per_class]):
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i}.png")
    return root


def test_folder_decodes_once_then_reads_the_cache(tmp_path, monkeypatch):
    import ablate.folders as D

    root = _image_folder(tmp_path / "tree")
    cfg = OmegaConf.create({"name": "folder", "root": str(root), "train_dir": "train", "test_dir": "val",
                            "download": False, "image_size": 24, "num_classes": None, "workers": 0,
                            "stream": False, "cache_dir": str(tmp_path / "cache"), "mean": None, "std": None})
    ev = OmegaConf.create({"bank_size": None, "test_size": None})
    first = load_data(cfg, ev)
    assert first.ssl_x.shape[1:] == (3, 24, 24) and first.ssl_x.dtype == torch.uint8
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    monkeypatch.setattr(D, "_decode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    second = load_data(cfg, ev)
    assert torch.equal(first.ssl_x, second.ssl_x) and torch.equal(first.test_y, second.test_y)


def test_folder_stream_trains_from_decoded_batches(tmp_path, cfg_factory):
    from conftest import TINY

    from ablate.run.loop import train

    root = _image_folder(tmp_path / "tree")
    tiny = [o for o in TINY if not o.startswith("data.")]
    cfg = cfg_factory("+method=simsiam", *tiny, "data=folder", f"data.root={root}", "data.image_size=32",
                      "data.stream=true", "data.workers=0", f"data.cache_dir={tmp_path / 'cache'}",
                      "train.batch_size=16", "eval.bank_size=30")
    from ablate.data import FolderStream

    data = load_data(cfg.data, cfg.eval)
    assert isinstance(data.ssl_x, FolderStream) and len(data.ssl_x) == 60 and len(data.bank_x) == 30
    batch = next(data.ssl_x.epoch_batches(0, 16, 0, 16, 3))
    assert batch.shape == (16, 3, 32, 32) and batch.dtype == torch.uint8
    s = train(cfg, tmp_path / "run")
    assert s["status"] == "complete" and s["metrics"]["knn_top1"] >= 0
    assert "30 training images" in s["protocol"]["knn_top1"]


def test_a_streamed_unreadable_file_is_one_error_or_replaced_with_skip_bad(tmp_path, caplog):
    from ablate.folders import FolderStream, _folder_dataset

    root = _image_folder(tmp_path / "tree")
    bad = sorted((root / "train").rglob("*.png"))[3]
    bad.write_bytes(b"not an image")
    ds = _folder_dataset(OmegaConf.create({"root": str(root), "image_size": 16}), "train")
    with pytest.raises(DataError, match=f"cannot read image {bad}.*set data.skip_bad=true"):
        list(FolderStream(ds, 0, 16).epoch_batches(0, 20, 0, 20, 3))  # 60 images in 3 batches: one has it
    batches = list(FolderStream(ds, 0, 16, skip_bad=True).epoch_batches(0, 20, 0, 20, 3))
    assert [b.shape for b in batches] == [(20, 3, 16, 16)] * 3
    assert all(bool((b.flatten(1).amax(1) > 0).all()) for b in batches)  # no blank stand-in left in a batch
    assert "replaced 1 unreadable image file(s)" in caplog.text and str(bad) in caplog.text


def test_shape_masks_class_by_class_equal_every_mask_computed_for_every_image():
    from ablate.data import _shape_mask, _shape_masks

    g = torch.Generator().manual_seed(0)
    u, v = torch.rand(300, 16, 16, generator=g) * 2.4 - 1.2, torch.rand(300, 16, 16, generator=g) * 2.4 - 1.2
    label = torch.randint(0, len(SHAPES), (300,), generator=g)
    every = torch.stack([_shape_mask(u, v, k) for k in range(len(SHAPES))], 1)  # [N, 10, H, W]
    want = every.gather(1, label.view(-1, 1, 1, 1).expand(-1, 1, 16, 16)).squeeze(1)
    assert torch.equal(_shape_masks(u, v, label), want) and want.any() and not want.all()


def test_skip_bad_leaves_unreadable_images_out_with_a_counted_warning(tmp_path, caplog):
    from ablate.data import load_data

    root = _image_folder(tmp_path / "tree", n_per_class=2)
    for f in sorted((root / "train").rglob("*.png"))[::2][:2]:  # two classes keep an image each
        f.write_bytes(b"not an image")
    cfg = OmegaConf.create({"name": "folder", "root": str(root), "train_dir": "train", "test_dir": "val",
                            "download": False, "image_size": 16, "num_classes": None, "workers": 0,
                            "skip_bad": True, "stream": False, "cache_dir": None, "mean": None, "std": None})
    d = load_data(cfg, OmegaConf.create({"bank_size": None, "test_size": None}))
    assert len(d.ssl_x) == 20 - 2 and "skipped 2 unreadable image file(s)" in caplog.text


def test_a_corrupted_cache_entry_is_rebuilt(tmp_path, caplog):
    from ablate.data import load_data

    root = _image_folder(tmp_path / "tree", n_per_class=2)
    cfg = OmegaConf.create({"name": "folder", "root": str(root), "train_dir": "train", "test_dir": "val",
                            "download": False, "image_size": 16, "num_classes": None, "workers": 0,
                            "stream": False, "cache_dir": str(tmp_path / "cache"), "mean": None, "std": None})
    ev = OmegaConf.create({"bank_size": None, "test_size": None})
    first = load_data(cfg, ev)
    for entry in (tmp_path / "cache").glob("*.pt"):
        entry.write_bytes(bytes(entry.stat().st_size))  # replaced with zeros
    again = load_data(cfg, ev)
    assert torch.equal(first.ssl_x, again.ssl_x) and again.ssl_x.float().std() > 0
    assert caplog.text.count("is unusable (no integrity trailer") == 2
    caplog.clear()
    load_data(cfg, ev)  # rebuilt entries verify
    assert "unusable" not in caplog.text


def test_the_cache_defaults_to_a_per_user_directory(cfg_factory, monkeypatch, tmp_path):
    monkeypatch.delenv("ABLATE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cfg = cfg_factory("+method=byol", "data=folder", "data.root=/x")
    assert cfg.data.cache_dir == str(tmp_path / "ablate")

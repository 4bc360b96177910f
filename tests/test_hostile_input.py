"""Hostile input (issue 39): every value checked once against the schema before compute, labels numbered once
per dataset, caches bound to their file's content, run files never written through links or over another
tool's file, and the environment verified before it is trusted. Each test is one probe class, tried beyond
the case that was reported."""

import subprocess
import sys

import pytest
import torch
from conftest import TINY, make_cfg

from ablate.config import ConfigError, check_config

pytestmark = pytest.mark.usefixtures("one_thread")


def run_ablate(*args, cwd, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    return lines[0]


# ---------------------------------------------------------------------------- schema (items 5, 6, 16, 17, 18)
REFUSED = [
    # numbers given as strings (16), in every kind of field
    ('optim.lr="0.1"', "optim.lr='0.1' is not a number"),
    ('eval.knn_t="0.1"', "eval.knn_t='0.1' is not a number"),
    ('model.head_width_mult="0.5"', "model.head_width_mult='0.5' is not a number"),
    ('ema.base_tau="0.99"', "ema.base_tau='0.99' is not a number"),
    ('eval.linear.lr="0.1"', "eval.linear.lr='0.1' is not a number"),
    ('train.epochs="2"', "train.epochs='2' is not a number"),
    # values that trained a full epoch and then read as diverged (17), and their neighbours
    ("data.std=[0,0,0]", "data.std=[0, 0, 0] holds 0"),
    ("optim.final_lr_frac=nan", "optim.final_lr_frac=nan must be finite and in [0, 1]"),
    ("optim.final_lr_frac=2", "optim.final_lr_frac=2 must be finite and in [0, 1]"),
    ("aug.blur_sigma=[0,0]", "aug.blur_sigma=[0, 0] holds 0"),
    ("aug.blur_sigma=[2.0,0.1]", "must be [min, max] with min <= max"),
    ("optim.weight_decay=-inf", "optim.weight_decay=-inf must be finite"),
    # aug.* (6)
    ("aug.crop_scale=[2,3]", "aug.crop_scale=[2, 3] holds 2"),
    ("aug.crop_scale=[0.5]", "aug.crop_scale=[0.5] must be a list of 2 values"),
    ("aug.crop_scale=[1.0,0.5]", "must be [min, max] with min <= max"),
    ("aug.crop_ratio=[0,0]", "aug.crop_ratio=[0, 0] holds 0"),
    ("aug.flip_p=5", "aug.flip_p=5 must be finite and in [0, 1]"),
    ("aug.jitter_p=-3", "aug.jitter_p=-3 must be finite and in [0, 1]"),
    ("aug.hue=0.9", "aug.hue=0.9 must be finite and in [0, 0.5]"),
    ("aug.gray_p=true", "aug.gray_p=True must be finite"),
    ("aug.solarize_p=[0.1,0.2,0.3]", "must be a list of 2 values"),
    ("aug.brightness=-1", "aug.brightness=-1 must be finite and >= 0"),
    # data normalization (6, 18)
    ("data.std=[0.2,0.2,0.2]", "data.std is set but data.mean is null"),
    ("data.mean=[0.1,0.2]", "data.mean=[0.1, 0.2] must be a list of 3 values"),
    # ranges that crashed later (18)
    ("optim.momentum=-1", "optim.momentum=-1 must be finite and in [0, 1)"),
    ("eval.test_size=1", "eval.test_size=1 must be an integer >= 16"),
    ("data.test_size=2", "data.test_size=2 must be an integer >= 16"),
    ("eval.knn_t=0", "eval.knn_t=0 must be finite and > 0"),
    ("train.deterministic=maybe", "train.deterministic=maybe must be true or false"),
    ("train.precision=fp8", "train.precision=fp8 is unknown; choose one of: auto, fp32, bf16"),
    # sizes no machine here can allocate (18)
    ("data.train_size=100000000000", "data.train_size=100000000000 needs about"),
    ("model.head_width_mult=10000", "model.head_width_mult=10000 needs about"),
    ("data.image_size=100000", "train.batch_size=16 needs about"),
]


@pytest.mark.parametrize("arg,message", REFUSED, ids=[a for a, _ in REFUSED])
def test_every_value_is_checked_against_the_schema(arg, message):
    with pytest.raises(ConfigError, match=None) as e:
        check_config(make_cfg("+method=byol", *TINY, arg))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("arg", ['optim.lr="0.1"', "data.std=[0,0,0]", "aug.crop_scale=[0.5]", "eval.test_size=1"])
def test_the_cli_refuses_in_one_line_before_anything_is_written(tmp_path, arg, refused):
    out = tmp_path / "run"
    line = one_line(refused("+method=byol", *TINY, arg, f"hydra.run.dir={out}"))
    assert line.startswith("ablate: error: ") and arg.split("=")[0] in line
    assert not out.exists()  # nothing recorded, so the fixed command runs


def test_the_auto_switches_are_validated_by_the_schema_where_they_are_resolved():
    from ablate.run import hardware, viewpar

    for call in (lambda: hardware.compile_aug("maybe", torch.device("cpu"), 1),
                 lambda: hardware.channels_last("yes", torch.device("cpu"), "fp32"),
                 lambda: hardware.resolve("fp16", torch.device("cpu")),
                 lambda: viewpar.resolve(1, torch.device("cpu"), None, False, False, 1)):
        with pytest.raises(ConfigError, match=r"must be auto, true or false|is unknown; choose one of"):
            call()


def test_knn_at_a_small_temperature_votes_like_nearest_neighbours():
    """exp(sim / t) overflowed at t <= 0.01 and every vote read NaN (kNN below chance, item 5)."""
    from ablate.diagnostics import knn_top1

    g = torch.Generator().manual_seed(0)
    bank = torch.randn(200, 8, generator=g)
    bank_y = torch.arange(200) % 4
    query = bank[:50] + 0.01 * torch.randn(50, 8, generator=g)
    for t in (0.1, 0.01, 0.001, 1e-5):
        assert float(knn_top1(bank, bank_y, query, bank_y[:50], 4, k=20, t=t)) == 1.0


@pytest.mark.parametrize("arg,message", [("train.batch_size=0", "train.batch_size=0 must be an integer >= 1"),
                                          ("ema=bogus", "unknown option 'bogus' for ema"),
                                          ("aug.flip_p=3", "aug.flip_p=3 must be finite")])
def test_bench_checks_the_config_before_compute(arg, message, monkeypatch, capsys):
    from ablate import bench

    monkeypatch.setattr(bench, "load_data", lambda *a: pytest.fail("the bench went on to load the data"))
    with pytest.raises(SystemExit) as e:
        bench.main(["step", *TINY, arg])
    errors = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
    assert e.value.code == 2 and len(errors) == 1 and message in errors[0], errors


# ---------------------------------------------------------------------------- labels (item 1)
def _folder(root, classes_by_split, n=4):
    """An ImageFolder tree: each split holds ``n`` images of each of its classes (a class named by a shape)."""
    from PIL import Image

    from ablate.data import SHAPES, make_shapes

    x, y = make_shapes(400, seed=0, size=16)
    for split, classes in classes_by_split.items():
        for name in classes:
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            imgs = x[y == SHAPES.index(name)][:n] if n else []
            for i, img in enumerate(imgs):
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{split}{i}.png")
    return root


def _folder_cfg(root, tmp_path):
    from omegaconf import OmegaConf

    return OmegaConf.create({"name": "folder", "root": str(root), "train_dir": "train", "test_dir": "val",
                             "download": False, "image_size": 16, "num_classes": None, "workers": 0,
                             "stream": False, "cache_dir": str(tmp_path / "cache"), "mean": None, "std": None})


EVAL_ALL = {"bank_size": None, "test_size": None}


@pytest.mark.parametrize("val", [["ring", "square"], ["circle", "square"], ["square"]])
def test_a_test_split_missing_a_class_keeps_the_training_numbers(tmp_path, val):
    from omegaconf import OmegaConf

    from ablate.data import load_data

    root = _folder(tmp_path / "tree", {"train": ["circle", "ring", "square"], "val": val})
    d = load_data(_folder_cfg(root, tmp_path), OmegaConf.create(EVAL_ALL))
    want = sorted(["circle", "ring", "square"])
    assert d.num_classes == 3 and sorted(set(d.test_y.tolist())) == [want.index(c) for c in sorted(val)]


def test_a_test_class_with_no_folder_in_training_or_no_image_is_handled(tmp_path):
    from omegaconf import OmegaConf

    from ablate.data import DataError, load_data

    root = _folder(tmp_path / "extra", {"train": ["circle", "ring"], "val": ["circle", "ring", "star"]})
    with pytest.raises(DataError, match="holds class folder.* star that train lacks"):
        load_data(_folder_cfg(root, tmp_path), OmegaConf.create(EVAL_ALL))
    root = _folder(tmp_path / "empty", {"train": ["circle", "ring", "star"], "val": ["circle", "ring"]})
    (root / "val" / "star").mkdir()  # an empty class folder in the test split: no traceback, the same numbers
    d = load_data(_folder_cfg(root, tmp_path), OmegaConf.create(EVAL_ALL))
    assert d.num_classes == 3 and sorted(set(d.test_y.tolist())) == [0, 1]


def _arrays(n_train=40, n_test=20):
    from ablate.data import make_shapes

    x, y = make_shapes(n_train + n_test, seed=0)
    x = x.permute(0, 2, 3, 1).numpy()
    return dict(x_train=x[:n_train], y_train=y[:n_train].numpy(), x_test=x[n_train:], y_test=y[n_train:].numpy())


def _npz_cfg(path, tmp_path):
    from omegaconf import OmegaConf

    return OmegaConf.create({"name": "npz", "path": str(path), "cache_dir": str(tmp_path / "cache"),
                             "image_size": 32, "num_classes": None, "mean": None, "std": None})


def test_npz_test_labels_that_training_never_has_are_refused(tmp_path):
    import numpy as np
    from omegaconf import OmegaConf

    from ablate.data import DataError, load_data

    a = _arrays()
    a["y_train"] = a["y_train"] % 5  # classes 0..4 in training, 0..9 in the test split
    np.savez(tmp_path / "a.npz", **a)
    with pytest.raises(DataError, match="test labels .* never occur in training"):
        load_data(_npz_cfg(tmp_path / "a.npz", tmp_path), OmegaConf.create(EVAL_ALL))


# ---------------------------------------------------------------------------- npz input (items 18, 19)
@pytest.mark.parametrize("kind,message", [("text", "is not an npz file"), ("truncated", "is not a readable npz"),
                                          ("zero", "at least 1x1 pixels"), ("empty", "at least one image")])
def test_a_broken_npz_is_one_data_error(tmp_path, kind, message):
    import numpy as np
    from omegaconf import OmegaConf

    from ablate.data import DataError, load_data

    path, a = tmp_path / "a.npz", _arrays()
    if kind == "zero":
        a["x_train"] = np.zeros((40, 0, 0, 3), np.uint8)
    if kind == "empty":
        a["x_test"], a["y_test"] = a["x_test"][:0], a["y_test"][:0]
    np.savez(path, **a)
    if kind == "text":
        path.write_text("x_train,y_train\n1,2\n")
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=message):
        load_data(_npz_cfg(path, tmp_path), OmegaConf.create(EVAL_ALL))


# ---------------------------------------------------------------------------- decode cache (items 2, 14)
def _jpeg_npz(path, a):
    import io

    import numpy as np
    from PIL import Image

    out = {}
    for split in ("train", "test"):
        blobs = []
        for img in a[f"x_{split}"]:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=95)
            blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
        out[f"{split}_jpeg"] = np.concatenate(blobs)
        out[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs])
        out[f"y_{split}"] = a[f"y_{split}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return path


def test_the_decode_cache_is_keyed_by_the_file_content(tmp_path):
    from omegaconf import OmegaConf

    from ablate.data import load_data

    a = _arrays()
    first = load_data(_npz_cfg(_jpeg_npz(tmp_path / "old" / "c.npz", a), tmp_path), OmegaConf.create(EVAL_ALL))
    a["y_train"], a["y_test"] = (a["y_train"] + 1) % 10, (a["y_test"] + 1) % 10  # corrected labels, same images
    fixed = load_data(_npz_cfg(_jpeg_npz(tmp_path / "new" / "c.npz", a), tmp_path), OmegaConf.create(EVAL_ALL))
    assert torch.equal(fixed.bank_y, torch.from_numpy(a["y_train"]).long())
    assert torch.equal(fixed.test_y, (first.test_y + 1) % 10)
    b = _arrays()
    b["x_train"] = b["x_train"][::-1].copy()  # other images, the same name
    other = load_data(_npz_cfg(_jpeg_npz(tmp_path / "new" / "c.npz", b), tmp_path), OmegaConf.create(EVAL_ALL))
    assert torch.equal(other.ssl_x, first.ssl_x.flip(0))


def test_a_planted_cache_entry_with_a_valid_checksum_is_not_trained_on(tmp_path):
    import io

    import numpy as np
    from omegaconf import OmegaConf

    from ablate.data import load_data
    from ablate.files import seal, unseal

    path = _jpeg_npz(tmp_path / "c.npz", _arrays())
    want = load_data(_npz_cfg(path, tmp_path), OmegaConf.create(EVAL_ALL))
    (entry,) = (tmp_path / "cache").glob("*")
    with np.load(io.BytesIO(unseal(entry.read_bytes()))) as c:
        planted = {k: c[k] for k in c.files}
    for k in ("x_train", "x_test"):
        planted[k] = np.zeros_like(planted[k])  # all-zero images under a valid checksum trailer
    buf = io.BytesIO()
    np.savez(buf, **planted)
    entry.write_bytes(seal(buf.getvalue()))
    got = load_data(_npz_cfg(path, tmp_path), OmegaConf.create(EVAL_ALL))
    assert torch.equal(got.ssl_x, want.ssl_x) and torch.equal(got.test_x, want.test_x)


# ---------------------------------------------------------------------------- tools (items 8, 15, 18)
TRAINED = pytest.mark.xdist_group("trained_fixture")  # one xdist worker trains the fixture runs once


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two finished tiny runs: one whose data config gives mean/std, one whose statistics are computed."""
    from ablate.run.loop import train

    root = tmp_path_factory.mktemp("runs")
    given = ["data.mean=[0.5,0.4,0.3]", "data.std=[0.25,0.2,0.15]"]
    with torch.inference_mode(False):
        for name, extra in (("given", given), ("computed", [])):
            train(make_cfg("+method=vicreg", *TINY, *extra), root / name)
    return root


@TRAINED
def test_export_writes_the_run_normalization_whether_given_or_computed(trained, tmp_path):
    import json

    from ablate.data import load_data
    from ablate.tools.export import main

    assert main([str(trained / "given"), "--out", str(tmp_path / "g.pt")]) == 0
    meta = json.loads((tmp_path / "g.json").read_text())
    assert meta["input"]["mean"] == [0.5, 0.4, 0.3] and meta["input"]["std"] == [0.25, 0.2, 0.15]
    assert main([str(trained / "computed"), "--out", str(tmp_path / "c.pt"), "--projector"]) == 0
    meta = json.loads((tmp_path / "c.json").read_text())
    cfg = make_cfg("+method=vicreg", *TINY)
    data = load_data(cfg.data, cfg.eval, cfg.seed)
    assert meta["input"]["mean"] == pytest.approx(data.mean.tolist(), abs=1e-6)
    assert meta["input"]["std"] == pytest.approx(data.std.tolist(), abs=1e-6)


@pytest.mark.parametrize("name", ["summary.pt", "checkpoint.pt", "metrics.jsonl", "linear_eval.pt",
                                  "checkpoint.epoch1.pt", "config.yaml", "sub"])
@TRAINED
def test_export_never_writes_over_a_run_file_nor_into_a_directory_name(trained, name, capsys):
    from ablate.tools.export import main

    run = trained / "given"
    (run / "sub").mkdir(exist_ok=True)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main([str(run), "--out", str(run / name)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ablate.tools.export: error: ")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@TRAINED
def test_export_writes_the_weights_with_their_sidecar_or_neither(trained, tmp_path, monkeypatch, capsys):
    import ablate.tools.export as E

    real = E.atomic_write

    def full_disk(path, write, previous=None):
        if path.suffix == ".json":
            raise OSError(28, "No space left on device")
        real(path, write, previous)

    monkeypatch.setattr(E, "atomic_write", full_disk)
    assert E.main([str(trained / "given"), "--out", str(tmp_path / "b.pt"), "--projector"]) == 2
    assert list(tmp_path.iterdir()) == []


@TRAINED
@pytest.mark.parametrize("device", ["bogus", "cuda:99" if torch.cuda.is_available() else "cuda"])
def test_linear_and_geometry_refuse_a_device_in_one_line(trained, device, capsys):
    from ablate.tools import geometry, linear

    for tool in (linear, geometry):
        assert tool.main([str(trained / "given"), "--device", device, "--epochs", "1"][:3 if tool is geometry
                                                                                        else 5]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--device" in err[0], err


@TRAINED
def test_linear_refuses_an_unwritable_out_before_training(trained, tmp_path, monkeypatch, capsys):
    from ablate.tools import linear

    monkeypatch.setattr(linear, "linear_eval", lambda *a, **k: pytest.fail("trained before checking --out"))
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "file" / "x.json", tmp_path):  # under a file; a directory
        assert linear.main([str(trained / "given"), "--out", str(out)]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- run directories (items 9, 12, 13)
@pytest.mark.parametrize("name", ["metrics.jsonl", "config.yaml", ".ablate.lock", "summary.json", "checkpoint.pt",
                                  ".hydra", ".hydra/config.yaml", ".summary.json.123.tmp.json"])
def test_a_link_in_a_run_directory_is_refused_and_its_target_untouched(tmp_path, name):
    from ablate.errors import AblateError
    from ablate.run.rundir import RunLock, check_run_dir

    run, target = tmp_path / "run", tmp_path / "precious"
    target.mkdir()
    (target / "config.yaml").write_text("mine\n")
    (run / ".hydra").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("")
    (run / name).unlink(missing_ok=True) if not (run / name).is_dir() else (run / name).rmdir()
    (run / name).symlink_to(target if name == ".hydra" else target / "config.yaml")
    with pytest.raises(AblateError, match="is a symbolic link; a run never writes through links"):
        if name == ".ablate.lock":
            RunLock(run).acquire()
        check_run_dir(run, make_cfg("+method=byol", *TINY))
    assert (target / "config.yaml").read_text() == "mine\n"


def test_the_run_files_replace_a_link_instead_of_writing_through_it(tmp_path):
    from ablate.files import open_nofollow, write_json
    from ablate.run.loop import train

    target = tmp_path / "precious.txt"
    target.write_text("mine\n")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("metrics.jsonl", "config.yaml", f".summary.json.{__import__('os').getpid()}.tmp.json"):
        (run / name).symlink_to(target)
    assert train(make_cfg("+method=byol", *TINY), run)["status"] == "complete"
    assert target.read_text() == "mine\n" and not (run / "metrics.jsonl").is_symlink()
    (tmp_path / "link.json").symlink_to(target)
    with pytest.raises(OSError):
        open_nofollow(tmp_path / "link.json", "a")
    write_json(tmp_path / "link.json", {})
    assert target.read_text() == "mine\n"


def test_a_run_directory_that_is_not_a_run_or_empty_is_refused(tmp_path, refused, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes\n")
    line = one_line(refused("+method=byol", *TINY, f"hydra.run.dir={mine}"))
    assert "holds files that are not a run's (notes.txt)" in line
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    (tmp_path / "keep.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert "hydra.run.dir is empty" in one_line(refused("+method=byol", *TINY, "hydra.run.dir="))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "mine"]


def test_a_finished_run_with_keep_none_or_a_nan_setting_is_the_same_config(tmp_path):
    from ablate.run.loop import train
    from ablate.run.rundir import check_run_dir, config_diff

    for name, extra in (("none", ["checkpoint.keep=none"]), ("nan", ["cov=none", "method.cov_weight=nan"])):
        cfg = make_cfg("+method=vicreg", *TINY, *extra)
        train(cfg, tmp_path / name)
        assert "already holds a finished run of this config" in check_run_dir(tmp_path / name, cfg)
    assert config_diff({"a": float("nan"), "b": [1.0]}, {"a": float("nan"), "b": [1.0]}) == []
    assert config_diff({"a": float("nan")}, {"a": 1.0}) == ["a: nan -> 1.0"]


# ---------------------------------------------------------------------------- a claimed launch (item 11)
GOOD = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
        "TORCHELASTIC_RUN_ID": "x"}


@pytest.mark.parametrize("env,ok", [({}, True), (GOOD, True), ({"RANK": "1"}, False), ({"WORLD_SIZE": "2"}, False),
                                    ({**GOOD, "TORCHELASTIC_RUN_ID": ""}, False), ({**GOOD, "RANK": "2"}, False),
                                    ({**GOOD, "LOCAL_RANK": "x"}, False),
                                    ({k: v for k, v in GOOD.items() if k != "MASTER_PORT"}, False)])
def test_a_distributed_environment_is_verified_before_it_is_trusted(env, ok):
    from ablate.run.launch import check_launch

    if ok:
        check_launch(env)
    else:
        with pytest.raises(ConfigError, match="unset .*or launch with torchrun"):
            check_launch(env)


def test_a_stray_rank_is_one_line_and_takes_no_directory(tmp_path):
    import os

    out = tmp_path / "run"
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2"}
    line = one_line(run_ablate("+method=byol", *TINY, f"hydra.run.dir={out}", cwd=tmp_path, env=env))
    assert "RANK=1 is set but" in line and not out.exists()


# ---------------------------------------------------------------------------- checkpoints and derived files (4, 7)
def test_a_failed_final_checkpoint_is_recorded_and_the_tools_refuse_the_stale_weights(tmp_path, monkeypatch):
    from ablate.run import checkpoint
    from ablate.run.finished import RunError, load_run
    from ablate.run.loop import train

    real, run = checkpoint.save_checkpoint, tmp_path / "run"  # what the loop's CheckpointWriter calls
    monkeypatch.setattr(checkpoint, "save_checkpoint", lambda d, s, k: real(d, s, k) if s["epoch"] < 2 else False)
    summary = train(make_cfg("+method=byol", *TINY, "train.epochs=2"), run)
    assert summary["status"] == "failed" and "epoch 2 checkpoint could not be written" in summary["error"]
    with pytest.raises(RunError, match="newest checkpoint holds epoch 1 but the run trained 2"):
        load_run(run)
    monkeypatch.setattr(checkpoint, "save_checkpoint", real)
    assert train(make_cfg("+method=byol", *TINY, "train.epochs=2"), run)["status"] == "complete"  # epoch 2 again
    assert load_run(run)[0]["epoch"] == 2


def test_a_linear_eval_of_a_run_that_trains_again_is_removed(tmp_path):
    from ablate.run.loop import train

    run = tmp_path / "run"
    train(make_cfg("+method=byol", *TINY, "train.epochs=2", "checkpoint.keep=all"), run)
    (run / "summary.json").unlink()  # killed before its summary: resumes
    (run / "linear_eval.json").write_text('{"top1": 12.0, "checkpoint_epoch": 1}\n')
    train(make_cfg("+method=byol", *TINY, "train.epochs=2"), run)
    assert not (run / "linear_eval.json").exists()


# ---------------------------------------------------------------------------- sweeps and messages (10, 19)
@pytest.mark.parametrize("name", ["0_data.path=../../x.npz", "0_a=/etc/passwd", "..", "0_x=" + "../" * 200])
def test_a_sweep_cell_name_is_one_path_component(name):
    from ablate.resolvers import short_dirname

    out = short_dirname(name)
    assert "/" not in out and out not in (".", "..") and len(out.encode()) <= 255


def test_a_sweep_cell_never_lands_outside_the_sweep_directory(tmp_path):
    sweep = tmp_path / "a" / "sweep"
    tiny = [o for o in TINY if not o.startswith("data.")]
    r = run_ablate("-m", "+method=byol", *tiny, "data=npz", "data.path=../../../escape/x.npz",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert r.returncode == 1  # the cell fails (no such file), recorded inside the sweep directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"] and sorted(p.name for p in (tmp_path / "a").iterdir()) \
        == ["sweep"]
    assert len(list(sweep.glob("*/summary.json"))) == 1


def test_a_cell_another_sweep_holds_is_not_counted_as_failed(tmp_path):
    from ablate.run.rundir import RunLock

    sweep, args = tmp_path / "sweep", ["-m", "+method=byol", *TINY, "seed=3"]
    assert run_ablate(*args, f"hydra.sweep.dir={sweep}", cwd=tmp_path).returncode == 0
    (cell,) = [p for p in sweep.iterdir() if p.is_dir()]
    lock = RunLock(cell).acquire()
    try:
        r = run_ablate(*args, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    finally:
        lock.release()
    assert r.returncode == 0 and "skipped" in r.stderr and "failed" not in r.stderr, r.stderr


@pytest.mark.parametrize("args", [["train.epochz=3"], ["-m", "train.epochz=3,4"], ["data.rooot=x", "-m"]])
def test_an_unknown_key_without_plus_is_one_line(tmp_path, args, refused):
    line = one_line(refused("+method=byol", *args, f"hydra.run.dir={tmp_path / 'r'}"))
    assert "is not a config key" in line and "write +" in line


def test_multirun_flag_anywhere_on_the_line(tmp_path, monkeypatch):
    """The CLI hands Hydra ``-m`` first wherever the line has it (checked in this process for three places),
    and a sweep with it last runs (a subprocess; first on the line: every sweep test)."""
    from ablate.run import cli

    handed = []
    monkeypatch.setattr(cli, "_hydra_main", lambda: handed.append(list(sys.argv[1:])))
    monkeypatch.setenv(cli.SWEEP_STATUS, "")  # main sets it for the sweep's cells: restored afterwards
    for where in (0, 2, 99):
        args = ["+method=byol", *TINY, "seed=4", f"hydra.sweep.dir={tmp_path / str(where)}"]
        args.insert(where, "-m")
        monkeypatch.setattr(sys, "argv", ["ablate", *args])
        cli.main()
        assert handed[-1][0] == "-m" and handed[-1].count("-m") == 1 and set(args) <= set(handed[-1])
    monkeypatch.undo()
    r = run_ablate(*args, cwd=tmp_path)
    assert r.returncode == 0 and "unrecognized arguments" not in r.stderr, r.stderr


# ---------------------------------------------------------------------------- runs.csv input (item 18)
@pytest.mark.parametrize("content", [b"", b"\x00\x01\x02PK\x03\x04" * 50, b"just,some\n1,2\n", b"\xff\xfe\xfa\n",
                                     b'a,"b\n1,2,3,4\n'])
@pytest.mark.parametrize("tool", ["ablate.report", "ablate.report.factorial"])
def test_report_and_factorial_refuse_a_file_that_is_not_a_runs_csv_in_one_line(tmp_path, tool, content, capsys):
    import importlib

    csv = tmp_path / "runs.csv"
    csv.write_bytes(content)
    out = ["--out", str(tmp_path / "rep")] if tool == "ablate.report" else []
    if content == b"":  # once per tool as `python -m TOOL`: its entry point and exit status
        r = subprocess.run([sys.executable, "-m", tool, str(csv), *out], capture_output=True, text=True, timeout=300)
        code, lines = r.returncode, [x for x in r.stderr.strip().splitlines() if "RuntimeWarning" not in x]
    else:  # in this process: the same main, without an interpreter's start
        with pytest.raises(SystemExit) as e:
            importlib.import_module(tool).main([str(csv), *out])
        code, lines = e.value.code, capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), lines


def test_a_test_split_too_small_for_a_verdict_is_refused_before_training(tmp_path):
    import numpy as np

    from ablate.run.loop import train

    np.savez(tmp_path / "two.npz", **_arrays(n_train=40, n_test=2))
    tiny = [o for o in TINY if not o.startswith("data.")]
    cfg = make_cfg("+method=byol", *tiny, "data=npz", f"data.path={tmp_path / 'two.npz'}", "eval.test_size=null",
                   f"data.cache_dir={tmp_path}", "data.num_classes=null")
    with pytest.raises(ConfigError, match="test split holds 2 images; a verdict needs at least 16"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_resume_that_changes_the_view_mode_records_each_stretch(tmp_path):
    """Item 6: train.view_parallel is left out of the resumable config (it changes only the rounding), so a resume
    may change it; the summary records the mode of every stretch, not the last alone."""
    from ablate.bench import torch_threads
    from ablate.run.loop import train

    run = tmp_path / "run"
    with torch_threads(2):  # the split step needs two torch threads
        first = train(make_cfg("+method=byol", *TINY, "train.epochs=2", "train.view_parallel=true"), run)
        assert first["view_parallel"] is True and first["view_parallel_epochs"] == [[0, True]]
        (run / "summary.json").unlink()  # every epoch checkpointed: the resume starts after epoch 2
        again = train(make_cfg("+method=byol", *TINY, "train.epochs=2", "train.view_parallel=false"), run)
    assert again["view_parallel"] is False and again["view_parallel_epochs"] == [[0, True], [2, False]]

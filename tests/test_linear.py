"""python -m ablate.tools.linear: the offline linear evaluation runs on a trained run, learns an easy task, writes its
protocol; bad input fails in one line before any compute."""

import json

import numpy as np
import pytest
from conftest import TINY

from ablate.run.loop import train
from ablate.tools.linear import main

SMALL = [o for o in TINY if not o.startswith("data.")]
COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220], [230, 230, 230]])


def _colour_npz(path, n_train=96, n_test=40):
    """Four classes, each a solid colour with pixel noise: crops and flips keep the class, so a linear head on
    almost any conv features separates them."""
    rng = np.random.default_rng(0)

    def split(n):
        y = np.arange(n) % len(COLOURS)
        x = COLOURS[y][:, None, None, :] + rng.normal(0, 12, (n, 32, 32, 3))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    (x_train, y_train), (x_test, y_test) = split(n_train), split(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    from conftest import make_cfg

    root = tmp_path_factory.mktemp("linear")
    _colour_npz(root / "colours.npz")
    run = root / "run"
    # eval sizes smaller than the splits: the linear evaluation must lift them and use every image
    train(make_cfg("+method=simsiam", *SMALL, "data=npz", f"data.path={root / 'colours.npz'}", "data.num_classes=4",
                   "eval.bank_size=32", "eval.test_size=16"), run)
    return run


@pytest.mark.xdist_group("colour_run")  # one worker trains the fixture run once
@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
def test_linear_eval_learns_an_easy_task_and_writes_its_protocol(colour_run, tmp_path, optimizer, capsys):
    out = tmp_path / f"{optimizer}.json"
    lr = "0.5" if optimizer == "sgd" else "2.0"
    assert main([str(colour_run), "--epochs", "15", "--batch-size", "32", "--lr", lr, "--optimizer", optimizer,
                 "--out", str(out)]) == 0
    assert "linear top-1" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["chance_top1"] == 25.0 and res["top1"] >= 90, res
    assert len(res["train_loss"]) == 15 and res["train_loss"][-1] < res["train_loss"][0]
    p = res["protocol"]
    assert p["train_images"] == 96 and p["test_images"] == 40 and p["steps"] == 15 * 3
    assert p["optimizer"] == optimizer and p["lr"] == float(lr) and p["epochs"] == 15 and p["batch_size"] == 32
    for key in ("backbone", "feature_dim", "head", "lr_schedule", "momentum", "weight_decay", "train_augmentation",
                "test_view", "normalize_mean", "normalize_std", "seed", "num_classes"):
        assert key in p, key
    assert ("lars_eta" in p) == (optimizer == "lars")
    assert res["checkpoint_epoch"] == 1 and res["method"] == "simsiam"


def test_default_output_lands_in_the_run_dir_and_is_reproducible(tiny_run, tmp_path):
    run = tiny_run("vicreg")
    assert main([str(run), "--epochs", "2", "--batch-size", "16"]) == 0
    first = json.loads((run / "linear_eval.json").read_text())
    assert 0 <= first["top1"] <= 100 and first["protocol"]["train_images"] == 64
    assert first["protocol"]["test_images"] == 32  # data.test_size=32 in TINY: the whole held-out split
    assert main([str(run), "--epochs", "2", "--batch-size", "16", "--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["top1"] == first["top1"] and again["train_loss"] == first["train_loss"]


@pytest.mark.parametrize("args, msg", [
    (["--epochs", "0"], "must be >= 1"), (["--lr", "nan"], "--lr nan must be"), (["--lr", "-1"], "--lr -1.0"),
    (["--crop-min", "0"], "--crop-min 0.0"), (["--momentum", "1"], "--momentum 1.0"),
])
def test_bad_arguments_fail_in_one_line(tmp_path, capsys, args, msg):
    assert main([str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ablate.tools.linear: error:") and msg in err


def test_missing_run_or_checkpoint_fails_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no checkpoint.pt" in err


@pytest.mark.parametrize("kind", ["random", "supervised"])
def test_a_baseline_run_is_evaluated_like_an_ssl_run(tiny_run, kind):
    run = tiny_run(kind)
    assert main([str(run), "--epochs", "1", "--batch-size", "16"]) == 0
    res = json.loads((run / "linear_eval.json").read_text())
    assert res["method"] == kind and 0 <= res["top1"] <= 100

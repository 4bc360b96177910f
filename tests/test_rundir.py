"""Runs never collide and never lie (issue 16): one run per directory, a refused or skipped run changes
nothing, sweeps fail loudly, bad values are one line with exit 2, data caches are verified."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from omegaconf import OmegaConf
from test_cli import run_ablate
from test_data import _image_folder

from ablate.resolvers import short_dirname
from ablate.run.hydra_args import order_groups, sweep_args
from ablate.run.rundir import LOCK, unique_dir


def popen(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # a shell starts background jobs with SIGINT ignored, and a child inherits that: restore Ctrl-C
    return subprocess.Popen([sys.executable, "-m", "ablate", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(read, proc, what: str, timeout=120):
    """``read()``'s value once it stops raising OSError or ValueError, while the run is still alive."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            return read()
        except (OSError, ValueError):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    raise AssertionError(f"the run never {what}")


def wait_for_claim(run_dir: Path, proc, timeout=120) -> dict:
    """The lock file's holder, once the run has taken the directory."""
    return wait_for(lambda: json.loads((run_dir / LOCK).read_text()), proc, "locked its directory", timeout)


def snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(d.rglob("*"))}


def one_error_line(r, code=2) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code and len(lines) == 1 and lines[0].startswith("ablate: error: "), r.stderr
    return lines[0]


def test_a_second_process_into_a_busy_directory_is_refused_and_the_first_result_is_intact(tmp_path):
    out = tmp_path / "run"
    args = ["+method=simsiam", *TINY, "train.epochs=3", f"hydra.run.dir={out}"]
    first = popen(*args, cwd=tmp_path)
    holder = wait_for_claim(out, first)
    os.kill(first.pid, signal.SIGSTOP)  # the first run holds the directory while the second starts
    try:
        second = run_ablate(*args, cwd=tmp_path, timeout=120)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    line = one_error_line(second)
    assert f"is in use by another run (pid {holder['pid']} on {holder['host']}" in line
    assert first.wait(timeout=300) == 0, first.communicate()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


def test_a_killed_run_does_not_block_its_own_resume(tmp_path):
    out = tmp_path / "run"
    args = ["+method=simsiam", *TINY, "train.epochs=3", f"hydra.run.dir={out}"]
    first = popen(*args, cwd=tmp_path)
    wait_for_claim(out, first)
    first.kill()  # SIGKILL: the lock file stays, the lock goes with the process
    first.wait()
    r = run_ablate(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


def test_default_directories_are_unique_per_process(tmp_path):
    base = tmp_path / "outputs" / "12-00-00_byol"
    dirs = [unique_dir(base) for _ in range(3)]
    assert [d.name for d in dirs] == ["12-00-00_byol", "12-00-00_byol-2", "12-00-00_byol-3"]


def test_a_refused_or_skipped_run_leaves_the_directory_byte_identical(tmp_path):
    out = tmp_path / "run"
    args = ["+method=simsiam", *TINY, f"hydra.run.dir={out}"]
    assert run_ablate(*args, cwd=tmp_path).returncode == 0
    before = snapshot(out)
    r = run_ablate(*args, cwd=tmp_path)  # the same config: skipped
    assert r.returncode == 0 and "already holds a finished run of this config" in r.stderr
    r = run_ablate(*args, "train.epochs=2", "eval.knn_k=5", cwd=tmp_path)  # another config: refused
    line = one_error_line(r)
    assert "finished run of another config (eval.knn_k: 200 -> 5; train.epochs: 1 -> 2)" in line
    assert snapshot(out) == before
    (out / "summary.json").unlink()  # an unfinished run now (its checkpoint stays)
    before = snapshot(out)
    line = one_error_line(run_ablate("+method=byol", *TINY, f"hydra.run.dir={out}", cwd=tmp_path))
    assert "holds an unfinished run of another config" in line
    assert snapshot(out) == before


def test_a_run_stored_before_compile_aug_existed_reads_as_eager(cfg_factory):
    from ablate.run.rundir import config_diff as _config_diff
    from ablate.run.rundir import resumable_config as _resumable_config
    from ablate.run.rundir import upgrade_config

    def stored():
        old = _resumable_config(cfg_factory("+method=simsiam", *TINY))
        del old["train"]["compile_aug"]
        return old

    assert _config_diff(upgrade_config(stored()), _resumable_config(cfg_factory("+method=simsiam", *TINY))) == []
    compiled = _resumable_config(cfg_factory("+method=simsiam", *TINY, "train.compile_aug=true"))
    assert _config_diff(upgrade_config(stored()), compiled) == ["train.compile_aug: False -> True"]


def test_the_views_schedule_does_not_make_another_config(cfg_factory):
    """A run made with the views in turn (or before train.view_parallel existed) is the same config as one with
    them in parallel: finished, it is skipped; unfinished, it resumes."""
    from ablate.run.rundir import config_diff as _config_diff
    from ablate.run.rundir import resumable_config as _resumable_config
    from ablate.run.rundir import upgrade_config

    def stored(keep_switch=True):  # as a checkpoint of a run with the views in turn stores its config
        c = OmegaConf.to_container(cfg_factory("+method=simsiam", *TINY, "train.view_parallel=false"), resolve=True)
        c.pop("logger"), c.pop("checkpoint")
        if not keep_switch:  # written before the switch existed
            del c["train"]["view_parallel"]
        return c

    new = _resumable_config(cfg_factory("+method=simsiam", *TINY))
    assert _config_diff(upgrade_config(stored()), new) == []
    assert _config_diff(upgrade_config(stored(keep_switch=False)), new) == []
    other = _resumable_config(cfg_factory("+method=simsiam", *TINY, "train.epochs=2"))
    assert _config_diff(upgrade_config(stored()), other) == ["train.epochs: 1 -> 2"]


BAD = [
    ("eval.linear.epochs=0", "eval.linear.epochs=0 must be an integer >= 1"),
    ("eval.knn_k=0", "eval.knn_k=0 must be an integer >= 1"),
    ("eval.test_size=0", "eval.test_size=0 must be an integer >= 1 (or null for all)"),
    ("eval.bank_size=-3", "eval.bank_size=-3 must be an integer >= 1"),
    ("data.train_size=-1", "data.train_size=-1 must be an integer >= 1"),
    ("model.head_width_mult=0", "model.head_width_mult=0 must be > 0"),
    ("model.head_width_mult=-1", "model.head_width_mult=-1 must be finite and >= 0"),
    ("train.warmup_epochs=-1", "train.warmup_epochs=-1 must be an integer >= 0"),
    ("+train.epoch=3", "+train.epoch=3 adds a key that nothing reads"),
    ("seed=1.5", "seed=1.5 must be an integer >= 0"),
    ("eval.every=0", "eval.every=0 must be an integer >= 1"),
    ("data.image_size=0", "data.image_size=0 must be an integer >= 8"),
    ("device=tpu", "device=tpu is unknown"),
    ("train.compile_aug=maybe", "train.compile_aug=maybe must be auto, true or false"),
    ("train.compile=auto", "train.compile=auto must be true or false"),
]
if not torch.cuda.is_available():
    BAD.append(("device=cuda", "device=cuda but CUDA is not available here"))


@pytest.mark.parametrize("arg,message", BAD, ids=[a for a, _ in BAD])
def test_bad_values_are_one_line_and_exit_2_before_anything_is_written(tmp_path, arg, message):
    out = tmp_path / "run"
    line = one_error_line(run_ablate("+method=byol", *TINY, arg, f"hydra.run.dir={out}", cwd=tmp_path))
    assert message in line
    assert not out.exists()


def _npz(path, **change):
    from ablate.data import make_shapes

    x, y = make_shapes(40, seed=0)
    arrays = dict(x_train=x.permute(0, 2, 3, 1).numpy(), y_train=y.numpy(), x_test=x[:20].permute(0, 2, 3, 1).numpy(),
                  y_test=y[:20].numpy())
    arrays.update(change)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def _bad_inputs(tmp_path):
    """(overrides, message) for bad data and output directories, built in ``tmp_path``."""
    ok = np.load(_npz(tmp_path / "ok.npz"))
    one_class = _image_folder(tmp_path / "one", n_per_class=1)
    for split in ("train", "val"):
        for d in sorted((one_class / split).iterdir())[1:]:
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
    corrupt = _image_folder(tmp_path / "corrupt", n_per_class=2)
    bad = sorted((corrupt / "train").rglob("*.png"))[0]
    bad.write_bytes(b"")
    npz = lambda name, **c: ["data=npz", f"data.path={_npz(tmp_path / name, **c)}"]  # noqa: E731
    return [
        (npz("f64.npz", x_train=ok["x_train"].astype(np.float64)), "x_train is float64; expected uint8"),
        (npz("nchw.npz", x_train=ok["x_train"].transpose(0, 3, 1, 2).copy()), "(NCHW: store them as N, H, W, 3)"),
        (npz("keys.npz", x_test=None), "expected x_train, y_train, x_test, y_test"),
        (npz("ylen.npz", y_train=ok["y_train"][:5]), "expected 40 integer labels"),
        (npz("labels.npz", y_test=ok["y_test"] + 10), "outside [0, 10)"),
        (["data=folder", f"data.root={one_class}", "data.workers=0", f"data.cache_dir={tmp_path / 'c'}"],
         "has a single class"),
        (["data=folder", f"data.root={corrupt}", "data.workers=0", f"data.cache_dir={tmp_path / 'c'}"],
         f"cannot read image {bad}"),
        (["hydra.run.dir=/proc/ablate-run"], "cannot write to /proc/ablate-run"),
    ]


def test_bad_data_and_output_directories_are_one_line_and_exit_2(tmp_path):
    tiny = [o for o in TINY if not o.startswith("data.")]
    for overrides, message in _bad_inputs(tmp_path):
        out = tmp_path / "run"
        run_dir = [] if any(o.startswith("hydra.run.dir") for o in overrides) else [f"hydra.run.dir={out}"]
        r = run_ablate("+method=byol", *tiny, "data.image_size=32", *overrides, *run_dir, cwd=tmp_path)
        assert message in one_error_line(r), (overrides, r.stderr)
        assert not (out / "metrics.jsonl").exists()


def test_skip_bad_leaves_unreadable_images_out_with_a_counted_warning(tmp_path, caplog):
    from ablate.data import load_data

    root = _image_folder(tmp_path / "tree", n_per_class=2)
    for f in sorted((root / "train").rglob("*.png"))[:2]:
        f.write_bytes(b"not an image")
    cfg = OmegaConf.create({"name": "folder", "root": str(root), "train_dir": "train", "test_dir": "val",
                            "download": False, "image_size": 16, "num_classes": None, "workers": 0,
                            "skip_bad": True, "stream": False, "cache_dir": None, "mean": None, "std": None})
    d = load_data(cfg, OmegaConf.create({"bank_size": None, "test_size": None}))
    assert len(d.ssl_x) == 20 - 2 and "skipped 2 unreadable image file(s)" in caplog.text


def test_ctrl_c_is_one_line_that_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    proc = popen("+method=simsiam", *TINY, "train.epochs=200", f"hydra.run.dir={out}", cwd=tmp_path)
    wait_for_claim(out, proc)
    # interrupt the training loop, not the imports (a library's bare except may eat it)
    wait_for((out / "metrics.jsonl").stat, proc, "started training")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == ("ablate: error: interrupted; run the same command again to resume "
                                            "from the last checkpoint"), err
    assert "Traceback" not in err


def test_long_sweep_cell_names_are_shortened_and_short_ones_kept():
    assert short_dirname("+reg=var,+row=byol,seed=0") == "+reg=var,+row=byol,seed=0"
    assert short_dirname("x" * 255) == "x" * 255  # every name that worked before is kept
    long = ",".join(f"aug.key{i}=0.{i}" for i in range(40))
    short = short_dirname(long)
    assert short == short_dirname(long) and len(short.encode()) <= 200 and short.startswith("aug.key0=0.0,")
    assert short_dirname(long + "1") != short


def test_reg_is_applied_after_the_row_in_any_order():
    assert order_groups(["-m", "+reg=none", "+row=byol", "seed=0"]) == ["-m", "+row=byol", "+reg=none", "seed=0"]
    assert order_groups(["+row=byol", "+reg=none"]) == ["+row=byol", "+reg=none"]
    assert sweep_args(["-m", "+experiment=vicreg_table4", "+reg=none"])[-1] == "+reg=choice(none)"
    assert sweep_args(["-m", "+reg=none,var"])[-1] == "+reg=none,var"


# 40 overrides, each a setting at its default value (plus the tiny sizes and device=cpu)
MANY = [*TINY, "eval.knn_t=0.1", "eval.batch_size=1024", "eval.linear.batch_size=256", "eval.linear.lr=0.1",
        "eval.linear.weight_decay=0.0", "aug.flip_p=0.5", "aug.jitter_p=0.8", "aug.brightness=0.4",
        "aug.contrast=0.4", "aug.hue=0.1", "aug.gray_p=0.2", "optim.momentum=0.9", "optim.eta=0.02",
        "optim.final_lr_frac=0.002", "optim.exclude_bias_norm=true", "optim.predictor_fixed_lr=false",
        "train.log_every=10", "train.compile=false", "train.precision=auto", "train.deterministic=true",
        "verdict.collapse_std_ratio=0.1", "verdict.collapse_scale_ratio=0.1", "verdict.dim_collapse_rank_frac=0.01",
        "data.data_seed=0", "data.image_size=32", "aug.saturation=0.2", "train.channels_last=auto", "eval.every=1",
        "eval.knn_k=200", "seed=0", "reg_geometry=auto"]


def test_a_40_override_sweep_runs_and_a_failed_cell_fails_the_sweep_after_the_others(tmp_path):
    assert len(MANY) >= 40
    sweep = tmp_path / "m"
    r = run_ablate("-m", "+method=simsiam", *MANY[:-1], "train.batch_size=1000,16", f"hydra.sweep.dir={sweep}",
                   cwd=tmp_path, timeout=600)
    assert r.returncode == 1, r.stderr
    failed = [x for x in r.stderr.splitlines() if x.startswith("ablate: cell ")]
    assert len(failed) == 1 and "train.batch_size=1000" in failed[0] and "smaller than train.batch_size" in failed[0]
    assert r.stderr.strip().splitlines()[-1].startswith("ablate: error: 1 of 2 sweep cells failed")
    cells = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(cells) == 2 and all(len(c.name.encode()) <= 255 for c in cells)
    summaries = [json.loads((c / "summary.json").read_text()) for c in cells]
    assert sorted(s["status"] for s in summaries) == ["complete", "failed"]
    assert all(len(s.get("overrides", [])) >= 40 or s["status"] == "failed" for s in summaries)
    assert all(len((c / ".hydra" / "overrides.yaml").read_text().splitlines()) >= 40 for c in cells)


def test_a_table4_subset_given_as_reg_alone_runs(tmp_path):
    r = run_ablate("-m", "+experiment=vicreg_table4", "+reg=none", "+row=byol", *TINY,
                   f"hydra.sweep.dir={tmp_path / 'm'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summaries = [p for p in (tmp_path / "m").glob("*/summary.json") if not p.parent.name.startswith("baseline=")]
    assert len(summaries) == 1 and json.loads(summaries[0].read_text())["method"] == "byol"
    assert sorted(p.parent.name for p in (tmp_path / "m").glob("baseline=*/summary.json")) == [
        "baseline=random,seed=0", "baseline=supervised,seed=0"]  # the sweep's baselines, once


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

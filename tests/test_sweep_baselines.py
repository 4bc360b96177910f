"""The two baselines: ``random`` takes no step (parameters byte-equal to their initialization, the SSL runs'
initial backbone), ``supervised`` learns on a separable fixture, bad input fails in one line, and a sweep adds
each baseline once per seed."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY, make_cfg
from omegaconf import OmegaConf

from ablate.config import ConfigError, check_config
from ablate.method import Baseline, JointEmbedding
from ablate.run.checkpoint import load_checkpoint
from ablate.run.loop import train
from ablate.run.sweep_baselines import baseline_jobs, run_baselines, side_by_side


def _bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().numpy().tobytes()


def test_random_takes_no_step_and_keeps_its_initial_parameters(tmp_path):
    cfg = make_cfg("+method=random", *TINY, "seed=3")
    summary = train(cfg, tmp_path)
    assert summary["status"] == "complete" and summary["baseline"] == "random" and summary["verdict"] is None
    assert "baseline" in summary["verdict_reason"] and summary["epochs_completed"] == 0
    assert 0 <= summary["metrics"]["linear_top1"] <= 100 and "no optimizer step" in summary["protocol"]["baseline"]
    state = load_checkpoint(tmp_path)
    assert state["step"] == 0
    torch.manual_seed(3)
    fresh = Baseline(cfg, summary["num_classes"])
    trained = state["model"]
    for name, p in fresh.named_parameters():
        assert _bytes(trained[name]) == _bytes(p), name
    # BN running statistics were estimated (buffers), and the backbone is the SSL runs' initial one
    means = [k for k in trained if k.endswith("running_mean")]
    assert means and any(trained[k].abs().sum() > 0 for k in means)
    torch.manual_seed(3)
    ssl = JointEmbedding(make_cfg("+method=simsiam", *TINY, "seed=3"))
    for name, p in ssl.online.backbone.named_parameters():
        assert _bytes(trained[f"online.backbone.{name}"]) == _bytes(p), name
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in rows] == [(0, 0)]
    assert train(cfg, tmp_path)["wall_s"] == summary["wall_s"]  # finished: left as it is


def _separable_npz(path, n_train=128, n_test=64, seed=0):
    """Two classes told apart by brightness, which no crop, flip or colour jitter of the recipe undoes."""
    g = np.random.default_rng(seed)

    def split(n):
        y = g.integers(0, 2, n)
        x = np.where(y[:, None, None, None] == 1, 215, 40) + g.integers(-25, 26, (n, 16, 16, 3))
        return x.clip(0, 255).astype(np.uint8), y.astype(np.int64)

    (xtr, ytr), (xte, yte) = split(n_train), split(n_test)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


def test_supervised_learns_on_a_separable_fixture(tmp_path):
    _separable_npz(tmp_path / "sep.npz")
    tiny = [o for o in TINY if not o.startswith("data.")]
    cfg = make_cfg("+method=supervised", *tiny, "data=npz", f"data.path={tmp_path / 'sep.npz'}", "data.image_size=16",
                   "data.num_classes=2", "eval.test_size=64", "train.epochs=8", "train.batch_size=32", "optim.lr=2.0",
                   "train.log_every=1")
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "complete" and summary["baseline"] == "supervised" and summary["verdict"] is None
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0]["loss"], rows[-1]["loss"]
    # cross-entropy of two balanced classes starts near ln 2; labels that do not match their images stay there
    assert abs(first - math.log(2)) < 0.35 and last < 0.15, (first, last)
    assert summary["metrics"]["linear_top1"] > 95 and "cross-entropy" in summary["protocol"]["baseline"]


@pytest.mark.parametrize("overrides, message", [
    (["+method=supervised", "data=folder", "data.stream=true"], "use data.stream=false"),
    (["+method=supervised", "data=stl10"], "use data.ssl_split=train"),
    (["+method=random", "predictor=mlp"], "takes no switch; drop predictor"),
    (["+method=random", "method.baseline=linear"], "method.baseline=linear is unknown"),
])
def test_bad_baseline_input_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as e:
        check_config(make_cfg(*overrides))
    assert "\n" not in str(e.value)


def test_baseline_jobs_are_one_per_kind_and_seed(tmp_path):
    overrides = ["+row=byol,vicreg", "+reg=none,var", "seed=0", "+experiment=vicreg_table4", "seed=0,1",
                 "~predictor", "var.weight=2", "optim.lr=0.5,1.0", "train.epochs=3"]
    jobs = baseline_jobs(tmp_path, overrides, "table_cpu", 0)
    got = sorted((d.name, tuple(sorted(o))) for d, o in jobs)
    want = sorted((f"baseline={k},seed={s}", tuple(sorted([f"+method={k}", "train.epochs=3", "scale=table_cpu",
                                                           f"seed={s}"])))
                  for k in ("random", "supervised") for s in (0, 1))
    assert got == want
    # an unswept seed comes from the config; another non-switch sweep dimension gets its own baselines
    jobs = baseline_jobs(tmp_path, ["+method=simsiam", "train.epochs=2,4", "scale=cpu"], None, 7)
    assert sorted(d.name for d, _ in jobs) == sorted(f"baseline={k},seed=7,train.epochs={e}"
                                                     for k in ("random", "supervised") for e in (2, 4))


def test_a_sweep_adds_each_baseline_once_per_seed(tmp_path):
    sweep = tmp_path / "m"
    args = [sys.executable, "-m", "ablate", "-m", "+experiment=vicreg_table4", "+row=simsiam_no_pred_no_bn",
            "+reg=none", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    base = {name: s for name, s in summaries.items() if s["baseline"]}
    assert sorted(base) == ["baseline=random,seed=0", "baseline=random,seed=1", "baseline=supervised,seed=0",
                            "baseline=supervised,seed=1"]
    for name, s in base.items():
        assert s["status"] == "complete" and name == f"baseline={s['baseline']},seed={s['seed']}"
        assert (s["data"], s["epochs"], s["choices"]["scale"]) == ("shapes", 1, "table_cpu")
        assert "train.batch_size=16" in s["overrides"]  # the sweep's non-switch overrides
    assert sorted(s["seed"] for s in summaries.values() if not s["baseline"]) == [0, 1]
    # finished baselines are skipped: nothing is started again
    jobs = baseline_jobs(sweep, ["+row=simsiam_no_pred_no_bn", "seed=0,1", *TINY], "table_cpu", 0)
    assert run_baselines(jobs, run=lambda *a, **k: pytest.fail("a finished baseline was started again")) == []


def test_baselines_run_side_by_side_under_the_parallel_launcher(tmp_path):
    started, env_seen = [], []

    def fake(cmd, env=None):
        started.append(cmd)
        env_seen.append(env)
        return subprocess.CompletedProcess(cmd, 0)

    jobs = baseline_jobs(tmp_path, ["+row=simsiam", "seed=0,1"], "table_cpu", 0)
    assert run_baselines(jobs, run=fake, parallel=2) == [d for d, _ in jobs]  # in order, whatever finished first
    assert len(started) == 4
    joblib = pytest.importorskip("joblib")
    assert {e["OMP_NUM_THREADS"] for e in env_seen} == {str(max(joblib.cpu_count() // 2, 1))}  # as the cells
    run_baselines(jobs, run=fake, parallel=1)
    assert env_seen[-1] is None  # one at a time: torch's own thread count
    assert side_by_side(OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})) == 1
    assert side_by_side(OmegaConf.create({"_target_": "x.JoblibLauncher", "n_jobs": 3})) == 3

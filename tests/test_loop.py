"""The training loop (ablate.run.loop): a run killed mid-epoch resumes to the same metrics, early stop on collapse,
the final probe reads the last evaluation, and CPU runs are deterministic for a seed."""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import TINY, rows

from ablate.config import ConfigError

ARGS = ["+method=byol", *TINY, "train.epochs=3", "train.warmup_epochs=1"]
STEPS_PER_EPOCH = 64 // 16  # TINY's data.train_size / train.batch_size

# SIGKILL from inside the training step, so the kill lands at a known step of epoch 2 (a timer would race)
KILLER = """
import os, signal, sys
from ablate.run import loop as T
call = T.Stepper.__call__
def killing_call(self, *args):
    if self.step == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return call(self, *args)
T.Stepper.__call__ = killing_call
sys.argv = ["ablate", *sys.argv[1:]]
from ablate.run.cli import main
main()
"""


def ablate(*args, cwd, kill_at=None):
    # one thread: on a shared, loaded CPU two spinning OpenMP threads make tiny steps 100x slower
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if kill_at is None:
        cmd = [sys.executable, "-m", "ablate", *args]
    else:
        cmd, env["KILL_AT_STEP"] = [sys.executable, "-c", KILLER, *args], str(kill_at)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, cfg_factory, refused):
    from ablate.run.loop import train

    ref, run = tmp_path / "ref", tmp_path / "run"
    train(cfg_factory(*ARGS), ref)  # uninterrupted, in this process on one thread as the runs below
    r = ablate(*ARGS, f"hydra.run.dir={run}", cwd=tmp_path, kill_at=STEPS_PER_EPOCH + 2)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not (run / "summary.json").exists() and len(rows(run)) == 1  # killed inside epoch 2
    # another configuration into the same directory is refused, in one line, before any training
    r = refused(*ARGS, "var=hinge", f"hydra.run.dir={run}")
    line = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and line.startswith("ablate: error: ")
    assert "holds an unfinished run of another config (var: None -> " in line  # checked before Hydra writes
    r = ablate(*ARGS, f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming from the epoch 1 checkpoint" in r.stdout + r.stderr
    assert rows(run) == rows(ref)  # exact: same RNG draws, same kernels
    got, want = (json.loads((d / "summary.json").read_text()) for d in (run, ref))
    assert got["metrics"] == want["metrics"] and got["spectrum_z"] == want["spectrum_z"]
    assert got["verdict"] == want["verdict"] and got["epochs_completed"] == 3


def test_early_stop_on_collapse(cfg_factory, tmp_path):
    from ablate.run.loop import train

    # thresholds that call every evaluation a collapse, then none: the stopping rule alone is under test
    always = ["verdict.collapse_std_ratio=100", "train.epochs=4"]
    s = train(cfg_factory("+method=simsiam", *TINY, *always, "train.early_stop_collapse=2"), tmp_path / "stop")
    assert s["stopped_early_epoch"] == 2 and s["epochs_completed"] == 2 and s["status"] == "complete"
    assert s["verdict"] == "collapse" and [r["epoch"] for r in rows(tmp_path / "stop")] == [1, 2]
    never = ["verdict.collapse_std_ratio=0", "verdict.collapse_rank=0", "train.epochs=3"]
    s = train(cfg_factory("+method=simsiam", *TINY, *never, "train.early_stop_collapse=1"), tmp_path / "go")
    assert s["stopped_early_epoch"] is None and s["epochs_completed"] == 3
    s = train(cfg_factory("+method=simsiam", *TINY, *always), tmp_path / "off")  # null: off
    assert s["stopped_early_epoch"] is None and s["epochs_completed"] == 4
    with pytest.raises(ConfigError, match="train.early_stop_collapse=0 must be an integer >= 1"):
        train(cfg_factory("+method=simsiam", *TINY, "train.early_stop_collapse=0"), tmp_path / "bad")


def test_deterministic_runs_skip_the_nan_fill_of_new_tensors_with_the_same_numbers(tmp_path, cfg_factory,
                                                                                    monkeypatch):
    """Under the fill, an op reading memory it never wrote would read NaN; without it, garbage: a run equals one
    with the fill on only if no op does."""
    import torch
    import torch.utils.deterministic

    from ablate.run import hardware as precision
    from ablate.run import loop as T

    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)  # restored afterwards

    def with_fill():
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = True

    runs = []
    for name, kernels in (("fill", with_fill), ("default", precision.deterministic_kernels)):
        monkeypatch.setattr(T, "deterministic_kernels", kernels)
        runs.append(T.train(cfg_factory("+method=byol", "var=hinge", *TINY, "train.epochs=2"), tmp_path / name))
        assert torch.utils.deterministic.fill_uninitialized_memory is (name == "fill")
    assert torch.are_deterministic_algorithms_enabled()
    assert runs[0]["metrics"] == runs[1]["metrics"] and runs[0]["spectrum_z"] == runs[1]["spectrum_z"]
    assert rows(tmp_path / "fill") == rows(tmp_path / "default")


def test_the_final_probe_reads_the_last_evaluation_and_a_resume_evaluates_again(tmp_path, cfg_factory,
                                                                                 monkeypatch):
    from ablate.run import loop as T

    calls, evaluate = [], T.evaluate
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: calls.append(1) or evaluate(*a, **k))
    cfg = cfg_factory("+method=simsiam", *TINY, "train.epochs=2")
    first = T.train(cfg, tmp_path)
    assert len(calls) == 3  # the initialization's, then one an epoch; the final probe reads the second epoch's
    (tmp_path / "summary.json").unlink()  # every epoch checkpointed, no summary: the resume only summarizes
    again = T.train(cfg, tmp_path)
    assert len(calls) == 4  # its features come from a fresh evaluation of the restored model
    assert again["metrics_init"] == first["metrics_init"]  # kept in the checkpoint, not evaluated again
    assert again["metrics"] == first["metrics"] and again["spectrum_z"] == first["spectrum_z"]


def test_cpu_runs_are_deterministic_for_a_seed(tmp_path, cfg_factory):
    from ablate.run.loop import train

    runs = []
    for i in range(2):
        cfg = cfg_factory("+method=byol", "var=hinge", *TINY, "train.epochs=2")
        runs.append(train(cfg, tmp_path / str(i)))
    a, b = (r["metrics"] for r in runs)
    assert a == b
    assert rows(tmp_path / "0") == rows(tmp_path / "1")

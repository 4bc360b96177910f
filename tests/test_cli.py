"""End to end through `python -m ablate`: a short run writes a valid summary; bad input fails in one line
before any training."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, rows

REQUIRED_METRICS = ("knn_top1", "linear_top1", "z_std", "z_std_ref", "rank_z", "rank_h")


def run_ablate(*args, cwd, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_short_run_writes_valid_summary(tmp_path):
    out = tmp_path / "run"
    # from an unrelated working directory: the configs come from the installed package
    r = run_ablate("+method=simsiam", "~predictor", *TINY, "train.epochs=2", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "complete" and s["method"] == "simsiam"
    assert s["techniques"] == dict(ema=False, stop_grad=True, predictor=False, batchnorm=True, var=False,
                                   cov=False)
    for k in REQUIRED_METRICS:
        assert isinstance(s["metrics"][k], float)
    assert s["verdict"] == "ok", s["verdict_reason"]  # deterministic on CPU: z_std/z_std_ref 0.41, rank_z 5 of 20
    assert s["epochs"] == 2 and s["wall_s"] > 0
    assert s["compile"] is False and s["compile_aug"] is False  # the step and the colour ops ran eager
    assert set(s["protocol"]) >= {"knn_top1", "linear_top1"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for k in ("loss", "loss_inv", "loss_var", "loss_cov", "z_std", "z_std_ref", "rank_z", "rank_h", "knn_top1",
              "lr", "tau"):
        assert k in rows[0]
    assert (out / "config.yaml").exists()
    # running into the same directory keeps the finished run
    before = (out / "summary.json").read_text()
    r = run_ablate("+method=simsiam", "~predictor", *TINY, "train.epochs=2", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0 and (out / "summary.json").read_text() == before
    assert "already holds a finished run" in r.stderr + r.stdout


def test_ema_run_logs_tau_and_equivalence_note(tmp_path):
    out = tmp_path / "run"
    r = run_ablate("+method=byol", "~stop_grad", *TINY, f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.99 <= row["tau"] <= 1.0
    assert (r.stdout + r.stderr).count("the same computation") == 1
    assert json.loads((out / "summary.json").read_text())["equivalences"]


def test_nan_loss_stops_with_diverged_summary(tmp_path):
    out = tmp_path / "run"
    r = run_ablate("+method=vicreg", *TINY, "train.epochs=3", "train.log_every=1", "optim.name=sgd",
                   "optim.lr=1e30", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 1
    s = json.loads((out / "summary.json").read_text())
    assert s["verdict"] == "diverged" and s["status"] == "diverged"
    assert "diverged" in r.stderr.strip().splitlines()[-1]


BAD = [
    (["~predictor"], "no method chosen; add +method=NAME with NAME one of: barlowtwins, byol, random, simclr, "
                     "simsiam, supervised, vicreg"),
    (["+method=simsiam", "predictor=transformer"], "unknown option 'transformer' for predictor; choose one of: mlp, none"),
    (["+method=simcrl"], "unknown option 'simcrl' for method; choose one of: barlowtwins, byol, random, simclr, "
                         "simsiam, supervised, vicreg"),
    (["+method=vicreg", "var.weight=-1"], "var.weight=-1 must be finite and >= 0"),
    (["+method=vicreg", "cov.weight=nan"], "cov.weight=nan must be finite and >= 0"),
    (["+method=byol", "method.inv_weight=inf"], "method.inv_weight=inf must be finite and >= 0"),
    (["+method=vicreg", "train.batch_size=1"], "too small for the var/cov terms"),
    (["+method=byol", "data=cifar10", "data.root=/nonexistent/cifar"], "data.root=PATH"),
    (["+method=byol", "backbone=vit"], "unknown option 'vit' for backbone"),
    (["+method=byol", "backbone.name=vgg11"], "unknown backbone 'vgg11'; choose backbone= one of"),
    (["+method=byol", "verdict.collapse_rank=line"], "verdict.collapse_rank='line' is not a number"),
    (["+method=vicreg", "verdict.collapse_scale_ratio=-0.5"], "verdict.collapse_scale_ratio=-0.5 must be finite"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_one_line_before_training(tmp_path, args, message):
    out = tmp_path / "run"
    r = run_ablate(*args, f"hydra.run.dir={out}", cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ablate: error: ") and message in lines[0], r.stderr
    assert not (out / "metrics.jsonl").exists()


def test_help_describes_the_tool_with_examples_and_writes_nothing(tmp_path):
    from ablate.run.cli import check_overrides

    r = run_ablate("--help", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert text.startswith("ablate: ") and "collapse" in text and "powered by Hydra" not in text
    for switch in ("ema", "stop_grad", "predictor", "batchnorm", "var", "cov", "reg_geometry"):
        assert re.search(rf"^ +{switch} ", text, re.M), switch  # described in the switch list
        assert re.search(rf"^{switch}: ", text, re.M), switch  # and its options, from the config tree
    assert re.search(r"^reg_geometry: auto, raw, sphere$", text, re.M)
    examples = [line.split("   ")[0].split()[3:] for line in text.splitlines() if line.startswith("  python -m ablate +")]
    assert ["+method=simsiam", "~predictor"] in examples and len(examples) >= 4
    for args in examples:
        check_overrides(args)  # every example is a valid command line
    assert list(tmp_path.iterdir()) == []  # no run directory, no outputs/
    r = run_ablate("--hydra-help", cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "--hydra-help" in r.stdout and "Hydra (" in r.stdout, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_sweep_over_a_switch_with_none(tmp_path):
    r = run_ablate("-m", "+method=simsiam", "predictor=mlp,none", *TINY, f"hydra.sweep.dir={tmp_path / 'm'}",
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summaries = sorted(Path(tmp_path / "m").glob("*/summary.json"))
    assert [json.loads(p.read_text())["techniques"]["predictor"] for p in summaries] == [True, False]


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

"""A sweep's baselines (ablate.run.sweep_baselines): one random and one supervised run per seed, skipped once
finished, side by side under the parallel launcher."""

import json
import subprocess

import pytest
from conftest import TINY
from omegaconf import OmegaConf

from ablate.run.sweep_baselines import baseline_jobs, run_baselines, side_by_side


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


@pytest.mark.xdist_group("table4_sweep")  # one worker trains the shared sweep once
def test_a_sweep_adds_each_baseline_once_per_seed(table4_sweep):
    sweep, done = table4_sweep  # seeds 0 and 1, two cells each
    assert "exited with status" not in done.stdout + done.stderr, done.stderr[-2000:]  # every baseline ran to its end
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    base = {name: s for name, s in summaries.items() if s["baseline"]}
    assert sorted(base) == ["baseline=random,seed=0", "baseline=random,seed=1", "baseline=supervised,seed=0",
                            "baseline=supervised,seed=1"]
    for name, s in base.items():
        assert s["status"] == "complete" and name == f"baseline={s['baseline']},seed={s['seed']}"
        assert (s["data"], s["epochs"], s["choices"]["scale"]) == ("shapes", 1, "table_cpu")
        assert "train.batch_size=16" in s["overrides"]  # the sweep's non-switch overrides
    assert sorted(s["seed"] for s in summaries.values() if not s["baseline"] and s["status"] == "complete") == [0, 1]
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

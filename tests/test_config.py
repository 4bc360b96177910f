"""The sweep definitions expand to exactly Table 4's 24 cells and the 64 switch combinations; a real sweep
skips finished cells when re-run and goes on past a crashing cell."""

import itertools
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import TINY
from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from ablate.config import TECHNIQUES, conf_dir, techniques
from ablate.report import reference

# VICReg Table 4, typed from the paper: method, ME, SG, PR, BN
PAPER_ROWS = [("byol", 1, 1, 1, 1), ("simsiam", 0, 1, 1, 1), ("simsiam", 0, 1, 1, 0), ("simsiam", 0, 1, 0, 0),
              ("vicreg", 0, 0, 1, 0), ("vicreg", 0, 0, 1, 1), ("vicreg", 0, 0, 0, 1), ("vicreg", 0, 0, 0, 0)]
PAPER_REGS = [(0, 0), (1, 0), (1, 1)]  # No Reg, Var Reg, Var/Cov Reg


def expand(experiment: str, *args: str) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches for ``-m +experiment=EXPERIMENT ARGS``."""
    params = yaml.safe_load((conf_dir() / "experiment" / f"{experiment}.yaml").read_text())["hydra"]["sweeper"]
    overrides = [f"{k}={v}" for k, v in params["params"].items()] + list(args)
    (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
    return jobs


def compose_all(experiment: str, jobs: list[list[str]]):
    with initialize_config_module("ablate.conf", version_base="1.3"):
        return [compose("config", overrides=[f"+experiment={experiment}", *job]) for job in jobs]


def test_table4_sweep_is_the_papers_24_cells():
    jobs = expand("vicreg_table4")
    cfgs = compose_all("vicreg_table4", jobs)
    got = [(c.method.name, *(int(v) for v in techniques(c).values())) for c in cfgs]
    expected = [(m, me, sg, pr, bn, var, cov) for (m, me, sg, pr, bn), (var, cov) in
                itertools.product(PAPER_ROWS, PAPER_REGS)]
    assert len(jobs) == 24 and sorted(got) == sorted(expected)
    assert {c.train.epochs for c in cfgs} == {15} and {c.data.name for c in cfgs} == {"shapes"}
    # the reference file shipped for the report holds the same rows
    ref = reference()
    assert [(r.method, *(int(r[t]) for t in TECHNIQUES[:4])) for _, r in ref.iterrows()] == PAPER_ROWS


def test_factorial_sweep_is_all_64_combinations():
    jobs = expand("factorial")
    cfgs = compose_all("factorial", jobs)
    combos = [tuple(techniques(c)[t] for t in TECHNIQUES) for c in cfgs]
    assert len(jobs) == 64 and set(combos) == set(itertools.product([True, False], repeat=6))
    assert {c.method.name for c in cfgs} == {"simsiam"}


def test_seeds_are_a_sweep_dimension():
    jobs = expand("vicreg_table4", "seed=0,1,2")
    assert len(jobs) == 72
    assert sorted({j for job in jobs for j in job if j.startswith("seed=")}) == ["seed=0", "seed=1", "seed=2"]


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_module("ablate.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=vicreg_table4", "hydra/launcher=slurm"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 1 and launcher.array_parallelism >= 24


def test_the_parallel_launcher_runs_cells_on_a_share_of_the_cores_each_as_a_single_run_would(tmp_path):
    joblib = pytest.importorskip("joblib")
    sweep, threads = tmp_path / "m", max(joblib.cpu_count() // 2, 1)
    cell = ["+experiment=vicreg_table4", "+row=simsiam_no_pred_no_bn", "+reg=none", *TINY]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "-m", "ablate", "-m", *cell, "optim.name=bogus,sgd", "hydra/launcher=parallel",
                        "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    # a failing cell in a worker process still fails the sweep, with the count
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("ablate: error: 1 of 2 sweep cells failed")
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert len(summaries) == 4  # two cells, two baselines
    good = next(s for name, s in summaries.items() if "optim.name=sgd" in name)
    assert all(s["host"]["torch_threads"] == threads for s in summaries.values() if s["status"] == "complete")
    assert sorted(s["baseline"] for s in summaries.values() if s["baseline"]) == ["random", "supervised"]
    # the cell equals a single run on the same number of threads, to the bit
    single = tmp_path / "single"
    r = subprocess.run([sys.executable, "-m", "ablate", *cell, "optim.name=sgd", f"hydra.run.dir={single}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**env, "OMP_NUM_THREADS": str(threads)})
    assert r.returncode == 0, r.stderr[-2000:]
    alone = json.loads((single / "summary.json").read_text())
    assert alone["host"]["torch_threads"] == threads and alone["metrics"] == good["metrics"]


def test_the_parallel_launcher_is_refused_for_cells_on_a_gpu(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ablate", "-m", "+experiment=vicreg_table4", "hydra/launcher=parallel",
                        "device=cuda", f"hydra.sweep.dir={tmp_path / 'm'}"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "ablate: error: hydra/launcher=parallel runs one cell per CPU core, but the cells would train on the GPU; "
        "drop hydra/launcher=parallel, or add device=cpu"]
    assert not (tmp_path / "m").exists()


def test_rerun_skips_finished_cells_and_a_crash_does_not_stop_the_sweep(tmp_path):
    sweep = tmp_path / "m"
    # two cells of one row; an unknown optimizer makes the first one fail
    args = [sys.executable, "-m", "ablate", "-m", "+experiment=vicreg_table4", "+row=simsiam_no_pred_no_bn",
            "+reg=none", "optim.name=bogus,sgd", *TINY, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 1, first.stderr[-2000:]  # after every cell ran, with a count
    assert "ablate: error: 1 of 2 sweep cells failed" in first.stderr
    summaries = {p.parent.name: p for p in sweep.glob("*/summary.json") if not p.parent.name.startswith("baseline=")}
    assert len(summaries) == 2
    bad = next(p for name, p in summaries.items() if "optim.name=bogus" in name)
    good = next(p for name, p in summaries.items() if "optim.name=sgd" in name)
    failed = json.loads(bad.read_text())
    assert failed["status"] == "failed" and "bogus" in failed["error"] and failed["method"] == "simsiam"
    assert json.loads(good.read_text())["status"] == "complete"

    hydra_files = sorted((good.parent / ".hydra").iterdir())
    assert [p.name for p in hydra_files] == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert yaml.safe_load(hydra_files[1].read_text())["hydra"]["runtime"]["choices"]["row"] == "simsiam_no_pred_no_bn"
    assert "optim.name=sgd" in yaml.safe_load(hydra_files[2].read_text())

    def state():
        return [(p.read_bytes(), p.stat().st_mtime_ns) for p in (good, good.parent / "metrics.jsonl", *hydra_files)]

    before = state()
    second = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert second.returncode == 1, second.stderr[-2000:]  # the bogus cell fails again
    assert "already holds a finished run" in second.stdout + second.stderr
    assert state() == before  # the skipped cell, its Hydra files included, is left untouched
    assert json.loads(bad.read_text())["status"] == "failed"  # a failed cell is tried again, not skipped

    report = subprocess.run([sys.executable, "-m", "ablate.report", str(sweep), "--out", str(tmp_path / "r")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert report.returncode == 0, report.stderr[-2000:]
    md = (tmp_path / "r" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| SimSiam |  | ✓ |  |  |"))
    assert "1 failed" in row.split("|")[6]

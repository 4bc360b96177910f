"""hydra/launcher=parallel: K sweep cells at once on one machine (CPU or GPU), each on cores / K threads."""

import json
import os
import subprocess
import sys
from datetime import datetime

import pytest
from conftest import TINY

from ablate.resolvers import GIB_PER_CELL, cells_at_once


def test_cells_at_once_is_one_per_core_on_a_cpu(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert cells_at_once("cpu") == 16


def test_cells_at_once_on_a_gpu_is_bounded_by_its_memory_and_cores(monkeypatch):
    import torch

    class Props:
        total_memory = 80 * 2**30

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props)
    assert cells_at_once("cuda") == min(8, 80 // GIB_PER_CELL) == 8  # 16 cores: two a cell
    Props.total_memory = 20 * 2**30
    assert cells_at_once("auto") == 20 // GIB_PER_CELL == 3
    Props.total_memory = 2 * 2**30
    assert cells_at_once("cuda:0") == 1
    assert cells_at_once("cpu") == 16  # device=cpu on a GPU machine: the cores decide


def _span(log):
    """(first, last) timestamp of a cell's log (Hydra's job log: '[YYYY-mm-dd HH:MM:SS,mmm][ablate]...')."""
    stamps = [datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f") for line in log.read_text().splitlines()
              if line.startswith("[20")]
    return stamps[0], stamps[-1]


def test_four_cells_two_at_a_time_overlap_and_all_finish(tmp_path):
    """A 4-cell sweep with K=2: two cells train at the same time (their logs' spans overlap), each on
    cores / 2 threads, and every summary is complete."""
    joblib = pytest.importorskip("joblib")
    sweep = tmp_path / "m"
    r = subprocess.run([sys.executable, "-m", "ablate", "-m", "+method=simsiam", *TINY, "device=cpu", "seed=0,1,2,3",
                        "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    cells = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert len(cells) == 4
    summaries = [json.loads((c / "summary.json").read_text()) for c in cells]
    assert all(s["status"] == "complete" and s["metrics"]["linear_top1"] is not None for s in summaries)
    assert sorted(s["seed"] for s in summaries) == [0, 1, 2, 3]
    assert {s["host"]["torch_threads"] for s in summaries} == {max(1, joblib.cpu_count() // 2)}
    spans = [_span(next(c.glob("*.log"))) for c in cells]
    overlaps = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if a[0] < b[1] and b[0] < a[1]]
    assert overlaps, spans

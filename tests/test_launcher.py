"""hydra/launcher=parallel: K sweep cells at once on one machine (CPU or GPU), each on cores / K threads (the
shared Table 4 sweep of test_cli runs two at a time: overlap, threads, completion are checked there)."""

import os
from datetime import datetime

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



"""Stage timers of a training step, read by ``python -m ablate.bench profile``: a no-op unless it records.

A stage opened inside another is charged to the outer one (the EMA target's backbone counts as ``target``).
"""

import threading
import time
from contextlib import contextmanager, nullcontext

import torch

STAGES = ("aug", "backbone", "heads", "target", "loss", "backward", "optimizer", "ema")
_record: dict | None = None
_open: list[str] = []
_cuda = False


def _now() -> float:
    if _cuda:
        torch.cuda.synchronize()
    return time.perf_counter()


class _Timed:
    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        _open.append(self.name)
        self.start = _now()

    def __exit__(self, *exc):
        _record[self.name] = _record.get(self.name, 0.0) + _now() - self.start
        _open.pop()


_OFF = nullcontext()


def stage(name: str):
    """Time the block as stage ``name`` while a profile records; otherwise a shared null context."""
    if _record is None or _open or threading.current_thread() is not threading.main_thread():
        return _OFF  # a view worker's stages (ablate.viewpar) overlap the main thread's: not timed
    return _Timed(name)


@contextmanager
def recording(device: torch.device):
    """Seconds per stage, summed over the steps taken inside the block (synchronizing a GPU at each stage)."""
    global _record, _cuda
    _record, _cuda = {}, device.type == "cuda"
    try:
        yield _record
    finally:
        _record, _cuda = None, False

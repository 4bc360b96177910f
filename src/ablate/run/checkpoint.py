"""Per-epoch checkpoints that survive a kill, a torn write and a full disk.

``checkpoint.pt`` is a regular ``torch.save`` file followed by a trailer with the SHA-256 of the payload
(``torch.load`` ignores bytes after the zip archive, so the file stays loadable by hand). The zip format
notices a truncated file but not a flipped byte inside it; the digest notices both. A new checkpoint is
written to a temporary file and moved into place, and the one it replaces is kept as ``checkpoint.prev.pt``,
so a kill at any moment leaves at least one complete checkpoint behind.
"""

import errno
import io
import logging
import os
import threading
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..files import atomic_write, seal, unseal

log = logging.getLogger("ablate")
CURRENT, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"



def save_checkpoint(run_dir: Path, state: dict, keep: str = "last") -> bool:
    """Write ``state`` as the run's checkpoint (``keep=all``: also as ``checkpoint.epochN.pt``); on an OSError
    (a full disk, say) log why, keep the previous checkpoint and return False: losing one checkpoint must not
    kill the run."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = seal(buf.getvalue())
    path, prev = run_dir / CURRENT, run_dir / PREVIOUS
    try:
        atomic_write(path, lambda tmp: _write_synced(tmp, data), previous=prev)
    except OSError as e:
        kept = path if path.exists() else prev if prev.exists() else None
        why = "the disk is full" if e.errno == errno.ENOSPC else str(e)
        log.warning("could not write the epoch %s checkpoint (%s); %s; training continues", state.get("epoch"),
                    why, f"the previous checkpoint {kept} is kept" if kept else "no earlier checkpoint exists")
        return False
    if keep == "all":  # a resumed run trains an epoch again: its new checkpoint replaces the old copy
        epoch_copy = run_dir / f"checkpoint.epoch{state['epoch']}.pt"
        epoch_copy.unlink(missing_ok=True)
        os.link(path, epoch_copy)
    return True


class CheckpointWriter:
    """``save_checkpoint`` on the training thread, or with ``background`` on a thread of its own, so that a GPU
    run does not wait on serializing, sealing and syncing a large file: the state is first copied to the CPU
    (training then changes the model freely), one write runs at a time (``save`` waits for the previous one),
    and ``join`` waits for the last one and raises what a write raised (a full disk only logs, as before)."""

    def __init__(self, background: bool = False):
        self.background, self.thread, self.error = background, None, None
        self.saved = True  # the newest write's outcome (save_checkpoint's: False on a full disk)

    def save(self, run_dir: Path, state: dict, keep: str = "last") -> None:
        self.join()
        if not self.background:
            self.saved = save_checkpoint(run_dir, state, keep)
            return
        state = _to_cpu(state)
        self.thread = threading.Thread(target=self._write, args=(run_dir, state, keep), name="checkpoint")
        self.thread.start()

    def _write(self, run_dir: Path, state: dict, keep: str) -> None:
        try:
            self.saved = save_checkpoint(run_dir, state, keep)
        except BaseException as e:  # noqa: BLE001 - handed to the training thread by join
            self.error = e

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise CheckpointError(f"writing a checkpoint in the background failed: {error}") from error


def _to_cpu(obj):
    """A copy of ``obj`` with every tensor cloned onto the CPU (dicts, lists and tuples walked)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def finish_checkpoints(run_dir: Path, keep: str) -> None:
    """Disk a finished run no longer needs: ``last`` drops the previous checkpoint (the last one stays for
    ``ablate.tools.geometry`` and ``ablate.tools.export``), ``none`` drops both, ``all`` keeps every epoch's."""
    drop = {"last": (PREVIOUS,), "none": (PREVIOUS, CURRENT), "all": ()}[keep]
    for name in drop:
        (run_dir / name).unlink(missing_ok=True)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_checkpoint(path: Path) -> dict:
    """Load one checkpoint file, verifying its digest; raises ValueError saying what is wrong."""
    payload = unseal(path.read_bytes())
    state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "epoch" not in state:
        raise ValueError("not an ablate checkpoint")
    return state


def load_checkpoint(run_dir: Path) -> dict | None:
    """The newest readable checkpoint in ``run_dir``: None when there is none, the previous one (with a
    warning) when the newest is damaged, a CheckpointError when every one present is damaged."""
    problems = []
    for name in (CURRENT, PREVIOUS):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            state = read_checkpoint(path)
        except Exception as e:  # torch.load raises several types on garbage
            problems.append(f"{path}: {e}")
            log.warning("checkpoint %s is unusable (%s)%s", path, e,
                        "; trying the previous one" if name == CURRENT else "")
            continue
        if problems:
            log.warning("resuming from the previous checkpoint %s (epoch %d)", path, state["epoch"])
        return state
    if problems:
        raise CheckpointError(f"no usable checkpoint in {run_dir} ({'; '.join(problems)}); delete "
                              f"{CURRENT} and {PREVIOUS} to train from scratch, or choose another hydra.run.dir")
    return None

"""One run per directory: an exclusive lock held for the whole run, and the checks that refuse or skip a run
before anything is written into its directory."""

import errno
import fcntl
import json
import math
import os
import socket
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import AblateError, ConfigError
from .summary import finished_summary

LOCK = ".ablate.lock"
# The files a run and its tools write into a run directory: no other file may take one of these names.
RUN_FILES = ("summary.json", "metrics.jsonl", "config.yaml", "checkpoint.pt", "checkpoint.prev.pt", LOCK,
             "traceback.txt", "linear_eval.json", "summary.json.unreadable", ".hydra")


DERIVED = ("linear_eval.json",)  # computed from a checkpoint by a tool: stale once the run trains again


def drop_derived(run_dir: Path) -> None:
    """Remove the files a tool derived from this run's checkpoint: the run trains again, so they describe
    weights that are about to change (a linear_eval.json of an unfinished run, say)."""
    for name in DERIVED:
        (run_dir / name).unlink(missing_ok=True)


def is_run_file(name: str) -> bool:
    """Whether ``name`` is the name of a file a run writes (``checkpoint.epochN.pt`` included)."""
    return name in RUN_FILES or (name.startswith("checkpoint.") and name.endswith(".pt"))
WRITE_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR)


class RunDirError(AblateError):
    """A run directory that is in use, or cannot be written."""


def write_problem(path: Path, e: OSError) -> RunDirError:
    """The one line for an output directory that cannot be written (read-only, full, not a directory)."""
    why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
    return RunDirError(f"cannot write to {path} ({why}); choose a writable hydra.run.dir (or hydra.sweep.dir)")


class RunLock:
    """``flock`` on ``RUN_DIR/.ablate.lock``: the OS releases it when the process ends, a SIGKILL included, so a
    crashed run never blocks its own resume. The file holds the holder's pid, host and start time."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.path, self.fd = Path(run_dir), Path(run_dir) / LOCK, None

    def acquire(self, create: bool = True) -> "RunLock":
        """Take the lock (creating the directory and file when ``create``); RunDirError names the holder."""
        try:
            if create:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | (os.O_CREAT if create else 0), 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RunDirError(f"{self.path} is a symbolic link; a run never writes through links: remove "
                                  f"it") from None
            raise write_problem(self.run_dir, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(f"{self.run_dir} is in use by another run ({self.holder()}); wait for it to end, "
                              f"or choose another hydra.run.dir") from None
        self.fd = fd
        return self

    def holder(self) -> str:
        try:
            h = json.loads(self.path.read_text())
            return f"pid {h['pid']} on {h['host']}, started {h['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def claim(self) -> None:
        """Write this process into the lock file (only once it is sure to run here)."""
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n"
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, info.encode(), 0)
        except OSError as e:
            raise write_problem(self.run_dir, e) from None

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def unique_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that this process creates (mkdir is atomic, so two
    processes started in the same second never share one)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunDirError(f"no free run directory next to {base}")


def upgrade_config(config: dict) -> dict:
    """A stored config in today's terms, in place, for comparing with a run's: fields older versions wrote and
    nothing reads are dropped, fields added since get the value those versions ran with, and fields that change
    only how a step is scheduled are dropped."""
    if isinstance(config.get("stop_grad"), dict):
        config["stop_grad"].pop("branch", None)
    if isinstance(config.get("train"), dict):
        config["train"].setdefault("compile_aug", False)  # augmentation was eager before the switch existed
        config["train"].pop("view_parallel", None)  # scheduling, not what is trained (rundir.resumable_config)
    if isinstance(config.get("eval"), dict):
        config["eval"].setdefault("precision", "fp32")  # diagnostics ran in fp32 before eval.precision existed
    return config


def _stored_config(run_dir: Path) -> dict | None:
    """The config the run in ``run_dir`` trained: its checkpoint's, else its config.yaml (logger left out)."""
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir)
    if ckpt is not None:
        return upgrade_config(ckpt["config"])
    path = run_dir / "config.yaml"
    if path.is_file():
        return _comparable(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
    return None


def _comparable(config: dict) -> dict:
    """What two runs must share to be one run: where logs go and which checkpoints are kept once it finishes
    (``checkpoint.keep=none`` leaves only config.yaml, which records it) do not change what is trained."""
    config.pop("logger", None)
    config.pop("checkpoint", None)
    return upgrade_config(config)


def check_run_files(run_dir: Path) -> None:
    """RunDirError when ``run_dir`` is not a run's directory: it holds files but none a run writes (the user's
    own files, which a run would write among), or a run's file there is a symbolic link (a write would land
    wherever it points)."""
    if str(run_dir) in ("", "."):
        raise RunDirError("hydra.run.dir is empty or '.', the current directory; give a directory of its own")
    names = {p.name for p in run_dir.iterdir()}
    if names and not any(is_run_file(n) for n in names):
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise RunDirError(f"{run_dir} holds files that are not a run's ({shown}); nothing was changed: choose a new "
                          f"or empty hydra.run.dir")
    hydra = run_dir / ".hydra"
    inner = [hydra / n for n in os.listdir(hydra)] if hydra.is_dir() and not hydra.is_symlink() else []
    links = [p for p in [run_dir / n for n in sorted(names)] + inner
             if p.is_symlink() and (is_run_file(p.name) or p.parent == hydra or p.name.startswith("."))]
    if links:
        raise RunDirError(f"{links[0]} is a symbolic link; a run never writes through links: remove it (nothing "
                          f"was changed)")


def check_run_dir(run_dir: Path, cfg: DictConfig) -> str | None:
    """Read-only: None when ``cfg`` may train (or resume) in ``run_dir``; the line to print when it holds the
    same config's finished run (skip). ConfigError when it holds another config's run, finished or not;
    RunDirError when it is not a run's directory (``check_run_files``)."""

    if not run_dir.is_dir():
        return None
    check_run_files(run_dir)
    finished = finished_summary(run_dir / "summary.json", keep_copy=False)
    stored = _stored_config(run_dir) if finished is not None or (run_dir / "checkpoint.pt").exists() \
        or (run_dir / "checkpoint.prev.pt").exists() else None
    diff = config_diff(stored, resumable_config(cfg)) if stored is not None else []
    keys = "; ".join(diff[:4]) + (f"; {len(diff) - 4} more" if len(diff) > 4 else "")
    if finished is not None:
        if diff:
            raise ConfigError(f"{run_dir} already holds a finished run of another config ({keys}); nothing was "
                              f"changed: choose another hydra.run.dir to train this one")
        return f"{run_dir} already holds a finished run of this config; leaving it as it is (choose another " \
               f"hydra.run.dir to train again)"
    if diff:
        raise ConfigError(f"{run_dir} holds an unfinished run of another config ({keys}); nothing was changed: "
                          f"run that command to resume it, or choose another hydra.run.dir")
    return None


def config_diff(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in config_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return [] if same else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def resumable_config(cfg) -> dict:
    """The config a checkpoint must match; where logs go does not change what is trained, nor does how a CPU
    step is scheduled (``train.view_parallel``, which like the thread count changes only the rounding)."""
    return _comparable(OmegaConf.to_container(cfg, resolve=True))

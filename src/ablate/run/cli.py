"""``python -m ablate``: check the command line against the config tree, then hand it to Hydra."""

import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ..config import group_options, groups, switches
from ..errors import AblateError, ConfigError
from .hydra_args import (
    default_groups,
    is_info,
    is_multirun,
    order_groups,
    override_args,
    override_key,
    sweep_args,
)
from .launch import check_launch
from .rundir import WRITE_ERRORS, RunLock, check_run_dir, unique_dir, write_problem
from .summary import failure_summary, write_json, write_text

# Each sweep cell appends its outcome to this file, named by the sweep's process: cells may run in other
# processes (hydra/launcher=parallel, K at once, also on one GPU), and the sweep's exit status counts them all.
SWEEP_STATUS = "ABLATE_SWEEP_STATUS"

log = logging.getLogger("ablate")


def _fail(msg: str, code: int = 2):
    print(f"ablate: error: {msg}", file=sys.stderr)
    sys.exit(code)


def check_overrides(args: list[str]) -> None:
    """One-line errors for an unknown option of a config group and for a missing method, before Hydra
    composes anything (Hydra's own messages span several lines); also a group changed without the ``+`` it
    needs because no defaults list holds it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    candidates = [a for a in override_args(args) if "=" in a or a.startswith("~")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except Exception:  # Hydra reports its own syntax errors
        return
    known = set(groups())
    chosen = set()
    picked = {o.key_or_group: [str(v) for v in (o.sweep_string_iterator() if o.is_sweep_override() else [o.value()])]
              for o in overrides if o.key_or_group in known and not o.package and not o.is_delete()}
    in_defaults = None
    for o in overrides:
        group = o.key_or_group
        if o.type == OverrideType.ADD and group not in known and not group.startswith("hydra."):
            raise ConfigError(f"{o.input_line} adds a key that nothing reads; drop the '+' to change a setting "
                              f"(python -m ablate +method=NAME -c job lists them)")
        if group not in known or o.package:
            continue
        chosen.add(group)
        if o.is_delete():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        options = group_options(group)
        for v in values:
            if v is not None and str(v) not in options:
                raise ConfigError(f"unknown option '{v}' for {group}; choose one of: {', '.join(options)}")
        if o.type == OverrideType.CHANGE:
            in_defaults = default_groups(picked) if in_defaults is None else in_defaults
            if group not in in_defaults:
                raise ConfigError(f"write +{o.input_line}: {group} is not in the defaults list")
    if not chosen & {"method", "experiment", "row"}:
        raise ConfigError(f"no method chosen; add +method=NAME with NAME one of: {', '.join(group_options('method'))}")


def cell_threads() -> int | None:
    """In a sweep whose launcher runs K cells at once (``hydra/launcher=parallel``): each cell's share of the
    cores, set as torch's thread count and OMP_NUM_THREADS (for what the cell starts), so K cells do not
    oversubscribe the machine; None for one cell at a time."""
    from hydra.core.hydra_config import HydraConfig

    from .sweep_baselines import side_by_side

    k = side_by_side(HydraConfig.get().launcher)
    if k <= 1:
        return None
    import torch

    threads = max(1, (os.cpu_count() or 1) // k)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if _multirun():
        _run_cell(cfg, run_dir)
        return
    from .loop import train

    try:
        summary = train(cfg, run_dir)
    except AblateError as e:  # config, data and checkpoint errors: one line, no traceback
        _fail(str(e))
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        _fail(str(write_problem(run_dir, e)))
    if summary.get("status") == "failed":
        _fail(f"{summary['error']} ({run_dir / 'summary.json'})", code=1)
    if summary.get("verdict") == "diverged":
        _fail(f"training diverged ({summary['verdict_reason']}); summary written to {run_dir / 'summary.json'}",
              code=1)


def _run_cell(cfg: DictConfig, run_dir: Path) -> None:
    """One sweep cell: a failure is recorded in its directory and printed in one line; the sweep goes on."""
    from .loop import train

    _note_cell("cell", run_dir)
    cell_threads()
    try:
        lock = RunLock(run_dir).acquire()
    except AblateError as e:  # another process (another sweep, say) trains this cell: its outcome, not ours
        print(f"ablate: cell {run_dir} skipped: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return
    try:
        try:
            skip = check_run_dir(run_dir, cfg)
        except AblateError as e:  # another config's run, or not a run's directory: nothing is written there
            _cell_failed(run_dir, str(e))
            return
        if skip is not None:
            log.warning(skip)
            return
        lock.claim()
        save_hydra_files(run_dir, cfg)
        train(cfg, run_dir)
    except AblateError as e:
        _cell_failed(run_dir, f"config error: {e}", cfg)
    except Exception as e:  # a crashing cell must not stop a sweep
        write_text(run_dir / "traceback.txt", traceback.format_exc())
        _cell_failed(run_dir, f"{type(e).__name__}: {e}", cfg)
    finally:
        lock.release()


def save_hydra_files(run_dir: Path, cfg: DictConfig) -> None:
    """The files Hydra writes into a job directory (.hydra/config.yaml, hydra.yaml, overrides.yaml). A sweep
    runs with ``hydra.output_subdir=null`` and each cell writes them here, once it holds the directory: a
    finished cell that is skipped, or another process's or another config's run, is left untouched."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    out = run_dir / ".hydra"
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))  # each replaced, never written through a link
    write_text(out / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})))
    write_text(out / "overrides.yaml", OmegaConf.to_yaml(hc.overrides.task))


def _cell_failed(run_dir: Path, why: str, cfg: DictConfig | None = None) -> None:
    """Print the cell's failure in one line (its traceback, if any, is in traceback.txt); with ``cfg``, record
    it as the cell's summary (status failed)."""
    why = " ".join(why.split())
    _note_cell("failed", run_dir)
    print(f"ablate: cell {run_dir} failed: {why}", file=sys.stderr, flush=True)
    if cfg is not None:
        _record_failure(run_dir, cfg, why)


def _note_cell(outcome: str, run_dir: Path) -> None:
    path = os.environ.get(SWEEP_STATUS)
    if path:
        with open(path, "a") as f:  # one short line per write: appends from several processes do not interleave
            f.write(f"{outcome} {run_dir.name}\n")


def _sweep_outcomes(path: str) -> tuple[int, list[str]]:
    """(cells run, names of those that failed) from a sweep's status file."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return 0, []
    return (sum(x.startswith("cell ") for x in lines),
            [x.split(" ", 1)[1] for x in lines if x.startswith("failed ")])


def _record_failure(run_dir: Path, cfg: DictConfig, why: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    method = cfg.get("method")
    write_json(run_dir / "summary.json", failure_summary(why, method.name if method is not None else None,
                                                         switches(cfg), cfg.get("seed"),
                                                         method.get("baseline") if method is not None else None))


CONFIG_FLAGS = ("-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir")


def preflight(args: list[str]) -> tuple[RunLock | None, list[str]]:
    """A single run, before Hydra writes anything: compose the config as Hydra will, check it and the run
    directory (a finished or another config's run is left byte-identical), then lock the directory for the
    whole run. A default directory is made unique to this process. Returns the lock and the arguments."""
    if os.environ.get("RANK", "0") != "0" or any(a.split("=", 1)[0] in CONFIG_FLAGS for a in args):
        return None, args  # torchrun: rank 0 locks; another config tree: Hydra's own handling
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf, open_dict

    from ..config import check_config

    overrides = override_args(args)
    try:
        with initialize_config_module("ablate.conf", version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        run_dir = Path(str(OmegaConf.select(cfg, "hydra.run.dir")))
    except Exception as e:  # Hydra reports its own composition errors when it composes again
        _unknown_key(e)
        return None, args
    with open_dict(cfg):
        del cfg["hydra"]
    check_config(cfg)
    if not any(override_key(o) == "hydra.run.dir" for o in overrides):
        try:
            run_dir = unique_dir(run_dir)
        except OSError as e:
            raise write_problem(run_dir, e) from None
        args = [*args, f"hydra.run.dir={run_dir}"]
    lock = RunLock(run_dir)
    if lock.path.exists():  # no file is created before the checks
        lock.acquire(create=False)
    try:
        skip = check_run_dir(run_dir, cfg)
        if skip is not None:
            print(f"ablate: {skip}", file=sys.stderr)
            sys.exit(0)
        if lock.fd is None:
            lock.acquire()
        lock.claim()
    except BaseException:
        lock.release()
        raise
    return lock, args


def _unknown_key(e: Exception) -> None:
    """ConfigError in one line for Hydra's several-line message about a key the config does not hold."""
    import re

    m = re.search(r"Could not override '([^']+)'", str(e))
    if m and "not in struct" in f"{e} {e.__cause__}":
        raise ConfigError(f"{m.group(1)} is not a config key; check its spelling (python -m ablate +method=NAME "
                          f"-c job lists them), or write +{m.group(1)}=VALUE to add a key that a plugin reads")


def check_sweep_keys(args: list[str]) -> None:
    """A sweep's overrides composed once with each swept key at its first value: an unknown key is one line
    before any cell starts, not a several-line error from Hydra."""
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser

    first = []
    for a in override_args(args):
        try:
            (o,) = OverridesParser.create().parse_overrides([a])
        except Exception:  # Hydra reports its own syntax errors
            return
        if o.is_hydra_override():
            continue
        if o.is_sweep_override():
            value = next(iter(o.sweep_string_iterator()), None)
            a = f"{a.split('=', 1)[0]}={value}"
        first.append(a)
    try:
        with initialize_config_module("ablate.conf", version_base="1.3"):
            compose("config", overrides=first)
    except Exception as e:  # anything else: Hydra says it per cell
        _unknown_key(e)


def main() -> None:
    args, lock, status = order_groups(sys.argv[1:]), None, None
    if not is_info(args):
        try:
            check_launch()
            check_overrides(args)
            if is_multirun(args):
                check_sweep_keys(args)
                # -m first: Hydra's parser takes the overrides after its flags, in one run
                args = ["-m", *(a for a in sweep_args(args) if a not in ("-m", "--multirun")),
                        "hydra.output_subdir=null"]  # each cell writes .hydra/ itself
                fd, status = tempfile.mkstemp(prefix="ablate-sweep-", suffix=".txt")
                os.close(fd)
                os.environ[SWEEP_STATUS] = status
            else:
                lock, args = preflight(args)
        except AblateError as e:
            _fail(str(e))
    sys.argv[1:] = args
    try:
        _hydra_main()
    except KeyboardInterrupt:
        _fail("interrupted; run the same command again to resume from the last checkpoint", code=130)
    finally:
        if lock is not None:
            lock.release()
        cells, failed = _sweep_outcomes(status) if status else (0, [])
        if status:
            os.unlink(status)
    if failed:
        names = ", ".join(failed[:3]) + (", ..." if len(failed) > 3 else "")
        _fail(f"{len(failed)} of {cells} sweep cells failed ({names}); the reasons are printed above and in each "
              f"cell's summary.json", code=1)

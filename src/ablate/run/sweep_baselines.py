"""The reference runs every sweep adds: after a multirun, ``+method=random`` and ``+method=supervised`` once per
seed (and per value of any other non-switch sweep dimension), with the sweep's overrides other than the
method, its switches and its optimizer (scale, data, backbone, epochs, aug...), into
``<sweep dir>/baseline=KIND,seed=S``. Configured as a Hydra callback in each experiment yaml; a baseline whose
summary.json is finished is skipped like any finished run."""

import json
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hydra.experimental.callback import Callback

from ..config import BASELINES, SWITCHES
from .summary import FINISHED

log = logging.getLogger("ablate")
# overrides that choose the method, its switches or its optimizer: a baseline takes none of them (its preset
# has its own optimizer, as each method preset has)
SWITCH_KEYS = ("method", "row", "reg", "experiment", "reg_geometry", "optim", *SWITCHES)


def baseline_jobs(sweep_dir: Path, overrides: list[str], scale: str | None, seed) -> list[tuple[Path, list[str]]]:
    """(run dir, overrides) of each baseline run a sweep needs. ``overrides``: the sweeper's params then the
    command line's task overrides, as ``k=v`` strings (a later one wins, as in Hydra's basic sweeper);
    ``scale``: the scale the sweep composed (an experiment may set it in its defaults); ``seed``: the config's,
    for sweeps that do not sweep it."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = [o for o in OverridesParser.create().parse_overrides(overrides)
              if o.key_or_group.split(".")[0].split("/")[0] not in SWITCH_KEYS
              and not o.key_or_group.startswith("hydra")]
    keys = {o.key_or_group for o in parsed}
    extra = ([f"scale={scale}"] if scale and "scale" not in keys else []) + ([] if "seed" in keys else [f"seed={seed}"])
    parsed += OverridesParser.create().parse_overrides(extra)
    swept = sorted({o.key_or_group for o in parsed if o.is_sweep_override()} | {"seed"}, key=lambda k: (k != "seed", k))
    (combos,) = BasicSweeper.split_arguments(parsed, None)
    jobs = []
    for combo in combos:
        values = dict(a.split("=", 1) for a in combo if "=" in a)
        values = {k.lstrip("+~"): v for k, v in values.items()}
        for kind in BASELINES:
            name = ",".join([f"baseline={kind}", *(f"{k}={values[k]}" for k in swept)])
            jobs.append((Path(sweep_dir) / name, [f"+method={kind}", *combo]))
    return jobs


def finished(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status") in FINISHED
    except (OSError, ValueError, AttributeError):
        return False


def side_by_side(launcher) -> int:
    """How many cells the sweep's launcher runs at once: joblib's n_jobs (hydra/launcher=parallel), else 1."""
    if "JoblibLauncher" not in str(launcher.get("_target_", "")):
        return 1
    import joblib

    return joblib.effective_n_jobs(launcher.get("n_jobs", -1))


def run_baselines(jobs: list[tuple[Path, list[str]]], run=subprocess.run, parallel: int = 1) -> list[Path]:
    """Train each job not yet finished as ``python -m ablate``, ``parallel`` at a time, each then on
    cores / parallel threads as the sweep's cells were; returns the dirs trained. A failing baseline is
    logged and the others still run (the report shows what is missing)."""
    todo = []
    for run_dir, overrides in jobs:
        if finished(run_dir):
            log.info("baseline %s already finished; skipping it", run_dir)
        else:
            todo.append((run_dir, overrides))
    env = None
    if parallel > 1:  # joblib's loky gives each cell's worker the same count (cpu_count // n_jobs)
        import joblib

        env = {**os.environ, "OMP_NUM_THREADS": str(max(joblib.cpu_count() // parallel, 1))}

    def one(job):
        run_dir, overrides = job
        log.info("baseline run %s", run_dir)
        quoted = str(run_dir).replace("\\", "\\\\").replace("'", "\\'")
        rc = run([sys.executable, "-m", "ablate", *overrides, f"hydra.run.dir='{quoted}'"], env=env).returncode
        if rc != 0:
            log.warning("baseline %s exited with status %d", run_dir, rc)
        return run_dir

    with ThreadPoolExecutor(max(parallel, 1)) as pool:
        return list(pool.map(one, todo))


class AddBaselines(Callback):
    """Hydra callback: at the end of a multirun, the sweep's baseline runs (``baseline_jobs``)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        hydra = config.hydra
        params = hydra.sweeper.get("params") or {}
        overrides = [f"{k}={v}" for k, v in params.items()] + list(hydra.overrides.task)
        jobs = baseline_jobs(Path(hydra.sweep.dir), overrides, hydra.runtime.choices.get("scale"), config.seed)
        run_baselines(jobs, parallel=side_by_side(hydra.launcher))

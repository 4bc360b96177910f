"""``python -m ablate``: check the command line against the config tree, then hand it to Hydra."""

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .config import group_options, groups, techniques
from .errors import AblateError, ConfigError
from .hydra_args import default_groups, is_info, override_args
from .summary import failure_summary, write_json

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


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from .train import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = train(cfg, run_dir)
    except AblateError as e:  # config, data and checkpoint errors: one line, no traceback
        if _multirun():
            _record_failure(run_dir, cfg, f"config error: {e}")
            return
        _fail(str(e))
    except Exception as e:  # a crashing cell must not stop a sweep
        if not _multirun():
            raise
        log.exception("run failed")
        _record_failure(run_dir, cfg, f"{type(e).__name__}: {e}")
        return
    if summary.get("verdict") == "diverged" and not _multirun():
        _fail(f"training diverged ({summary['verdict_reason']}); summary written to {run_dir / 'summary.json'}",
              code=1)


def _record_failure(run_dir: Path, cfg: DictConfig, why: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    method = cfg.get("method")
    write_json(run_dir / "summary.json", failure_summary(why, method.name if method is not None else None,
                                                         techniques(cfg), cfg.get("seed"),
                                                         method.get("baseline") if method is not None else None))


def main() -> None:
    args = sys.argv[1:]
    if not is_info(args):
        try:
            check_overrides(args)
        except AblateError as e:
            _fail(str(e))
    _hydra_main()

"""What on a ``python -m ablate`` command line is a Hydra flag and what is an override, and which config
groups must be added with ``+`` (Hydra's own message for a missing ``+`` spans several lines)."""

from pathlib import Path

import yaml

from ..config import conf_dir

# Hydra's flags that only print something (help, the config, shell completion): no run, so no method needed
INFO_FLAGS = ("-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion")
# flags followed by a value that is not an override (the value of -c, -sc, -i is their own too)
VALUE_FLAGS = ("-c", "--cfg", "-p", "--package", "-sc", "--shell-completion", "-cp", "--config-path",
               "-cn", "--config-name", "-cd", "--config-dir", "--experimental-rerun", "-i", "--info")


def is_info(args: list[str]) -> bool:
    """True when Hydra will only print something (``-sc install=bash``, ``-c job``, ``--cfg job``, ``--help``)."""
    return any(a.split("=", 1)[0] in INFO_FLAGS for a in args)


def is_multirun(args: list[str]) -> bool:
    return any(a in ("-m", "--multirun") for a in args)


def override_key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def order_groups(args: list[str]) -> list[str]:
    """``args`` with every ``reg`` selection moved after the method or row it overrides (its options override
    ``/var`` and ``/cov``, which only a method puts in the defaults list), the rest in their order."""
    overrides = override_args(args)
    regs = [a for a in overrides if override_key(a) == "reg"]
    base = [i for i, a in enumerate(args) if a in overrides and override_key(a) in ("method", "row")]
    if not regs or not base or args.index(regs[-1]) > base[-1]:
        return args
    rest = [a for a in args if a not in regs]
    at = rest.index(args[base[-1]]) + 1
    return rest[:at] + regs + rest[at:]


def sweep_args(args: list[str]) -> list[str]:
    """A sweep's single ``+reg=X`` as the one-option sweep ``+reg=choice(X)``: Hydra then applies it per cell,
    after the experiment's ``+row``, instead of to the sweep's own config, which holds no method yet."""
    out = []
    for a in args:
        key, _, value = a.partition("=")
        if a in override_args(args) and key == "+reg" and value and "," not in value and "(" not in value:
            a = f"{key}=choice({value})"
        out.append(a)
    return out


def override_args(args: list[str]) -> list[str]:
    """The overrides on a command line: every argument that is not a flag nor a flag's value."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a.startswith("-"):
            skip = a in VALUE_FLAGS  # "--cfg=job" carries its value
        else:
            out.append(a)
    return out


def _defaults(path: Path) -> list[tuple[str, str | None]]:
    """(group, option) of each entry of a config file's defaults list."""
    try:
        entries = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
    except (OSError, yaml.YAMLError):
        return []
    out = []
    for e in entries:
        if isinstance(e, dict):
            for k, v in e.items():
                group = k.split()[-1].lstrip("/")  # "override /var", "optional x"
                out.append((group, v if isinstance(v, str) else None))
    return out


def default_groups(chosen: dict[str, list[str]]) -> set[str]:
    """Config groups that the defaults list holds, from config.yaml and the options chosen on the command line
    (``chosen``: group -> options), following each option's own defaults."""
    root = conf_dir()
    todo = [root / "config.yaml"] + [root / g / f"{v}.yaml" for g, vs in chosen.items() for v in vs]
    seen, groups = set(), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for group, option in _defaults(path):
            groups.add(group)
            if option:
                todo.append(root / group / f"{option}.yaml")
    return groups

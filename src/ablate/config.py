"""What the config switches on, and the checks that reject bad input before any compute is spent.

Every value a run reads is checked once, against ``RULES``: a table of (key, kind, domain, length) that says
its type, its range or choices, and how many values a list holds. ``check_config`` walks the table, then the
few checks that relate two values (a batch against the terms that need two samples, the data's sizes)."""

import math
import os
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

__all__ = ["ConfigError", "RULES", "SWITCHES", "TECHNIQUES", "check_config", "check_device", "check_value", "conf_dir",
           "group_options", "groups", "switches", "techniques"]
TECHNIQUES = ("ema", "stop_grad", "predictor", "batchnorm", "var", "cov")  # VICReg Table 4's six
SWITCHES = (*TECHNIQUES, "negatives", "xcorr")  # and two beyond it: SimCLR's negatives, Barlow Twins' xcorr
BASELINES = ("random", "supervised")
KEEP = ("last", "none", "all")  # checkpoint.keep
PRECISIONS = ("auto", "fp32", "bf16")  # train.precision
COMPILE_MODES = {True: "default", False: None, "reduce-overhead": "reduce-overhead"}  # train.compile -> torch mode
EVAL_PRECISIONS = ("fp32", "train")  # eval.precision
AUTO = ("auto", True, False)  # the auto | true | false switches, resolved where the hardware is known
MIN_EVAL_IMAGES = 16  # held-out images below which RankMe and the spread say nothing a verdict could rest on


class Rule(NamedTuple):
    """One config value: ``kind`` int | num | bool | str | choice; ``domain`` an interval such as "[0,1)" or
    "(0,inf)" for numbers, the allowed values for a choice (or a function returning them); ``length`` the
    number of values of a list ("pair": two values, the first <= the second); ``null`` whether null is allowed;
    ``hint`` what to write instead."""
    key: str
    kind: str
    domain: object = None
    length: int | str | None = None
    null: bool = False
    hint: str = ""


def _registry(module: str, name: str):
    """The names a registry of a building block holds, imported when first checked (cheap CLI start)."""
    def names():
        from importlib import import_module

        return tuple(getattr(import_module(f"ablate.{module}"), name))
    return names


RULES = (
    Rule("seed", "int", "[0,inf)"),
    Rule("model.head_width_mult", "num", "(0,inf)", hint="it scales every head width"),
    Rule("train.epochs", "int", "[1,inf)"),
    Rule("train.batch_size", "int", "[1,inf)"),
    Rule("train.warmup_epochs", "int", "[0,inf)"),
    Rule("train.log_every", "int", "[1,inf)"),
    Rule("train.early_stop_collapse", "int", "[1,inf)", null=True, hint="to never stop early; N counts evaluations"),
    Rule("train.precision", "choice", PRECISIONS),
    Rule("train.channels_last", "choice", AUTO),
    Rule("train.compile", "choice", tuple(COMPILE_MODES)),
    Rule("train.compile_aug", "choice", AUTO),
    Rule("train.view_parallel", "choice", AUTO),
    Rule("train.deterministic", "choice", (True, False)),
    Rule("checkpoint.keep", "choice", KEEP),
    Rule("checkpoint.every", "int", "[1,inf)", hint="epochs between checkpoints; the last epoch is always saved"),
    Rule("checkpoint.background", "choice", (True, False)),
    Rule("eval.precision", "choice", EVAL_PRECISIONS),
    Rule("eval.every", "int", "[1,inf)", hint="epochs between evaluations"),
    Rule("eval.batch_size", "int", "[1,inf)"),
    Rule("eval.bank_size", "int", "[1,inf)", null=True, hint="for all"),
    Rule("eval.test_size", "int", f"[{MIN_EVAL_IMAGES},inf)", null=True,
         hint="for all; fewer held-out images give no verdict to trust"),
    Rule("eval.knn_k", "int", "[1,inf)", hint="neighbours that vote"),
    Rule("eval.knn_t", "num", "(0,inf)", hint="the vote temperature; the kNN monitor uses 0.1"),
    Rule("eval.linear.epochs", "int", "[1,inf)", hint="the probe must train to report an accuracy"),
    Rule("eval.linear.batch_size", "int", "[1,inf)"),
    Rule("eval.linear.lr", "num", "(0,inf)"),
    Rule("eval.linear.weight_decay", "num", "[0,inf)"),
    Rule("verdict.collapse_std_ratio", "num", "[0,inf)"),
    Rule("verdict.collapse_scale_ratio", "num", "[0,inf)", null=True),
    Rule("verdict.collapse_rank", "num", "[0,inf)", null=True),
    Rule("verdict.dim_collapse_rank_frac", "num", "[0,1]"),
    Rule("optim.name", "choice", _registry("optim", "OPTIMIZERS")),
    Rule("optim.lr", "num", "[0,inf)"),
    Rule("optim.weight_decay", "num", "[0,inf)"),
    Rule("optim.momentum", "num", "[0,1)", hint="SGD and LARS use 0.9"),
    Rule("optim.eta", "num", "(0,inf)", hint="the LARS trust coefficient, 0.02 or 0.001"),
    Rule("optim.exclude_bias_norm", "choice", (True, False)),
    Rule("optim.final_lr_frac", "num", "[0,1]", hint="the cosine ends at this fraction of the base lr"),
    Rule("optim.predictor_fixed_lr", "choice", (True, False)),
    Rule("aug.crop_scale", "num", "(0,1]", "pair", hint="area fractions [min, max], e.g. [0.08, 1.0]"),
    Rule("aug.crop_ratio", "num", "(0,inf)", "pair", hint="aspect ratios [min, max], e.g. [0.75, 1.3333]"),
    Rule("aug.flip_p", "num", "[0,1]"),
    Rule("aug.jitter_p", "num", "[0,1]"),
    Rule("aug.brightness", "num", "[0,inf)"),
    Rule("aug.contrast", "num", "[0,inf)"),
    Rule("aug.saturation", "num", "[0,inf)"),
    Rule("aug.hue", "num", "[0,0.5]", hint="a fraction of a turn, as torchvision's ColorJitter"),
    Rule("aug.gray_p", "num", "[0,1]"),
    Rule("aug.blur_p", "num", "[0,1]", 2, hint="one probability per view"),
    Rule("aug.blur_sigma", "num", "(0,inf)", "pair", hint="sigma range in pixels [min, max], e.g. [0.1, 2.0]"),
    Rule("aug.solarize_p", "num", "[0,1]", 2, hint="one probability per view"),
    Rule("data.image_size", "int", "[8,inf)", hint="pixels"),
    Rule("data.num_classes", "int", "[2,inf)", null=True, hint="to count the classes"),
    Rule("data.mean", "num", "[0,1]", 3, null=True, hint="to compute it; per-channel, of x / 255"),
    Rule("data.std", "num", "(0,1]", 3, null=True, hint="to compute it; per-channel, of x / 255"),
    Rule("reg_geometry", "choice", lambda: ("auto", *_registry("losses", "REG_GEOMETRIES")())),
    Rule("method.invariance", "choice", _registry("losses", "INVARIANCE")),
    Rule("method.inv_weight", "num", "[0,inf)"),
    Rule("var.weight", "num", "[0,inf)"),
    Rule("var.gamma", "num", "[0,inf)"),
    Rule("var.eps", "num", "[0,inf)"),
    Rule("cov.weight", "num", "[0,inf)"),
    Rule("method.temperature", "num", "(0,inf)", hint="SimCLR's CIFAR value is 0.2"),
    Rule("negatives.weight", "num", "[0,inf)"),
    Rule("negatives.temperature", "num", "(0,inf)", hint="SimCLR's CIFAR value is 0.2"),
    Rule("xcorr.weight", "num", "[0,inf)"),
    Rule("xcorr.lambd", "num", "[0,inf)", hint="Barlow Twins uses 0.0051"),
    Rule("ema.base_tau", "num", "[0,1]", hint="BYOL uses base_tau=0.99..0.996"),
    Rule("ema.final_tau", "num", "[0,1]"),
)
SHAPES_RULES = (Rule("data.train_size", "int", "[1,inf)"),
                Rule("data.test_size", "int", f"[{MIN_EVAL_IMAGES},inf)", hint="held-out images for the verdict"),
                Rule("data.data_seed", "int", "[0,inf)"))


def conf_dir() -> Path:
    """The packaged config tree (works for editable and regular installs)."""
    return Path(str(resources.files("ablate") / "conf"))


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def groups() -> list[str]:
    return sorted(p.name for p in conf_dir().iterdir() if p.is_dir())


def techniques(cfg: DictConfig) -> dict[str, bool]:
    """A technique is on when its config group is present and not ``none``."""
    return {t: cfg.get(t) is not None for t in TECHNIQUES}


def switches(cfg: DictConfig) -> dict[str, bool]:
    """``techniques`` and the switches beyond Table 4 (negatives, xcorr), on when present and not ``none``."""
    return {t: cfg.get(t) is not None for t in SWITCHES}


# ------------------------------------------------------------------------------------------ the schema
_ABSENT = object()


def _interval(domain: str):
    lo, hi = domain[1:-1].split(",")
    return float(lo), float(hi), domain[0] == "(", domain[-1] == ")"


def _describe(rule: Rule) -> str:
    if rule.kind == "choice":
        names = [str(c).lower() if isinstance(c, bool) else str(c) for c in _choices(rule)]
        if any(isinstance(c, bool) for c in _choices(rule)):
            return ", ".join(names[:-1]) + f" or {names[-1]}"
        return "one of: " + ", ".join(names)
    lo, hi, lo_open, hi_open = _interval(rule.domain)
    kind = "an integer" if rule.kind == "int" else "finite and"
    if math.isinf(hi):
        return f"{kind} {'>' if lo_open else '>='} {lo:g}"
    return f"{kind} in {rule.domain[0]}{lo:g}, {hi:g}{rule.domain[-1]}"


def _choices(rule: Rule) -> tuple:
    return tuple(rule.domain() if callable(rule.domain) else rule.domain)


def _scalar_ok(rule: Rule, v) -> bool:
    if rule.kind == "choice":  # True == 1 in Python: a choice matches by type and value
        return any(type(v) is type(c) and v == c for c in _choices(rule))
    if isinstance(v, bool) or not isinstance(v, int | float) or (rule.kind == "int" and not isinstance(v, int)):
        return False
    if not math.isfinite(v):
        return False
    lo, hi, lo_open, hi_open = _interval(rule.domain)
    return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)


def _fail(rule: Rule, value, why: str) -> ConfigError:
    notes = " ".join(n for n in ("or null" if rule.null else "", rule.hint) if n)
    shown = f"'{value}'" if isinstance(value, str) and rule.kind != "choice" else value
    return ConfigError(f"{rule.key}={shown} {why}" + (f" ({notes})" if notes else ""))


def check_value(rule: Rule | str, value) -> None:
    """ConfigError in one line when ``value`` breaks ``rule`` (a Rule, or a key of ``RULES``)."""
    if isinstance(rule, str):
        rule = next(r for r in (*RULES, *SHAPES_RULES) if r.key == rule)
    if value is None:
        if not rule.null:
            raise _fail(rule, "null", f"must be {_describe(rule)}")
        return
    if isinstance(value, str) and rule.kind in ("int", "num"):
        raise _fail(rule, value, f"is not a number (it is quoted, a string); write a number, {_describe(rule)}")
    if rule.length is None:
        if not _scalar_ok(rule, value):
            unknown = rule.kind == "choice" and "one of" in _describe(rule)
            raise _fail(rule, value, f"is unknown; choose {_describe(rule)}" if unknown else f"must be {_describe(rule)}")
        return
    n = 2 if rule.length == "pair" else rule.length
    if not isinstance(value, list | tuple) or len(value) != n:
        raise _fail(rule, list(value) if isinstance(value, list | tuple) else value,
                    f"must be a list of {n} values, each {_describe(rule)}")
    bad = [v for v in value if not _scalar_ok(rule, v)]
    if bad:
        raise _fail(rule, list(value), f"holds {bad[0]!r}; each value must be {_describe(rule)}")
    if rule.length == "pair" and value[0] > value[1]:
        raise _fail(rule, list(value), "must be [min, max] with min <= max")


def _lookup(cfg: DictConfig, key: str):
    """The resolved value at ``key``; _ABSENT when its parent node is not in this config (a switch that is
    off, a preset without that key)."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig) or leaf not in node:
        return _ABSENT
    if OmegaConf.is_missing(node, leaf):
        raise ConfigError(f"{key} is not set; give {key}=VALUE (the scale and method presets set it)")
    value = node[leaf]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def check_schema(cfg: DictConfig, rules=RULES) -> None:
    for rule in rules:
        value = _lookup(cfg, rule.key)
        if value is not _ABSENT:
            check_value(rule, value)


# ------------------------------------------------------------------------------------------ check_config
def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError (DataError for a missing path) on the first problem found. Cheap: touches no data and
    builds no model. Every value against ``RULES``, then the checks that relate values to each other."""
    if cfg.get("method") is None:
        raise ConfigError(f"no method chosen; add +method=NAME with NAME one of: "
                          f"{', '.join(group_options('method'))}")
    check_schema(cfg)
    check_device(str(cfg.device))
    if cfg.method.get("baseline") is not None:
        _check_baseline(cfg)
    else:
        _check_invariance_params(cfg)
    _check_batch(cfg)
    _check_data(cfg)
    check_sizes(cfg)


def check_device(device: str, name: str = "device") -> None:
    """ConfigError unless ``device`` is auto, cpu, or a cuda device this machine has (``name``: the setting,
    ``--device`` for the tools)."""
    if device == "auto":
        return
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ConfigError(f"{name}={device} is unknown; choose auto, cpu or cuda[:N]") from None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"{name}={device} is not supported; choose auto, cpu or cuda[:N]")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{name}={device} but CUDA is not available here; set {name}=cpu (or auto)")


def _check_baseline(cfg: DictConfig) -> None:
    """A baseline run (+method=random|supervised) takes no switch, and the supervised one needs labels."""
    b, on = cfg.method.baseline, switches(cfg)
    if b not in BASELINES:
        raise ConfigError(f"method.baseline={b} is unknown; choose one of: {', '.join(BASELINES)}")
    if any(on.values()):
        raise ConfigError(f"the {b} baseline takes no switch; drop {', '.join(t for t in SWITCHES if on[t])}")
    d = cfg.data
    unlabelled = {"folder": ("data.stream=true", "data.stream=false"),
                  "stl10": (f"data.ssl_split={d.get('ssl_split')}", "data.ssl_split=train")}.get(d.name)
    if b == "supervised" and unlabelled and ((d.name == "folder" and d.get("stream")) or
                                             (d.name == "stl10" and d.ssl_split != "train")):
        raise ConfigError(f"the supervised baseline needs labels for the training images, which data {d.name} "
                          f"does not hold with {unlabelled[0]}; use {unlabelled[1]}")


def _check_invariance_params(cfg: DictConfig) -> None:
    """An invariance that takes a parameter (NT-Xent's temperature) finds it in the method node."""
    from .losses import INVARIANCE_PARAMS

    m = cfg.method
    for k in INVARIANCE_PARAMS.get(m.invariance, ()):
        if m.get(k) is None:
            raise ConfigError(f"method.invariance={m.invariance} needs method.{k}; set method.{k}=0.2 (SimCLR)")


def _check_batch(cfg: DictConfig) -> None:
    on, bs = switches(cfg), cfg.train.batch_size
    if (on["var"] or on["cov"] or on["xcorr"] or cfg.method.get("invariance") == "barlow_diag") and bs < 2:
        raise ConfigError(f"train.batch_size={bs} is too small for the var/cov terms and the cross-correlation (a "
                          f"std and a covariance over the batch need at least 2 samples); set train.batch_size>=2")
    if on["batchnorm"] and bs < 2:
        raise ConfigError(f"train.batch_size={bs} is too small for batch norm; set train.batch_size>=2 "
                          f"or batchnorm=none")


def _check_data(cfg: DictConfig) -> None:
    from .data import DATASETS, check_paths
    from .models import BACKBONES

    d = cfg.data
    if cfg.backbone.name not in BACKBONES:
        raise ConfigError(f"unknown backbone '{cfg.backbone.name}'; choose backbone= one of: {', '.join(BACKBONES)}")
    if d.name not in DATASETS:
        raise ConfigError(f"unknown dataset '{d.name}'; choose data= one of: {', '.join(DATASETS)}")
    if (d.get("mean") is None) != (d.get("std") is None):
        given, other = ("data.std", "data.mean") if d.get("mean") is None else ("data.mean", "data.std")
        raise ConfigError(f"{given} is set but {other} is null; give both (per-channel, of x / 255) or neither "
                          f"(both computed from the training images)")
    if d.name == "shapes":
        check_schema(cfg, SHAPES_RULES)
    check_paths(d)
    if d.name == "shapes" and d.train_size < cfg.train.batch_size:
        raise ConfigError(f"data.train_size={d.train_size} is smaller than train.batch_size="
                          f"{cfg.train.batch_size}; lower the batch or raise the size")


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_sizes(cfg: DictConfig, memory: int | None = None) -> None:
    """Sizes this machine cannot hold, refused before anything is allocated: the generated images (shapes), one
    batch of both views at float32, and the heads' weights with their gradients and optimizer state (4 copies,
    an EMA target a fifth), each against the machine's physical memory."""
    memory = memory or _memory_bytes()
    if not memory:
        return
    from .models import scaled

    d, size = cfg.data, cfg.data.image_size
    needs = {"train.batch_size": 2 * cfg.train.batch_size * 3 * size * size * 4}
    if d.name == "shapes":
        needs["data.train_size"] = (d.train_size + d.test_size) * 3 * size * size
    m = cfg.method
    if m.get("projector") is not None:
        widths = [512] + [scaled(w, cfg.model.head_width_mult) for w in m.projector]
        if m.get("predictor_hidden") is not None and cfg.get("predictor") is not None:
            widths += [scaled(m.predictor_hidden, cfg.model.head_width_mult), widths[-1]]
        needs["model.head_width_mult"] = sum(a * b for a, b in zip(widths, widths[1:])) * 4 * 5
    for key, need in needs.items():
        if need > memory:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)} needs about {need / 2**30:.0f} GiB, more than "
                              f"this machine's {memory / 2**30:.0f} GiB; lower it")

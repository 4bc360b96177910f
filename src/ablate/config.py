"""What the config switches on, and the checks that reject bad input before any compute is spent."""

import math
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig

TECHNIQUES = ("ema", "stop_grad", "predictor", "batchnorm", "var", "cov")
INVARIANCES = ("normalized_mse", "neg_cosine", "mse")
OPTIMIZERS = ("sgd", "lars")
REG_GEOMETRY_OPTIONS = ("auto", "raw", "sphere")


class ConfigError(ValueError):
    """Bad input; the message is one line that says what to change."""


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


def _finite_nonneg(value, name: str) -> None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a number; set {name} to a finite value >= 0") from None
    if not math.isfinite(v) or v < 0:
        raise ConfigError(f"{name}={value} must be finite and >= 0; set {name} to a value like 1.0")


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError on the first problem found. Cheap: touches no data and builds no model."""
    from .data import DATASETS
    from .models import BACKBONES

    if cfg.get("method") is None:
        raise ConfigError(f"no method chosen; add +method=NAME with NAME one of: "
                          f"{', '.join(group_options('method'))}")
    m, on = cfg.method, techniques(cfg)
    if m.invariance not in INVARIANCES:
        raise ConfigError(f"method.invariance={m.invariance} is unknown; choose one of: {', '.join(INVARIANCES)}")
    _finite_nonneg(m.inv_weight, "method.inv_weight")
    if cfg.get("reg_geometry") not in REG_GEOMETRY_OPTIONS:
        raise ConfigError(f"reg_geometry={cfg.get('reg_geometry')} is unknown; choose one of: "
                          f"{', '.join(REG_GEOMETRY_OPTIONS)}")
    for t in ("var", "cov"):
        if on[t]:
            _finite_nonneg(cfg[t].weight, f"{t}.weight")
    if on["var"]:
        _finite_nonneg(cfg.var.gamma, "var.gamma")
        _finite_nonneg(cfg.var.eps, "var.eps")
    if on["ema"]:
        for k in ("base_tau", "final_tau"):
            tau = float(cfg.ema[k])
            if not 0.0 <= tau <= 1.0:
                raise ConfigError(f"ema.{k}={tau} must lie in [0, 1]; BYOL uses base_tau=0.99..0.996")
    _finite_nonneg(cfg.optim.lr, "optim.lr")
    _finite_nonneg(cfg.optim.weight_decay, "optim.weight_decay")
    if cfg.optim.name not in OPTIMIZERS:
        raise ConfigError(f"optim.name={cfg.optim.name} is unknown; choose one of: {', '.join(OPTIMIZERS)}")
    for k in ("collapse_std_ratio", "dim_collapse_rank_frac"):
        _finite_nonneg(cfg.verdict[k], f"verdict.{k}")
    for k in ("collapse_rank", "collapse_scale_ratio"):
        if cfg.verdict.get(k) is not None:
            _finite_nonneg(cfg.verdict[k], f"verdict.{k}")
    bs = cfg.train.batch_size
    if not isinstance(bs, int) or bs < 1:
        raise ConfigError(f"train.batch_size={bs} must be a positive integer")
    if (on["var"] or on["cov"]) and bs < 2:
        raise ConfigError(f"train.batch_size={bs} is too small for the var/cov terms (a std and a covariance "
                          f"over the batch need at least 2 samples); set train.batch_size>=2")
    if on["batchnorm"] and bs < 2:
        raise ConfigError(f"train.batch_size={bs} is too small for batch norm; set train.batch_size>=2 "
                          f"or batchnorm=none")
    if not isinstance(cfg.train.epochs, int) or cfg.train.epochs < 1:
        raise ConfigError(f"train.epochs={cfg.train.epochs} must be an integer >= 1")
    if cfg.backbone.name not in BACKBONES:
        raise ConfigError(f"unknown backbone '{cfg.backbone.name}'; choose backbone= one of: "
                          f"{', '.join(BACKBONES)}")
    d = cfg.data
    if d.name not in DATASETS:
        raise ConfigError(f"unknown dataset '{d.name}'; choose data= one of: {', '.join(DATASETS)}")
    if d.name in ("cifar10", "cifar100", "stl10", "folder") and not d.get("download", False):
        root = Path(str(d.root)).expanduser()
        if not root.exists():
            raise ConfigError(f"dataset root '{root}' does not exist and data.download=false; set "
                              f"data.root=PATH to the data, or data.download=true")
    if d.name == "npz" and not Path(str(d.path)).expanduser().exists():
        raise ConfigError(f"data.path '{d.path}' does not exist; point it at an npz of decoded arrays or at "
                          f"../shared/data/cifar10-jpeg/cifar10_jpeg.npz")
    if d.name == "shapes" and d.train_size < bs:
        raise ConfigError(f"data.train_size={d.train_size} is smaller than train.batch_size={bs}; "
                          f"lower the batch or raise the size")

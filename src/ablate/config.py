"""What the config switches on, and the checks that reject bad input before any compute is spent."""

import math
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig

from .errors import ConfigError

__all__ = ["ConfigError", "SWITCHES", "TECHNIQUES", "check_config", "conf_dir", "group_options", "groups", "switches",
           "techniques"]
TECHNIQUES = ("ema", "stop_grad", "predictor", "batchnorm", "var", "cov")  # VICReg Table 4's six
SWITCHES = (*TECHNIQUES, "negatives", "xcorr")  # and two beyond it: SimCLR's negatives, Barlow Twins' xcorr
BASELINES = ("random", "supervised")
KEEP = ("last", "none", "all")  # checkpoint.keep
PRECISIONS = ("auto", "fp32", "bf16")  # train.precision
COMPILE_MODES = {False: None, True: "default", "reduce-overhead": "reduce-overhead"}  # train.compile -> torch mode
EVAL_PRECISIONS = ("fp32", "train")  # eval.precision


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


def _finite_nonneg(value, name: str) -> None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a number; set {name} to a finite value >= 0") from None
    if not math.isfinite(v) or v < 0:
        raise ConfigError(f"{name}={value} must be finite and >= 0; set {name} to a value like 1.0")


def _int(value, name: str, low: int, hint: str = "", allow_null: bool = False) -> None:
    """``value`` must be an integer >= ``low`` (or null when ``allow_null``)."""
    if value is None and allow_null:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        null = " (or null for all)" if allow_null else ""
        raise ConfigError(f"{name}={value} must be an integer >= {low}{null}{hint}")


def _check_run(cfg: DictConfig) -> None:
    """Seed, device, model width and evaluation settings: values that would train but report wrong numbers."""
    _int(cfg.seed, "seed", 0)
    device = str(cfg.device)
    if device != "auto":
        import torch

        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise ConfigError(f"device={device} is unknown; choose auto, cpu or cuda[:N]") from None
        if kind not in ("cpu", "cuda"):
            raise ConfigError(f"device={device} is not supported; choose auto, cpu or cuda[:N]")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device={device} but CUDA is not available here; set device=cpu (or auto)")
    mult = cfg.model.head_width_mult
    _finite_nonneg(mult, "model.head_width_mult")
    if float(mult) <= 0:
        raise ConfigError(f"model.head_width_mult={mult} must be > 0 (it scales every head width)")
    e = cfg.eval
    _int(e.every, "eval.every", 1, " (epochs between evaluations)")
    _int(e.batch_size, "eval.batch_size", 1)
    _int(e.knn_k, "eval.knn_k", 1, " (neighbours that vote)")
    _finite_nonneg(e.knn_t, "eval.knn_t")
    for k in ("bank_size", "test_size"):
        _int(e[k], f"eval.{k}", 1, allow_null=True)
    _int(e.linear.epochs, "eval.linear.epochs", 1, " (the probe must train to report an accuracy)")
    _int(e.linear.batch_size, "eval.linear.batch_size", 1)
    _finite_nonneg(e.linear.lr, "eval.linear.lr")
    _finite_nonneg(e.linear.weight_decay, "eval.linear.weight_decay")


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError (DataError for a missing path) on the first problem found. Cheap: touches no data and
    builds no model. Names are checked against the registries of losses, models, data and optim."""
    if cfg.get("method") is None:
        raise ConfigError(f"no method chosen; add +method=NAME with NAME one of: "
                          f"{', '.join(group_options('method'))}")
    _check_run(cfg)
    _check_switches(cfg)
    _check_training(cfg)
    _check_data(cfg)


def _check_switches(cfg: DictConfig) -> None:
    from .losses import INVARIANCE, REG_GEOMETRIES

    m, on = cfg.method, techniques(cfg)
    if m.get("baseline") is not None:
        return _check_baseline(cfg)
    if m.invariance not in INVARIANCE:
        raise ConfigError(f"method.invariance={m.invariance} is unknown; choose one of: {', '.join(INVARIANCE)}")
    _finite_nonneg(m.inv_weight, "method.inv_weight")
    geometries = ("auto", *REG_GEOMETRIES)
    if cfg.get("reg_geometry") not in geometries:
        raise ConfigError(f"reg_geometry={cfg.get('reg_geometry')} is unknown; choose one of: "
                          f"{', '.join(geometries)}")
    for t in ("var", "cov"):
        if on[t]:
            _finite_nonneg(cfg[t].weight, f"{t}.weight")
    _check_beyond(cfg)
    if on["var"]:
        _finite_nonneg(cfg.var.gamma, "var.gamma")
        _finite_nonneg(cfg.var.eps, "var.eps")
    if on["ema"]:
        for k in ("base_tau", "final_tau"):
            tau = float(cfg.ema[k])
            if not 0.0 <= tau <= 1.0:
                raise ConfigError(f"ema.{k}={tau} must lie in [0, 1]; BYOL uses base_tau=0.99..0.996")
    for k in ("collapse_std_ratio", "dim_collapse_rank_frac"):
        _finite_nonneg(cfg.verdict[k], f"verdict.{k}")
    for k in ("collapse_rank", "collapse_scale_ratio"):
        if cfg.verdict.get(k) is not None:
            _finite_nonneg(cfg.verdict[k], f"verdict.{k}")


def _positive(value, name: str, hint: str) -> None:
    _finite_nonneg(value, name)
    if float(value) <= 0:
        raise ConfigError(f"{name}={value} must be > 0; {hint}")


def _check_beyond(cfg: DictConfig) -> None:
    """The switches beyond Table 4 and the invariances that take a parameter (NT-Xent's temperature)."""
    from .losses import INVARIANCE_PARAMS

    m = cfg.method
    for k in INVARIANCE_PARAMS.get(m.invariance, ()):
        if m.get(k) is None:
            raise ConfigError(f"method.invariance={m.invariance} needs method.{k}; set method.{k}=0.2 (SimCLR)")
        _positive(m[k], f"method.{k}", "SimCLR's CIFAR value is 0.2")
    if cfg.get("negatives") is not None:
        _finite_nonneg(cfg.negatives.weight, "negatives.weight")
        _positive(cfg.negatives.temperature, "negatives.temperature", "SimCLR's CIFAR value is 0.2")
    if cfg.get("xcorr") is not None:
        _finite_nonneg(cfg.xcorr.weight, "xcorr.weight")
        _finite_nonneg(cfg.xcorr.lambd, "xcorr.lambd")


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


def _check_training(cfg: DictConfig) -> None:
    from .models import BACKBONES
    from .optim import OPTIMIZERS

    on = switches(cfg)
    _finite_nonneg(cfg.optim.lr, "optim.lr")
    _finite_nonneg(cfg.optim.weight_decay, "optim.weight_decay")
    if cfg.optim.name not in OPTIMIZERS:
        raise ConfigError(f"optim.name={cfg.optim.name} is unknown; choose one of: {', '.join(OPTIMIZERS)}")
    bs = cfg.train.batch_size
    if not isinstance(bs, int) or bs < 1:
        raise ConfigError(f"train.batch_size={bs} must be a positive integer")
    if (on["var"] or on["cov"] or on["xcorr"] or cfg.method.get("invariance") == "barlow_diag") and bs < 2:
        raise ConfigError(f"train.batch_size={bs} is too small for the var/cov terms and the cross-correlation (a "
                          f"std and a covariance over the batch need at least 2 samples); set train.batch_size>=2")
    if on["batchnorm"] and bs < 2:
        raise ConfigError(f"train.batch_size={bs} is too small for batch norm; set train.batch_size>=2 "
                          f"or batchnorm=none")
    if not isinstance(cfg.train.epochs, int) or cfg.train.epochs < 1:
        raise ConfigError(f"train.epochs={cfg.train.epochs} must be an integer >= 1")
    _int(cfg.train.warmup_epochs, "train.warmup_epochs", 0)
    _int(cfg.train.log_every, "train.log_every", 1)
    early_stop = cfg.train.get("early_stop_collapse")
    if early_stop is not None and (not isinstance(early_stop, int) or isinstance(early_stop, bool) or early_stop < 1):
        raise ConfigError(f"train.early_stop_collapse={early_stop} must be an integer >= 1 (evaluations), or null "
                          f"to never stop early")
    if cfg.train.precision not in PRECISIONS:
        raise ConfigError(f"train.precision={cfg.train.precision} is unknown; choose one of: {', '.join(PRECISIONS)}")
    if cfg.train.channels_last not in ("auto", True, False):
        raise ConfigError(f"train.channels_last={cfg.train.channels_last} must be auto, true or false")
    if cfg.train.compile not in COMPILE_MODES:
        raise ConfigError(f"train.compile={cfg.train.compile} must be true, false or reduce-overhead")
    if cfg.train.get("view_parallel", False) not in ("auto", True, False):
        raise ConfigError(f"train.view_parallel={cfg.train.view_parallel} must be auto, true or false")
    if cfg.train.compile_aug not in ("auto", True, False):
        raise ConfigError(f"train.compile_aug={cfg.train.compile_aug} must be auto, true or false")
    if cfg.checkpoint.keep not in KEEP:
        raise ConfigError(f"checkpoint.keep={cfg.checkpoint.keep} is unknown; choose one of: {', '.join(KEEP)}")
    _int(cfg.checkpoint.get("every", 1), "checkpoint.every", 1, " (epochs between checkpoints)")
    if cfg.checkpoint.get("background", False) not in (True, False):
        raise ConfigError(f"checkpoint.background={cfg.checkpoint.background} must be true or false")
    if cfg.eval.get("precision", "fp32") not in EVAL_PRECISIONS:
        raise ConfigError(f"eval.precision={cfg.eval.precision} is unknown; choose one of: {', '.join(EVAL_PRECISIONS)}")
    if cfg.backbone.name not in BACKBONES:
        raise ConfigError(f"unknown backbone '{cfg.backbone.name}'; choose backbone= one of: "
                          f"{', '.join(BACKBONES)}")


def _check_data(cfg: DictConfig) -> None:
    from .data import DATASETS, check_paths

    d = cfg.data
    if d.name not in DATASETS:
        raise ConfigError(f"unknown dataset '{d.name}'; choose data= one of: {', '.join(DATASETS)}")
    _int(d.image_size, "data.image_size", 8, " (pixels)")
    if d.get("num_classes") is not None:
        _int(d.num_classes, "data.num_classes", 2, "; null counts the classes")
    if d.name == "shapes":
        _int(d.train_size, "data.train_size", 1)
        _int(d.test_size, "data.test_size", 1)
    check_paths(d)
    if d.name == "shapes" and d.train_size < cfg.train.batch_size:
        raise ConfigError(f"data.train_size={d.train_size} is smaller than train.batch_size="
                          f"{cfg.train.batch_size}; lower the batch or raise the size")

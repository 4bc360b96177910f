"""The run summary (``summary.json``), its one owner: the schema and status words, the builder (``run_summary``),
the writer, and the reader (``read_summary``), which ``upgrade``s older schemas in this one place.

Read by ``train`` (is this directory's run finished?), the CLI (the summary of a failed run) and the report.
Importing this module loads no torch (the CLI checks its input before any compute); the builder imports the
diagnostics it runs when it runs.
"""

import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .. import __version__
from ..config import switches
from ..errors import ConfigError
from ..files import atomic_write, write_json, write_text  # noqa: F401  (the run files' writers)

log = logging.getLogger("ablate")

# 2: + invariance, scale_free (schema-1 files get them from ``upgrade``)
SCHEMA = 2
FINISHED = ("complete", "diverged")
STATUSES = (*FINISHED, "failed")
FINAL = ("knn_top1", "z_std", "z_std_ref", "z_scale", "z_scale_init", "h_std", "rank_z", "rank_h")


def failure_summary(error: str, method: str | None, techniques: dict, seed, baseline: str | None = None) -> dict:
    """What a sweep records for a cell that could not train (status ``failed``)."""
    return {"schema": SCHEMA, "status": "failed", "error": error, "method": method, "techniques": techniques,
            "seed": seed, "verdict": None, "metrics": {}, "baseline": baseline}


def finished_summary(summary_path: Path, keep_copy: bool = True) -> dict | None:
    """The summary of a finished run in this directory, None when there is nothing to keep (no summary, or a
    failed run). A summary that cannot be read, or an unfinished one from an unknown schema, may still be
    someone's result: refuse to train over it (a copy is kept next to it) rather than overwrite it."""
    if not summary_path.exists():
        return None
    try:
        summary = json.loads(summary_path.read_text())
        if not isinstance(summary, dict):
            raise ValueError(f"a JSON {type(summary).__name__}, not an object")
    except (OSError, ValueError) as e:
        problem = f"is unreadable ({str(e).splitlines()[0]})"
    else:
        status, schema = summary.get("status"), summary.get("schema")
        if status in FINISHED:
            return summary
        if status == "failed" or (schema in range(1, SCHEMA + 1) and status is None):
            return None
        problem = f"has status {status!r} from schema {schema!r} (this version writes schema {SCHEMA})"
    keep = summary_path.with_name(summary_path.name + ".unreadable")
    if keep_copy and not keep.exists():
        keep.write_bytes(summary_path.read_bytes())
    copy = f" (copy in {keep.name})" if keep.exists() else ""
    raise ConfigError(f"{summary_path} {problem}; it may hold a finished run, so nothing was overwritten{copy}: "
                      f"move it away to train here, or choose another hydra.run.dir")


# ---------------------------------------------------------------- building (the training loop)

def run_summary(cfg: DictConfig, state, model, stepper, data, diverged: float | None,
                features: tuple | None) -> dict:
    """summary.json of a run that ended: its settings, final metrics (linear probe included), verdict and
    protocols. ``state`` is the loop's RunState; ``features`` the held-out (bank_h, test_h, test_z) after the
    last step (None when the loss ``diverged``)."""
    summary = settings(cfg, state, model, stepper, data)
    if diverged is not None:
        summary.update(status="diverged", verdict="diverged", verdict_reason=f"non-finite loss ({diverged}) at "
                       f"step {stepper.step}", metrics=_terms(state.last))
        summary["metrics"]["loss"] = diverged
    else:
        summary.update(final_metrics(cfg, state.last, model, data, features))
    summary.update(against_init(cfg, state, model, data, summary))
    summary["verdict_thresholds"] = OmegaConf.to_container(cfg.verdict)
    summary["protocol"] = protocol(cfg, model, stepper, data)
    summary["wall_s"] = round(time.time() - state.t_start, 2)
    return summary


def settings(cfg: DictConfig, state, model, stepper, data) -> dict:
    """What the run was: method, switches, data, sizes, where and how it ran."""
    from ..method import equivalences
    from . import dist as D
    from .hardware import host

    return {
        "schema": SCHEMA, "ablate_version": __version__, "status": "complete",
        "method": cfg.method.name, "techniques": switches(cfg), "reg_geometry": model.geometry,
        "invariance": model.invariance_name, "scale_free": model.scale_free,  # null for a baseline
        "data": cfg.data.name, "backbone": cfg.backbone.name, "seed": cfg.seed,
        "epochs": cfg.train.epochs, "epochs_completed": state.last.get("epoch", 0), "batch_size": stepper.batch_size,
        "embedding_dim": model.dim, "num_classes": data.num_classes, "chance_top1": 100 / data.num_classes,
        "device": str(stepper.device), "processes": D.world()[1], "equivalences": equivalences(cfg),
        "precision": stepper.precision, "channels_last": stepper.channels_last,
        "compile": stepper.compile, "compile_aug": stepper.compile_aug,
        "compile_mode": stepper.compiled.mode if stepper.compile else None,  # default | reduce-overhead
        "view_parallel": stepper.view_parallel,  # the last stretch's; every stretch's in view_parallel_epochs
        "view_parallel_epochs": state.step_modes,  # [first epoch, view_parallel] per stretch a resume began
        "host": {k: v for k, v in host().items() if k != "loadavg"},
        "overrides": _overrides(), "choices": _choices(),
        "stopped_early_epoch": state.stopped_early,  # null unless train.early_stop_collapse stopped the run
        "baseline": cfg.method.get("baseline"),  # random | supervised for the reference runs, null for SSL runs
    }


def _terms(row: dict) -> dict:
    from ..method import TERMS

    return {k: v for k, v in row.items() if k in TERMS}


def final_metrics(cfg: DictConfig, last: dict, model, data, features: tuple) -> dict:
    """The last evaluation's metrics, the linear probe on ``features``, the verdict and the spectrum of z."""
    from ..diagnostics import spectrum, verdict

    test_z = features[2]
    metrics = {k: last.get(k) for k in (*FINAL, *model.terms)}
    metrics |= {k: last[k] for k in ("z_bn_std", "rank_z_bn") if k in last}  # Barlow Twins' geometry
    metrics["linear_top1"] = linear_top1(cfg, data, features)
    baseline = cfg.method.get("baseline")
    if baseline:  # what a cell's accuracy is placed between, not a cell: no embedding verdict
        v, reason = None, f"baseline run ({baseline}): no embedding verdict"
    else:
        v, reason = verdict(metrics, model.dim, len(test_z), cfg.verdict, model.scale_free, model.standardized)
    return {"verdict": v, "verdict_reason": reason, "metrics": metrics,
            "spectrum_z": [float(x) for x in spectrum(test_z).cpu()]}


def linear_top1(cfg: DictConfig, data, features: tuple) -> float:
    """The linear probe's top-1 in percent on held-out (bank_h, test_h, test_z) ``features`` (``eval.linear``)."""
    from ..diagnostics import linear_probe

    bank_h, test_h, _ = features
    lp = cfg.eval.linear
    return 100 * linear_probe(bank_h, data.bank_y, test_h, data.test_y, data.num_classes, lp.epochs, lp.batch_size,
                              lp.lr, lp.weight_decay, cfg.seed)


def against_init(cfg: DictConfig, state, model, data, summary: dict) -> dict:
    """Where the run ends against its own initialization and whether its verdict has settled: ``metrics_init``,
    ``no_better_than_init`` (the final linear probe at or below the initialization's; null for a baseline or
    where either is missing) and ``verdict_settled`` with its reason (``diagnostics.settled``: the evaluation
    before the last, or the initialization, against the last; null for a baseline)."""
    from ..diagnostics import settled

    init, metrics = state.metrics_init, summary["metrics"]
    out = {"metrics_init": init, "no_better_than_init": None, "verdict_settled": None,
           "verdict_settled_reason": "baseline run: no verdict"}
    if cfg.method.get("baseline"):
        return out
    if init and init.get("linear_top1") is not None and metrics.get("linear_top1") is not None:
        out["no_better_than_init"] = metrics["linear_top1"] <= init["linear_top1"]
    if summary["verdict"] == "diverged":
        out.update(verdict_settled=True, verdict_settled_reason="diverged: final")
    else:
        ok, why = settled(metrics, state.before or init, model.dim, len(data.test_x), cfg.verdict, model.scale_free,
                           standardized=model.standardized)
        out.update(verdict_settled=ok, verdict_settled_reason=why)
    return out


def protocol(cfg: DictConfig, model, stepper, data) -> dict:
    """How each number was measured, in words (summary.json's ``protocol``)."""
    from ..diagnostics import KNN_PROTOCOL, LINEAR_PROTOCOL

    lp = cfg.eval.linear
    out = {
        "knn_top1": KNN_PROTOCOL.format(k=cfg.eval.knn_k, t=cfg.eval.knn_t, bank=len(data.bank_x)),
        "linear_top1": LINEAR_PROTOCOL.format(n=len(data.bank_x), lr=lp.lr, bs=lp.batch_size,
                                              wd=lp.weight_decay, epochs=lp.epochs),
        "eval_set": f"{len(data.test_x)} held-out {cfg.data.name} images",
        "units": "top-1 in percent",
    }
    if cfg.method.get("baseline"):
        out["baseline"] = baseline_protocol(cfg, model, stepper, data)
    return out


def baseline_protocol(cfg: DictConfig, model, stepper, data) -> str:
    """How a baseline's backbone was obtained, for summary.json and the report."""
    from ..models import count_bn

    if cfg.method.baseline == "random":
        bn = (f"batch norm running statistics re-estimated from {len(data.bank_x)} labelled training images "
              f"(eval view, cumulative average; parameters untouched)" if count_bn(model.online) else
              "no batch norm")
        return (f"backbone at its initialization (seed {cfg.seed}, the SSL runs' initial backbone), no optimizer "
                f"step; {bn}; then the same kNN and linear probe")
    return (f"backbone + linear classifier on h trained with cross-entropy averaged over two augmented views "
            f"(the SSL runs' two_views recipe), {cfg.optim.name} lr {stepper.base_lr:.4g} (cosine, "
            f"{cfg.train.warmup_epochs} warmup epochs), {cfg.train.epochs} epochs of batch {stepper.batch_size} on "
            f"{len(data.ssl_x)} labelled training images; then the same kNN and linear probe on the backbone")


def write_summary(run_dir: Path, summary: dict, logger) -> None:
    """Write summary.json, hand it to the logger, and log the verdict line."""
    summary_path = run_dir / "summary.json"
    write_json(summary_path, summary)
    logger.finish(summary)
    m, init = summary["metrics"], summary.get("metrics_init") or {}
    log.info("verdict %s (%s); kNN %.1f%%, linear %.1f%%, %.0f s -> %s", summary["verdict"],
             summary["verdict_reason"], m.get("knn_top1", float("nan")), m.get("linear_top1", float("nan")),
             summary["wall_s"], summary_path)
    if summary.get("verdict_settled") is False:
        log.warning("verdict not settled: %s", summary["verdict_settled_reason"])
    if summary.get("no_better_than_init"):
        log.warning("no better than its initialization: linear %.1f%% after training, %.1f%% at epoch 0 (untrained)",
                    m["linear_top1"], init["linear_top1"])


def _choices() -> dict:
    """The config group options this run was composed from (method, row, reg, scale, ...)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra/")}
    except (ImportError, ValueError):
        return {}


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return []


# ---------------------------------------------------------------- reading (the report, the tools)

PRESET_INVARIANCE = {"byol": "normalized_mse", "simsiam": "neg_cosine", "vicreg": "mse"}  # conf/method/*.yaml


def _section(config: dict | None, key: str) -> dict:
    value = (config or {}).get(key)
    return value if isinstance(value, dict) else {}


def _old_precision(train: dict, device) -> str | None:
    """The precision of a run from before summary.json recorded it: ``auto`` then meant bf16 on CUDA only."""
    p = train.get("precision")
    if p in ("fp32", "bf16"):
        return p
    return None if p is None or device is None else ("bf16" if str(device).startswith("cuda") else "fp32")


def _old_channels_last(train: dict, device, precision: str | None) -> bool | None:
    """The memory format of a run from before summary.json recorded it: ``auto`` then meant NHWC on CUDA or in
    bf16 only."""
    v = train.get("channels_last", "auto")
    if v != "auto":
        return bool(v)
    return None if device is None else (str(device).startswith("cuda") or precision == "bf16")


def upgrade(summary: dict, config: dict | None = None) -> dict:
    """A summary in today's terms (a copy): the fields older schemas lack, from the run's resolved ``config``
    (its config.yaml) where given, else from what the method name implies: ``invariance`` (the preset's, for
    byol / simsiam / vicreg), ``scale_free`` (the invariance is blind to the embeddings' norms), ``precision``
    and ``channels_last`` (what ``auto`` meant before they were recorded). ``schema`` stays the file's."""
    from ..losses import scale_free

    s = dict(summary)
    method = s.get("method") or _section(config, "method").get("name")
    invariance = s.get("invariance") or _section(config, "method").get("invariance") or PRESET_INVARIANCE.get(method)
    s["invariance"] = invariance
    if s.get("scale_free") is None:
        s["scale_free"] = None if invariance is None else scale_free(invariance)
    train = _section(config, "train")
    if s.get("precision") is None:
        s["precision"] = _old_precision(train, s.get("device"))
    if s.get("channels_last") is None:
        s["channels_last"] = _old_channels_last(train, s.get("device"), s["precision"])
    return s


def read_config(run_dir: Path) -> dict | None:
    """The resolved config a run directory records (Hydra's ``.hydra/config.yaml``, else ``config.yaml``)."""
    import yaml

    for path in (run_dir / ".hydra" / "config.yaml", run_dir / "config.yaml"):
        try:
            config = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(config, dict):
            return config
    return None


def read_summary(path: Path) -> dict | None:
    """The summary.json at ``path`` upgraded to today's fields (``upgrade``), or None when it is not a readable
    JSON object."""
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict):
        return None
    return upgrade(summary, read_config(Path(path).parent))

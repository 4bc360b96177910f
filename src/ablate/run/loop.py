"""The trainer: resume, train epoch by epoch, evaluate, checkpoint, summarize. The method it trains, with
every switch, is ``method.py``; the run summary's schema is ``summary.py``."""

import copy
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .. import __version__
from ..augment import eval_view
from ..config import MIN_EVAL_IMAGES, TECHNIQUES, ConfigError, check_config, techniques
from ..data import load_data
from ..diagnostics import (
    KNN_PROTOCOL,
    LINEAR_PROTOCOL,
    embedding_scale,
    embedding_std,
    knn_top1,
    linear_probe,
    rankme,
    spectrum,
    verdict,
)
from ..files import open_nofollow
from ..losses import SCALE_FREE
from ..method import TERMS, Baseline, JointEmbedding, equivalences
from ..models import count_bn, embed
from . import dist as D
from .checkpoint import finish_checkpoints, load_checkpoint, save_checkpoint
from .hardware import deterministic_kernels, host
from .logger import NullLogger, make_logger
from .rundir import config_diff, drop_derived, resumable_config, upgrade_config
from .step import Stepper, build_runner, lookahead
from .summary import SCHEMA, finished_summary, write_json, write_text

log = logging.getLogger("ablate")


class Progress:
    """A tqdm bar over each epoch's steps on a terminal (rate, ETA, running loss); on a pipe nothing per step.
    Every evaluated epoch is one log line either way."""

    def __init__(self, epochs: int, steps: int, file=None):
        self.epochs, self.steps, self.file = epochs, steps, file or sys.stderr
        self.tty, self.bar, self.bar_epoch = self.file.isatty(), None, None

    def step(self, epoch, frac, loss):
        if not self.tty:
            return
        if self.bar_epoch != epoch:
            self.close()
            from tqdm import tqdm

            self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step", leave=False,
                            file=self.file, dynamic_ncols=True, mininterval=0)
            self.bar_epoch = epoch
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self.bar.update(round(frac * self.steps) - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.bar, self.bar_epoch = None, None

    def epoch(self, row):
        self.close()
        log.info(f"epoch {row['epoch']}/{self.epochs} loss {row.get('loss', math.nan):.4f} z_std {row['z_std']:.4f} "
                 f"(ref {row['z_std_ref']:.4f}) rank_z {row['rank_z']:.1f} rank_h {row['rank_h']:.1f} "
                 f"knn {row['knn_top1']:.1f}%")


def _resume_rows(metrics_path: Path, epoch: int) -> list[dict]:
    """The metrics rows a checkpoint at ``epoch`` vouches for: later rows (written before a kill, after the
    checkpoint) are trained again, and a line cut short by the kill is dropped."""
    rows = []
    lines = metrics_path.read_text().splitlines() if metrics_path.exists() else []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] <= epoch:
            rows.append(row)
    if len(rows) < len(lines):
        log.info("dropped %d metrics line(s) written after the epoch %d checkpoint", len(lines) - len(rows), epoch)
    return rows


@torch.no_grad()
def evaluate(model: JointEmbedding, data, size, cfg) -> dict:
    """Diagnostics on the fixed held-out set: device tensors, read by the caller once."""
    norm = lambda x: eval_view(x, size, data.mean, data.std)  # noqa: E731
    bank_h, _ = embed(model.online, data.bank_x, norm, cfg.eval.batch_size, project=False)  # kNN needs h only
    test_h, test_z = embed(model.online, data.test_x, norm, cfg.eval.batch_size)
    return {
        "z_std": embedding_std(test_z), "z_std_ref": torch.tensor(1 / math.sqrt(test_z.shape[1])),
        "z_scale": embedding_scale(test_z), "h_std": embedding_std(test_h),
        "rank_z": rankme(test_z), "rank_h": rankme(test_h),
        "knn_top1": 100 * knn_top1(bank_h, data.bank_y, test_h, data.test_y, data.num_classes,
                                   cfg.eval.knn_k, cfg.eval.knn_t),
    }, (bank_h, test_h, test_z)


@torch.no_grad()
def initial_scale(model: JointEmbedding, data, size, cfg) -> float:
    """z_scale of the held-out embeddings before the first step, the reference a collapse onto the origin is
    measured against. Batch norm uses batch statistics as in the loss (its running statistics are not yet
    estimated), on a copy so the model's buffers stay untouched; no random numbers are drawn, so training
    is the same with or without it."""
    norm = lambda x: eval_view(x, size, data.mean, data.std)  # noqa: E731
    _, z = embed(copy.deepcopy(model.online), data.test_x, norm, cfg.train.batch_size, batch_stats=True)
    return float(embedding_scale(z))


@torch.no_grad()
def estimate_bn_stats(model: Baseline, data, cfg: DictConfig) -> None:
    """Batch norm running statistics of a never-trained encoder, from forward passes over the labelled training
    images (eval view, train mode, cumulative average): buffers change, parameters do not, and no random
    number is drawn. At initialization they are mean 0 and variance 1, which would leave every activation
    unnormalized in eval mode."""
    bns = [m for m in model.online.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    embed(model.online, data.bank_x, lambda x: eval_view(x, cfg.data.image_size, data.mean, data.std),
          cfg.eval.batch_size, batch_stats=True)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train one configuration and write metrics.jsonl, summary.json and config.yaml into ``run_dir``.
    Under torchrun every rank trains its shard and only rank 0 writes, into rank 0's ``run_dir``."""
    created = D.setup(cfg)
    try:
        return _train(cfg, Path(D.broadcast_object(str(run_dir))))
    finally:
        if created:
            import torch.distributed

            torch.distributed.destroy_process_group()


@dataclass
class RunState:
    """Where a run stands at an epoch boundary, next to the model, optimizer and random state: a checkpoint
    saves it whole and a resume restores it whole."""
    t_start: float                  # wall-clock origin; a resumed run moves it back by the time already spent
    epoch: int = 0                  # epochs completed
    last: dict = field(default_factory=dict)   # the newest metrics row
    streak: int = 0                 # consecutive evaluations with verdict collapse
    stopped_early: int | None = None
    z_scale_init: float | None = None
    logger_id: str | None = None
    features: tuple | None = field(default=None, repr=False)  # (step, features) of the newest evaluation, not saved


def _train(cfg: DictConfig, run_dir: Path) -> dict:
    rank, n_ranks = D.world()
    writer = rank == 0
    if not writer:  # one log for the job
        log.setLevel(logging.WARNING)
    check_config(cfg)
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
    finished = finished_summary(run_dir / "summary.json", keep_copy=writer)
    if finished is not None:
        version = finished.get("ablate_version")
        log.warning("%s already holds a finished run%s; leaving it as it is (choose another hydra.run.dir "
                    "to train again)", run_dir, "" if version == __version__ else f" (written by ablate {version})")
        return finished
    t_start = time.time()
    _log_switches(cfg)
    if writer:  # linear_eval.json describes weights about to change; config.yaml replaced, not written through
        drop_derived(run_dir)
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    device = D.pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if device.type == "cpu" and cfg.train.deterministic:
        deterministic_kernels()
    data = check_eval_size(load_data(cfg.data, cfg.eval, cfg.seed), cfg).to(device)
    model, stepper = build_runner(cfg, data, device)
    if n_ranks > 1:  # same initial model everywhere (DDP broadcasts it too), own augmentations per rank
        torch.manual_seed(cfg.seed + rank)
    log.info("data %s: %d training images, device %s, %d steps of %d%s, lr %.4g", cfg.data.name,
             len(data.ssl_x), device, stepper.total, stepper.batch_size,
             f" ({n_ranks} processes x {stepper.local_batch})" if n_ranks > 1 else "", stepper.base_lr)
    state = resume(run_dir, cfg, model, stepper, data, t_start, writer)
    logger = make_logger(cfg, run_dir, state.logger_id) if writer else NullLogger()
    state.logger_id = logger.run_id
    progress, diverged = Progress(cfg.train.epochs, stepper.steps_per_epoch), None
    last_epoch, saved = cfg.train.epochs if state.stopped_early is None else state.epoch, True  # saved: newest ckpt
    if cfg.method.get("baseline") == "random":  # no training step: BN statistics, then the same evaluation
        last_epoch = state.epoch
        evaluate_untrained(state, model, stepper, data, cfg, device, run_dir if writer else None, progress, logger)
    for epoch in range(state.epoch, last_epoch):
        terms, diverged = train_epoch(stepper, data, cfg, progress, epoch)
        if diverged is not None:
            state.last.update(terms)
            break
        if (epoch + 1) % cfg.eval.every == 0 or epoch == cfg.train.epochs - 1:
            record_evaluation(state, evaluation_row(state, terms, model, stepper, data, cfg, epoch),
                              model, data, cfg, run_dir if writer else None, progress, logger)
        state.epoch = epoch + 1
        ckpt = checkpoint_state(state, model, stepper, cfg, device)  # every rank: it gathers RNG states
        if writer:
            saved = save_checkpoint(run_dir, ckpt, cfg.checkpoint.keep)
        if state.stopped_early is not None:
            break
    summary = run_summary(cfg, state, model, stepper, data, device, diverged)
    if not saved:  # the tools would read the previous epoch's weights as this run's: not a finished run
        summary.update(status="failed", error=f"the epoch {state.epoch} checkpoint could not be written; {UNSAVED}")
    if writer:
        write_summary(run_dir, summary, logger)
        if saved:
            finish_checkpoints(run_dir, cfg.checkpoint.keep)
    return summary


UNSAVED = "free disk space and run the same command again to train that epoch again"


def check_eval_size(data, cfg: DictConfig):
    """``data``, or a ConfigError when its held-out split is too small for a verdict: eval.test_size is checked
    up front (config.RULES), a data set's own small test split only once loaded."""
    if len(data.test_x) < MIN_EVAL_IMAGES:
        raise ConfigError(f"the {cfg.data.name} test split holds {len(data.test_x)} images; a verdict needs at least "
                          f"{MIN_EVAL_IMAGES} held-out images: give the data a larger test split")
    return data


def evaluate_untrained(state: RunState, model, stepper: "Stepper", data, cfg: DictConfig, device: torch.device,
                       run_dir: Path | None, progress: "Progress", logger) -> None:
    """The random baseline's one evaluation (epoch 0) after estimating BN statistics, and its checkpoint; a
    resumed run has both already."""
    if state.last:
        return
    estimate_bn_stats(model, data, cfg)
    record_evaluation(state, evaluation_row(state, {}, model, stepper, data, cfg, -1), model, data, cfg, run_dir,
                      progress, logger)
    ckpt = checkpoint_state(state, model, stepper, cfg, device)
    if run_dir is not None:
        save_checkpoint(run_dir, ckpt, cfg.checkpoint.keep)


def _log_switches(cfg: DictConfig) -> None:
    on = techniques(cfg)
    for note in equivalences(cfg):
        log.info("note: %s", note)
    log.info("method %s, techniques: %s", cfg.method.name,
             ", ".join(f"{t}={'on' if on[t] else 'off'}" for t in TECHNIQUES))


def resume(run_dir: Path, cfg: DictConfig, model: JointEmbedding, stepper: "Stepper", data, t_start: float,
           writer: bool) -> RunState:
    """The run's state from its newest checkpoint (model, optimizer, random state restored in place), or a
    fresh state, with an empty metrics.jsonl and the initial embedding scale, when there is none."""
    rank, n_ranks = D.world()
    metrics_path = run_dir / "metrics.jsonl"
    ckpt = load_checkpoint(run_dir)
    if ckpt is None:
        if writer:
            write_text(metrics_path, "")
        return RunState(t_start, z_scale_init=initial_scale(model, data, cfg.data.image_size, cfg))
    diff = config_diff(upgrade_config(ckpt["config"]), resumable_config(cfg))
    if diff:
        raise ConfigError(f"{run_dir} holds a checkpoint of another configuration ({'; '.join(diff[:3])}); "
                          f"run the same command to resume, or choose another hydra.run.dir")
    model.load_state_dict(ckpt["model"])
    stepper.opt.load_state_dict(ckpt["opt"])
    stepper.step, stepper.lr, stepper.tau = ckpt["step"], ckpt["lr"], ckpt["tau"]
    if len(ckpt["rng_cpu"]) == n_ranks:
        torch.set_rng_state(ckpt["rng_cpu"][rank])
        if stepper.device.type == "cuda" and ckpt.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng_cuda"][rank], stepper.device)
    else:  # another number of processes: the data order and augmentations cannot be replayed exactly
        log.warning("checkpoint written by %d process(es), resumed by %d: random draws differ from an "
                    "uninterrupted run", len(ckpt["rng_cpu"]), n_ranks)
        torch.manual_seed(cfg.seed + rank + 1000 * ckpt["epoch"])
    if writer:
        rows = _resume_rows(metrics_path, ckpt["epoch"])
        write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
    log.info("resuming from the epoch %d checkpoint in %s (step %d)", ckpt["epoch"], run_dir, stepper.step)
    # a resumed run keeps the scale of its own initialization (None from checkpoints that predate it)
    return RunState(t_start - ckpt["wall_s"], epoch=ckpt["epoch"], last=ckpt["last"], streak=ckpt["streak"],
                    stopped_early=ckpt["stopped_early"], z_scale_init=ckpt.get("z_scale_init"),
                    logger_id=ckpt.get("logger_id"))


def checkpoint_state(state: RunState, model: JointEmbedding, stepper: "Stepper", cfg: DictConfig,
                     device: torch.device) -> dict:
    """Everything a resume needs, RNG states of every rank included: a resumed run draws the same
    permutations and augmentations as one never interrupted."""
    rng_cpu = D.gather_objects(torch.get_rng_state())
    rng_cuda = D.gather_objects(torch.cuda.get_rng_state(device)) if device.type == "cuda" else None
    return {
        "schema": SCHEMA, "ablate_version": __version__, "epoch": state.epoch, "step": stepper.step,
        "lr": stepper.lr, "tau": stepper.tau, "model": model.state_dict(), "opt": stepper.opt.state_dict(),
        "rng_cpu": rng_cpu, "rng_cuda": rng_cuda, "last": state.last, "streak": state.streak,
        "stopped_early": state.stopped_early, "wall_s": time.time() - state.t_start,
        "config": resumable_config(cfg), "logger_id": state.logger_id, "processes": D.world()[1],
        "z_scale_init": state.z_scale_init,
    }


def train_epoch(stepper: "Stepper", data, cfg: DictConfig, progress: "Progress", epoch: int):
    """One pass over the training images: the mean loss terms, and the loss when it became non-finite."""
    stepper.model.train()
    running = torch.zeros(len(TERMS), device=stepper.device)
    count, diverged = 0, None
    with stepper.main_threads():
        for s, (batch, upcoming) in enumerate(lookahead(stepper.epoch_batches(data.ssl_x))):
            running += stepper(batch, upcoming)
            count += 1
            if stepper.step % cfg.train.log_every == 0 or s == stepper.steps_per_epoch - 1:
                mean_loss = (D.mean(running[0]) / count).item()  # the one host read per interval
                if not math.isfinite(mean_loss):
                    diverged = mean_loss
                    break
                progress.step(epoch, (s + 1) / stepper.steps_per_epoch, mean_loss)
    return dict(zip(TERMS, (D.mean(running) / max(count, 1)).tolist())), diverged


def evaluation_row(state: RunState, terms: dict, model: JointEmbedding, stepper: "Stepper", data,
                   cfg: DictConfig, epoch: int) -> dict:
    """The metrics.jsonl row of an evaluated epoch (``epoch=-1``: the random baseline's row 0, untrained)."""
    diag, features = evaluate(model, data, cfg.data.image_size, cfg)
    state.features = (stepper.step, features)  # the final probe's features when no step follows
    return {"epoch": epoch + 1, "step": stepper.step, **terms, **{k: float(v) for k, v in diag.items()},
            "z_scale_init": state.z_scale_init, "lr": stepper.lr, "tau": stepper.tau,
            "wall_s": round(time.time() - state.t_start, 2)}


def record_evaluation(state: RunState, row: dict, model: JointEmbedding, data, cfg: DictConfig,
                      run_dir: Path | None, progress: "Progress", logger) -> None:
    """Append ``row`` to metrics.jsonl (``run_dir`` None: not this rank's job), log it, and count the
    evaluations in a row whose verdict is collapse for ``train.early_stop_collapse``."""
    if run_dir is not None:
        with open_nofollow(run_dir / "metrics.jsonl", "a") as f:  # never appends through a link
            f.write(json.dumps(row) + "\n")
    progress.epoch(row)
    logger.epoch(row)
    state.last = row
    early_stop = cfg.train.get("early_stop_collapse")
    if early_stop and not cfg.method.get("baseline"):  # a baseline has no verdict
        scale_free = cfg.method.invariance in SCALE_FREE
        collapsed = verdict(row, model.dim, len(data.test_x), cfg.verdict, scale_free)[0] == "collapse"
        state.streak = state.streak + 1 if collapsed else 0
        if state.streak >= early_stop:
            state.stopped_early = row["epoch"]
            log.info("stopping early: verdict collapse at %d consecutive evaluations (epoch %d, "
                     "train.early_stop_collapse=%d)", state.streak, state.stopped_early, early_stop)


def run_summary(cfg: DictConfig, state: RunState, model: JointEmbedding, stepper: "Stepper", data,
                device: torch.device, diverged: float | None) -> dict:
    """summary.json: the run's settings, final metrics (linear probe included), verdict and protocols."""
    last, lp = state.last, cfg.eval.linear
    summary = {
        "schema": SCHEMA, "ablate_version": __version__, "status": "complete",
        "method": cfg.method.name, "techniques": techniques(cfg), "reg_geometry": model.geometry,
        "data": cfg.data.name, "backbone": cfg.backbone.name, "seed": cfg.seed,
        "epochs": cfg.train.epochs, "epochs_completed": last.get("epoch", 0), "batch_size": stepper.batch_size,
        "embedding_dim": model.dim, "num_classes": data.num_classes, "chance_top1": 100 / data.num_classes,
        "device": str(device), "processes": D.world()[1], "equivalences": equivalences(cfg),
        "precision": stepper.precision, "channels_last": stepper.mem_format == torch.channels_last,
        "compile": stepper.compile, "compile_aug": stepper.compile_aug,
        "view_parallel": stepper.view_parallel,
        "host": {k: v for k, v in host().items() if k != "loadavg"},
        "overrides": _overrides(), "choices": _choices(),
        "stopped_early_epoch": state.stopped_early,  # null unless train.early_stop_collapse stopped the run
        "baseline": cfg.method.get("baseline"),  # random | supervised for the reference runs, null for SSL runs
    }
    if diverged is not None:
        summary.update(status="diverged", verdict="diverged", verdict_reason=f"non-finite loss ({diverged}) at "
                       f"step {stepper.step}", metrics={k: v for k, v in last.items() if k in TERMS})
        summary["metrics"]["loss"] = diverged
    else:
        fresh = state.features is not None and state.features[0] == stepper.step  # evaluated after the last step
        bank_h, test_h, test_z = state.features[1] if fresh else evaluate(model, data, cfg.data.image_size, cfg)[1]
        linear = 100 * linear_probe(bank_h, data.bank_y, test_h, data.test_y, data.num_classes, lp.epochs,
                                    lp.batch_size, lp.lr, lp.weight_decay, cfg.seed)
        metrics = {k: last.get(k) for k in ("knn_top1", "z_std", "z_std_ref", "z_scale", "z_scale_init", "h_std",
                                            "rank_z", "rank_h", *TERMS)}
        metrics["linear_top1"] = linear
        if summary["baseline"]:  # what a cell's accuracy is placed between, not a cell: no embedding verdict
            v, reason = None, f"baseline run ({summary['baseline']}): no embedding verdict"
        else:
            v, reason = verdict(metrics, model.dim, len(test_z), cfg.verdict, cfg.method.invariance in SCALE_FREE)
        summary.update(verdict=v, verdict_reason=reason, metrics=metrics,
                       spectrum_z=[float(x) for x in spectrum(test_z).cpu()])
    summary["verdict_thresholds"] = OmegaConf.to_container(cfg.verdict)
    summary["protocol"] = {
        "knn_top1": KNN_PROTOCOL.format(k=cfg.eval.knn_k, t=cfg.eval.knn_t, bank=len(data.bank_x)),
        "linear_top1": LINEAR_PROTOCOL.format(n=len(data.bank_x), lr=lp.lr, bs=lp.batch_size,
                                              wd=lp.weight_decay, epochs=lp.epochs),
        "eval_set": f"{len(data.test_x)} held-out {cfg.data.name} images",
        "units": "top-1 in percent",
    }
    if summary["baseline"]:
        summary["protocol"]["baseline"] = baseline_protocol(cfg, model, stepper, data)
    summary["wall_s"] = round(time.time() - state.t_start, 2)
    return summary


def baseline_protocol(cfg: DictConfig, model: Baseline, stepper: "Stepper", data) -> str:
    """How a baseline's backbone was obtained, for summary.json and the report."""
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
    summary_path = run_dir / "summary.json"
    write_json(summary_path, summary)
    logger.finish(summary)
    m = summary["metrics"]
    log.info("verdict %s (%s); kNN %.1f%%, linear %.1f%%, %.0f s -> %s", summary["verdict"],
             summary["verdict_reason"], m.get("knn_top1", float("nan")), m.get("linear_top1", float("nan")),
             summary["wall_s"], summary_path)


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

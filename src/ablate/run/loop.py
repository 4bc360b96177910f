"""The trainer: resume, evaluate the initialization, train epoch by epoch, evaluate, checkpoint, summarize. The
method it trains, with every switch, is ``method.py``; its step strategies are ``step.py``; summary.json is
built, written, read and upgraded by ``summary.py``."""

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
from ..config import MIN_EVAL_IMAGES, SWITCHES, ConfigError, check_config, switches
from ..data import load_data
from ..diagnostics import (
    embedding_scale,
    embedding_std,
    knn_top1,
    rankme,
    standardized_metrics,
    verdict,
)
from ..files import open_nofollow
from ..method import TERMS, Baseline, JointEmbedding, equivalences
from ..models import embed
from . import dist as D
from .checkpoint import CheckpointWriter, finish_checkpoints, load_checkpoint, save_checkpoint
from .hardware import deterministic_kernels, resolve
from .logger import NullLogger, make_logger
from .rundir import config_diff, drop_derived, resumable_config, upgrade_config
from .step import Stepper, build_runner, lookahead
from .summary import FINAL, SCHEMA, finished_summary, linear_top1, run_summary, write_summary, write_text

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
    with eval_precision(cfg, data.test_x.device):
        bank_h, _ = embed(model.online, data.bank_x, norm, cfg.eval.batch_size, project=False)  # kNN needs h only
        test_h, test_z = embed(model.online, data.test_x, norm, cfg.eval.batch_size)
    standardized = standardized_metrics(test_z) if model.standardized else {}  # Barlow Twins' geometry
    return {
        "z_std": embedding_std(test_z), "z_std_ref": torch.tensor(1 / math.sqrt(test_z.shape[1])),
        "z_scale": embedding_scale(test_z), "h_std": embedding_std(test_h),
        "rank_z": rankme(test_z), "rank_h": rankme(test_h), **standardized,
        "knn_top1": 100 * knn_top1(bank_h, data.bank_y, test_h, data.test_y, data.num_classes,
                                   cfg.eval.knn_k, cfg.eval.knn_t),
    }, (bank_h, test_h, test_z)


def eval_precision(cfg: DictConfig, device: torch.device):
    """``eval.precision=train``: the diagnostics' forward under the training step's bf16 autocast when it trains in
    bf16 (at GPU scale, half the cost of an fp32 pass over the held-out set); the embeddings leave as fp32."""
    bf16 = cfg.eval.get("precision", "fp32") == "train" and resolve(cfg.train.precision, device) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.no_grad()
def initial_scale(model: JointEmbedding, data, size, cfg) -> float:
    """z_scale of the held-out embeddings before the first step, the reference a collapse onto the origin is
    measured against. Batch norm uses batch statistics as in the loss (its running statistics are not yet
    estimated), on a copy so the model's buffers stay untouched; no random numbers are drawn, so training
    is the same with or without it."""
    norm = lambda x: eval_view(x, size, data.mean, data.std)  # noqa: E731
    _, z = embed(copy.deepcopy(model.online), data.test_x, norm, cfg.train.batch_size, batch_stats=True)
    return float(embedding_scale(z))


def evaluate_init(state: "RunState", model, stepper: Stepper, data, cfg: DictConfig) -> dict:
    """The untrained initialization's metrics, keys as summary.json's ``metrics`` (no loss terms): on a copy of
    the model with batch norm statistics estimated as for the random baseline, the same evaluation and linear
    probe. The model, its buffers and the random stream are left as they were: training is the same with it."""
    cuda = [stepper.device] if stepper.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # the probe's head is initialized from the global stream
        init = copy.deepcopy(model)
        estimate_bn_stats(init, data, cfg)
        diag, features = evaluate(init, data, cfg.data.image_size, cfg)
        metrics = {k: float(v) for k, v in diag.items()} | {"z_scale_init": state.z_scale_init}
        metrics = {k: metrics.get(k) for k in (*FINAL, *model.terms)} | {"linear_top1": linear_top1(cfg, data, features)}
    log.info("epoch 0 (untrained): z_std %.4f rank_z %.1f rank_h %.1f knn %.1f%% linear %.1f%%", metrics["z_std"],
             metrics["rank_z"], metrics["rank_h"], metrics["knn_top1"], metrics["linear_top1"])
    return metrics


@torch.no_grad()
def estimate_bn_stats(model: Baseline | JointEmbedding, data, cfg: DictConfig) -> None:
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
    metrics_init: dict | None = None  # the untrained initialization's metrics (epoch 0), summary.json's metrics_init
    before: dict = field(default_factory=dict)  # the evaluation row before ``last`` (``settled`` compares them)
    checkpoint_saved: bool = True   # the newest checkpoint write succeeded (a failed last one fails the run)
    step_modes: list = field(default_factory=list)  # [first epoch, train.view_parallel resolved] per resumed stretch
    features: tuple | None = field(default=None, repr=False)  # (step, features) of the newest evaluation, not saved


def _train(cfg: DictConfig, run_dir: Path) -> dict:
    writer = D.world()[0] == 0
    if not writer:  # one log for the job
        log.setLevel(logging.WARNING)
    check_config(cfg)
    finished = finished_run(run_dir, writer)
    if finished is not None:
        return finished
    t_start = time.time()
    _log_switches(cfg)
    if writer:
        drop_derived(run_dir)  # linear_eval.json of the weights this run is about to change
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))  # replaced, never through a link
    device, data, model, stepper = setup_run(cfg)
    state = resume(run_dir, cfg, model, stepper, data, t_start, writer)
    logger = make_logger(cfg, run_dir, state.logger_id) if writer else NullLogger()
    state.logger_id = logger.run_id
    progress = Progress(cfg.train.epochs, stepper.steps_per_epoch)
    diverged = train_epochs(state, model, stepper, data, cfg, device, run_dir if writer else None, progress, logger)
    summary = run_summary(cfg, state, model, stepper, data, diverged,
                          None if diverged is not None else final_features(state, model, stepper, data, cfg))
    if not state.checkpoint_saved:  # the tools would read the previous epoch's weights as this run's
        summary.update(status="failed", error=f"the epoch {state.epoch} checkpoint could not be written (see the "
                       f"warning above); free disk space and run the same command again to train that epoch again")
    if writer:
        write_summary(run_dir, summary, logger)
        if state.checkpoint_saved:
            finish_checkpoints(run_dir, cfg.checkpoint.keep)
    return summary


def finished_run(run_dir: Path, writer: bool) -> dict | None:
    """The summary of the finished run ``run_dir`` holds already (left as it is), or None: train."""
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
    finished = finished_summary(run_dir / "summary.json", keep_copy=writer)
    if finished is not None:
        version = finished.get("ablate_version")
        log.warning("%s already holds a finished run%s; leaving it as it is (choose another hydra.run.dir "
                    "to train again)", run_dir, "" if version == __version__ else f" (written by ablate {version})")
    return finished


def setup_run(cfg: DictConfig):
    """The device, the data on it, the model and its step, seeded: every rank builds the same initial model,
    then draws its own augmentations."""
    rank, n_ranks = D.world()
    device = D.pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if device.type == "cpu" and cfg.train.deterministic:
        deterministic_kernels()
    data = load_data(cfg.data, cfg.eval, cfg.seed).to(device)
    if len(data.test_x) < MIN_EVAL_IMAGES:  # eval.test_size is checked up front; a small test split only here
        raise ConfigError(f"the {cfg.data.name} test split holds {len(data.test_x)} images; a verdict needs at least "
                          f"{MIN_EVAL_IMAGES} held-out images: give the data a larger test split")
    model, stepper = build_runner(cfg, data, device)
    if n_ranks > 1:  # same initial model everywhere (DDP broadcasts it too), own augmentations per rank
        torch.manual_seed(cfg.seed + rank)
    log.info("data %s: %d training images, device %s, %d steps of %d%s, lr %.4g", cfg.data.name,
             len(data.ssl_x), device, stepper.total, stepper.batch_size,
             f" ({n_ranks} processes x {stepper.local_batch})" if n_ranks > 1 else "", stepper.base_lr)
    return device, data, model, stepper


def train_epochs(state: RunState, model, stepper: Stepper, data, cfg: DictConfig, device: torch.device,
                 run_dir: Path | None, progress: Progress, logger) -> float | None:
    """The epochs from ``state.epoch`` on, each evaluated when due and checkpointed (``run_dir`` None: not this
    rank's files); returns the non-finite loss that stopped training, or None."""
    last_epoch = cfg.train.epochs if state.stopped_early is None else state.epoch
    if cfg.method.get("baseline") == "random":  # no training step: BN statistics, then the same evaluation
        last_epoch = state.epoch
        evaluate_untrained(state, model, stepper, data, cfg, device, run_dir, progress, logger)
    ckpts = CheckpointWriter(cfg.checkpoint.get("background", False))
    every = cfg.checkpoint.get("every", 1)
    for epoch in range(state.epoch, last_epoch):
        terms, diverged = train_epoch(stepper, data, cfg, progress, epoch)
        if diverged is not None:
            state.last.update(terms)
            ckpts.join()
            state.checkpoint_saved = ckpts.saved
            return diverged
        if (epoch + 1) % cfg.eval.every == 0 or epoch == cfg.train.epochs - 1:
            record_evaluation(state, evaluation_row(state, terms, model, stepper, data, cfg, epoch),
                              model, data, cfg, run_dir, progress, logger)
        state.epoch = epoch + 1
        if state.epoch % every == 0 or state.epoch == last_epoch or state.stopped_early is not None:
            ckpt = checkpoint_state(state, model, stepper, cfg, device)  # every rank: it gathers RNG states
            if run_dir is not None:
                ckpts.save(run_dir, ckpt, cfg.checkpoint.keep)
        if state.stopped_early is not None:
            break
    ckpts.join()
    state.checkpoint_saved = ckpts.saved
    return None


def final_features(state: RunState, model, stepper: Stepper, data, cfg: DictConfig) -> tuple:
    """The held-out (bank_h, test_h, test_z) after the last step: the last evaluation's when no step followed
    it, else a new evaluation's."""
    fresh = state.features is not None and state.features[0] == stepper.step
    return state.features[1] if fresh else evaluate(model, data, cfg.data.image_size, cfg)[1]


def evaluate_untrained(state: RunState, model, stepper: Stepper, data, cfg: DictConfig, device: torch.device,
                       run_dir: Path | None, progress: Progress, logger) -> None:
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
    on = switches(cfg)
    for note in equivalences(cfg):
        log.info("note: %s", note)
    log.info("method %s, techniques: %s", cfg.method.name,
             ", ".join(f"{t}={'on' if on[t] else 'off'}" for t in SWITCHES))


def resume(run_dir: Path, cfg: DictConfig, model: JointEmbedding, stepper: Stepper, data, t_start: float,
           writer: bool) -> RunState:
    """The run's state from its newest checkpoint (model, optimizer, random state restored in place), or a
    fresh state, with an empty metrics.jsonl and the initial embedding scale, when there is none."""
    rank, n_ranks = D.world()
    metrics_path = run_dir / "metrics.jsonl"
    ckpt = load_checkpoint(run_dir)
    if ckpt is None:
        if writer:
            write_text(metrics_path, "")
        state = RunState(t_start, z_scale_init=initial_scale(model, data, cfg.data.image_size, cfg))
        state.metrics_init = evaluate_init(state, model, stepper, data, cfg)
        state.step_modes = [[0, stepper.view_parallel]]
        return state
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
    modes = list(ckpt.get("step_modes") or [])  # a resume may change the view mode (it is not in the config)
    if not modes or modes[-1][1] != stepper.view_parallel:
        modes.append([ckpt["epoch"], stepper.view_parallel])
    return RunState(t_start - ckpt["wall_s"], epoch=ckpt["epoch"], last=ckpt["last"], streak=ckpt["streak"],
                    stopped_early=ckpt["stopped_early"], z_scale_init=ckpt.get("z_scale_init"),
                    logger_id=ckpt.get("logger_id"), metrics_init=ckpt.get("metrics_init"),
                    before=ckpt.get("before") or {}, step_modes=modes)


def checkpoint_state(state: RunState, model: JointEmbedding, stepper: Stepper, cfg: DictConfig,
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
        "z_scale_init": state.z_scale_init, "metrics_init": state.metrics_init, "before": state.before,
        "step_modes": state.step_modes,
    }


def train_epoch(stepper: Stepper, data, cfg: DictConfig, progress: Progress, epoch: int):
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
    terms = zip(TERMS, (D.mean(running) / max(count, 1)).tolist())
    return {k: v for k, v in terms if k in stepper.model.terms}, diverged  # a switch that is off logs no term


def evaluation_row(state: RunState, terms: dict, model: JointEmbedding, stepper: Stepper, data,
                   cfg: DictConfig, epoch: int) -> dict:
    """The metrics.jsonl row of an evaluated epoch (``epoch=-1``: the random baseline's row 0, untrained)."""
    diag, features = evaluate(model, data, cfg.data.image_size, cfg)
    state.features = (stepper.step, features)  # the final probe's features when no step follows
    return {"epoch": epoch + 1, "step": stepper.step, **terms, **{k: float(v) for k, v in diag.items()},
            "z_scale_init": state.z_scale_init, "lr": stepper.lr, "tau": stepper.tau,
            "wall_s": round(time.time() - state.t_start, 2)}


def record_evaluation(state: RunState, row: dict, model: JointEmbedding, data, cfg: DictConfig,
                      run_dir: Path | None, progress: Progress, logger) -> None:
    """Append ``row`` to metrics.jsonl (``run_dir`` None: not this rank's job), log it, and count the
    evaluations in a row whose verdict is collapse for ``train.early_stop_collapse``."""
    if run_dir is not None:
        with open_nofollow(run_dir / "metrics.jsonl", "a") as f:  # never appends through a link
            f.write(json.dumps(row) + "\n")
    progress.epoch(row)
    logger.epoch(row)
    state.before, state.last = state.last, row
    early_stop = cfg.train.get("early_stop_collapse")
    if early_stop and not cfg.method.get("baseline"):  # a baseline has no verdict
        collapsed = verdict(row, model.dim, len(data.test_x), cfg.verdict, model.scale_free,
                            model.standardized)[0] == "collapse"
        state.streak = state.streak + 1 if collapsed else 0
        if state.streak >= early_stop:
            state.stopped_early = row["epoch"]
            log.info("stopping early: verdict collapse at %d consecutive evaluations (epoch %d, "
                     "train.early_stop_collapse=%d)", state.streak, state.stopped_early, early_stop)

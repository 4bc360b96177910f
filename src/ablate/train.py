"""The runner: one training loop in which the ablated algorithm is visible (cf. VICReg's main_vicreg.py).

    z = projector(backbone(x))                       online branch, both views
    p = predictor(z)              [predictor]        else p = z
    t = target(x) [ema] else z;   t = sg(t) [stop_grad]
    loss = w_inv * (D(p1, t2) + D(p2, t1)) / 2
         + w_var * (v(g(z1)) + v(g(z2))) / 2     [var]     (main_vicreg.py averages the branches)
         + w_cov * (c(g(z1)) + c(g(z2)))         [cov]
    g = identity [reg_geometry=raw] or z -> sqrt(d) z/|z| [sphere]; auto: sphere for cosine invariances
"""

import copy
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import __version__
from . import dist as D
from .augment import eval_view, two_views
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TECHNIQUES, ConfigError, check_config, techniques
from .data import FolderStream, load_data
from .diagnostics import (
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
from .ema import cosine_tau, make_target, update_momentum
from .logger import NullLogger, make_logger
from .losses import INVARIANCE, REG_GEOMETRIES, SCALE_FREE, covariance, reg_geometry, variance
from .models import build_encoder, build_predictor, embed
from .optim import build_optimizer, lr_at, param_groups, set_lr

log = logging.getLogger("ablate")
SCHEMA = 1
TERMS = ("loss", "loss_inv", "loss_var", "loss_cov")


class JointEmbedding(nn.Module):
    """Online encoder, optional predictor, optional EMA target; ``forward`` returns the loss terms."""

    def __init__(self, cfg: DictConfig):
        super().__init__()
        on = techniques(cfg)
        mult = cfg.model.head_width_mult
        self.online = build_encoder(cfg.backbone, cfg.method, cfg.get("batchnorm"), mult)
        dim = _out_dim(self.online.projector)
        self.predictor = build_predictor(cfg.predictor, cfg.get("batchnorm"), dim, mult) if on["predictor"] else None
        self.target = make_target(self.online) if on["ema"] else None
        self.stop_grad = on["stop_grad"]
        self.invariance = INVARIANCE[cfg.method.invariance]
        self.w_inv = float(cfg.method.inv_weight)
        self.var = cfg.var if on["var"] else None
        self.cov = cfg.cov if on["cov"] else None
        self.geometry = reg_geometry(cfg.reg_geometry, cfg.method.invariance)
        self.dim = dim

    def branches(self, x1, x2):
        """Online embeddings z, predictions p and targets t of both views, stop-gradient applied."""
        _, z1 = self.online(x1)
        _, z2 = self.online(x2)
        p1, p2 = (self.predictor(z1), self.predictor(z2)) if self.predictor is not None else (z1, z2)
        if self.target is not None:
            with torch.no_grad():  # the EMA copy never receives gradient, stop_grad or not
                t1, t2 = self.target(x1)[1], self.target(x2)[1]
        else:
            t1, t2 = z1, z2
        if self.stop_grad:
            t1, t2 = t1.detach(), t2.detach()
        return z1, z2, p1, p2, t1, t2

    def loss(self, z1, z2, p1, p2, t1, t2):
        """Weighted sum of the switched-on terms, computed in fp32; also returns the unweighted terms."""
        z1, z2, p1, p2, t1, t2 = (t.float() for t in (z1, z2, p1, p2, t1, t2))
        inv = 0.5 * (self.invariance(p1, t2) + self.invariance(p2, t1))
        loss = self.w_inv * inv
        var = cov = torch.zeros((), device=inv.device)
        if self.var is not None or self.cov is not None:  # statistics of the global batch under torchrun
            g = REG_GEOMETRIES[self.geometry]
            z1, z2 = D.gather(g(z1)), D.gather(g(z2))
        if self.var is not None:
            var = 0.5 * (variance(z1, self.var.gamma, self.var.eps) + variance(z2, self.var.gamma, self.var.eps))
            loss = loss + self.var.weight * var
        if self.cov is not None:
            cov = covariance(z1) + covariance(z2)
            loss = loss + self.cov.weight * cov
        return loss, torch.stack([loss.detach(), inv.detach(), var.detach(), cov.detach()])

    def forward(self, x1, x2):
        return self.loss(*self.branches(x1, x2))


def _out_dim(seq: nn.Sequential) -> int:
    return [m for m in seq if isinstance(m, nn.Linear)][-1].out_features


def equivalences(cfg) -> list[str]:
    on = techniques(cfg)
    notes = []
    if on["ema"] and not on["stop_grad"]:
        notes.append("ema without stop_grad is the same computation as ema with stop_grad: the EMA target copy "
                     "receives no gradient (it moves only by the momentum update)")
    return notes


def pick_device(cfg) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _auto(value, default: bool) -> bool:
    return default if value == "auto" else bool(value)


class Progress:
    """A one-line progress bar on a terminal; on a pipe, one log line per epoch."""

    def __init__(self, epochs: int):
        self.epochs, self.tty = epochs, sys.stderr.isatty()

    def step(self, epoch, frac, loss):
        if self.tty:
            bar = "#" * int(20 * frac)
            sys.stderr.write(f"\repoch {epoch + 1}/{self.epochs} [{bar:<20}] loss {loss:.4f}   ")
            sys.stderr.flush()

    def epoch(self, row):
        line = (f"epoch {row['epoch']}/{self.epochs} loss {row['loss']:.4f} z_std {row['z_std']:.4f} "
                f"(ref {row['z_std_ref']:.4f}) rank_z {row['rank_z']:.1f} rank_h {row['rank_h']:.1f} "
                f"knn {row['knn_top1']:.1f}%")
        if self.tty:
            sys.stderr.write("\r" + " " * 70 + "\r")
        log.info(line)


def write_json(path: Path, obj) -> None:
    """Atomic write: a reader never sees half a file, and a crash leaves the old one intact."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_complete(summary_path: Path) -> bool:
    try:
        return json.loads(summary_path.read_text()).get("status") in ("complete", "diverged")
    except (OSError, ValueError, AttributeError):
        return False


def finished_summary(summary_path: Path, keep_copy: bool = True) -> dict | None:
    """The summary of a finished run in this directory, None when there is nothing to keep (no summary, or a
    failed run). A summary that cannot be read, or an unfinished one from another schema, may still be
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
        if status in ("complete", "diverged"):
            return summary
        if status == "failed" or (schema == SCHEMA and status is None):
            return None
        problem = f"has status {status!r} from schema {schema!r} (this version writes schema {SCHEMA})"
    keep = summary_path.with_name(summary_path.name + ".unreadable")
    if keep_copy and not keep.exists():
        keep.write_bytes(summary_path.read_bytes())
    raise ConfigError(f"{summary_path} {problem}; it may hold a finished run, so nothing was overwritten (copy "
                      f"in {keep.name}): move it away to train here, or choose another hydra.run.dir")


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


def _config_diff(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _config_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def _resumable_config(cfg) -> dict:
    """The config a checkpoint must match; where logs go does not change what is trained."""
    c = OmegaConf.to_container(cfg, resolve=True)
    c.pop("logger", None)
    return c


@torch.no_grad()
def evaluate(model: JointEmbedding, data, size, cfg) -> dict:
    """Diagnostics on the fixed held-out set: device tensors, read by the caller once."""
    norm = lambda x: eval_view(x, size, data.mean, data.std)  # noqa: E731
    bank_h, _ = embed(model.online, data.bank_x, norm, cfg.eval.batch_size)
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


def optimizer_for(model: JointEmbedding, optim_cfg, lr: float) -> torch.optim.Optimizer:
    """The configured optimizer over the online encoder and the predictor (the EMA target is not trained)."""
    return build_optimizer(param_groups({"online": model.online, "predictor": model.predictor}, optim_cfg),
                           optim_cfg, lr)


class Stepper:
    """One optimisation step of the runner: batched augmentation on the device, forward under autocast,
    backward, optimizer step, EMA update. Returns the loss terms as a device tensor (no host sync)."""

    def __init__(self, model: JointEmbedding, cfg: DictConfig, data, device: torch.device, n_train: int):
        cuda = device.type == "cuda"
        self.model, self.cfg, self.device = model, cfg, device
        self.mean, self.std, self.size = data.mean, data.std, cfg.data.image_size
        self.mem_format = memory_format(cfg, device)
        self.bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and cuda)
        self.batch_size = cfg.train.batch_size
        self.rank, self.world = D.world()
        if self.batch_size % self.world:
            raise ConfigError(f"train.batch_size={self.batch_size} does not split over {self.world} processes; "
                              f"use a multiple of {self.world}")
        self.local_batch = self.batch_size // self.world
        self.steps_per_epoch = n_train // self.batch_size
        if self.steps_per_epoch < 1:
            raise ConfigError(f"train.batch_size={self.batch_size} exceeds the {n_train} training images; "
                              f"lower train.batch_size")
        self.total = cfg.train.epochs * self.steps_per_epoch
        self.warmup = cfg.train.warmup_epochs * self.steps_per_epoch
        self.base_lr = cfg.optim.lr * self.batch_size / 256
        self.opt = optimizer_for(model, cfg.optim, self.base_lr)
        self.forward = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.forward = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
        if cfg.train.compile:
            self.forward = torch.compile(self.forward)
        self.step, self.lr, self.tau = 0, None, None

    def epoch_batches(self, images):
        """A fresh permutation on the device, cut into full batches of uint8 images (this rank's slice of
        each under torchrun: rank 0's permutation is everyone's)."""
        bs, lo = self.batch_size, self.rank * self.local_batch
        if isinstance(images, FolderStream):  # decoded by DataLoader workers in an order all ranks share
            seed = int(D.broadcast_order(torch.randint(0, 2**62, (1,), device=self.device)).item())
            yield from images.epoch_batches(seed, bs, lo, self.local_batch, self.steps_per_epoch)
            return
        order = D.broadcast_order(torch.randperm(len(images), device=images.device))
        for s in range(self.steps_per_epoch):
            yield images[order[s * bs + lo:s * bs + lo + self.local_batch]]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.update(*two_views(images, self.cfg.aug, self.size, self.mean, self.std))

    def update(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The step on two given views (the distributed test feeds identical views to 1 and N processes)."""
        cfg = self.cfg
        self.lr = lr_at(self.step, self.total, self.warmup, self.base_lr, cfg.optim.final_lr_frac)
        set_lr(self.opt, self.lr)
        x1, x2 = x1.contiguous(memory_format=self.mem_format), x2.contiguous(memory_format=self.mem_format)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss, terms = self.forward(x1, x2)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.model.target is not None:
            self.tau = cosine_tau(self.step, self.total, cfg.ema.base_tau, cfg.ema.final_tau)
            update_momentum(self.model.online, self.model.target, self.tau)
        self.step += 1
        return terms


def memory_format(cfg: DictConfig, device: torch.device) -> torch.memory_format:
    """channels_last for the model and its inputs: on for CUDA under ``train.channels_last=auto``."""
    return torch.channels_last if _auto(cfg.train.channels_last, device.type == "cuda") else torch.contiguous_format


def build_runner(cfg: DictConfig, data, device: torch.device) -> tuple[JointEmbedding, Stepper]:
    """The model and its training step, as ``train`` uses them (also used by ``ablate.bench``)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = JointEmbedding(cfg)
    if D.world()[1] > 1:
        model = D.sync_batchnorm(model, device)
    model = model.to(device, memory_format=memory_format(cfg, device))
    return model, Stepper(model, cfg, data, device, len(data.train_x))


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


def _train(cfg: DictConfig, run_dir: Path) -> dict:
    rank, n_ranks = D.world()
    writer = rank == 0
    if not writer:  # one log for the job
        log.setLevel(logging.WARNING)
    check_config(cfg)
    early_stop = cfg.train.get("early_stop_collapse")
    if early_stop is not None and (not isinstance(early_stop, int) or isinstance(early_stop, bool) or early_stop < 1):
        raise ConfigError(f"train.early_stop_collapse={early_stop} must be an integer >= 1 (evaluations), or null "
                          f"to never stop early")
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
    summary_path = run_dir / "summary.json"
    finished = finished_summary(summary_path, keep_copy=writer)
    if finished is not None:
        version = finished.get("ablate_version")
        log.warning("%s already holds a finished run%s; leaving it as it is (choose another hydra.run.dir "
                    "to train again)", run_dir, "" if version == __version__ else f" (written by ablate {version})")
        return finished
    t_start = time.time()
    on = techniques(cfg)
    for note in equivalences(cfg):
        log.info("note: %s", note)
    log.info("method %s, techniques: %s", cfg.method.name,
             ", ".join(f"{t}={'on' if on[t] else 'off'}" for t in TECHNIQUES))
    if writer:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)

    device = D.device(cfg) or pick_device(cfg)
    torch.manual_seed(cfg.seed)
    if device.type == "cpu" and cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    data = load_data(cfg.data, cfg.eval, cfg.seed).to(device)
    model, stepper = build_runner(cfg, data, device)
    if n_ranks > 1:  # same initial model everywhere (DDP broadcasts it too), own augmentations per rank
        torch.manual_seed(cfg.seed + rank)
    log.info("data %s: %d training images, device %s, %d steps of %d%s, lr %.4g", cfg.data.name,
             len(data.train_x), device, stepper.total, stepper.batch_size,
             f" ({n_ranks} processes x {stepper.local_batch})" if n_ranks > 1 else "", stepper.base_lr)

    metrics_path = run_dir / "metrics.jsonl"
    last, diverged, start, streak, stopped_early = {}, None, 0, 0, None
    state = load_checkpoint(run_dir)
    if state is not None:
        diff = _config_diff(state["config"], _resumable_config(cfg))
        if diff:
            raise ConfigError(f"{run_dir} holds a checkpoint of another configuration ({'; '.join(diff[:3])}); "
                              f"run the same command to resume, or choose another hydra.run.dir")
        model.load_state_dict(state["model"])
        stepper.opt.load_state_dict(state["opt"])
        stepper.step, stepper.lr, stepper.tau = state["step"], state["lr"], state["tau"]
        if len(state["rng_cpu"]) == n_ranks:
            torch.set_rng_state(state["rng_cpu"][rank])
            if device.type == "cuda" and state.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(state["rng_cuda"][rank], device)
        else:  # another number of processes: the data order and augmentations cannot be replayed exactly
            log.warning("checkpoint written by %d process(es), resumed by %d: random draws differ from an "
                        "uninterrupted run", len(state["rng_cpu"]), n_ranks)
            torch.manual_seed(cfg.seed + rank + 1000 * state["epoch"])
        start, last, streak, stopped_early = state["epoch"], state["last"], state["streak"], state["stopped_early"]
        t_start -= state["wall_s"]
        if writer:
            rows = _resume_rows(metrics_path, start)
            write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
        log.info("resuming from the epoch %d checkpoint in %s (step %d)", start, run_dir, stepper.step)
    elif writer:
        metrics_path.write_text("")
    # a resumed run keeps the scale of its own initialization (None from checkpoints that predate it)
    z_scale_init = state.get("z_scale_init") if state else initial_scale(model, data, cfg.data.image_size, cfg)
    scale_free = cfg.method.invariance in SCALE_FREE
    logger = make_logger(cfg, run_dir, state.get("logger_id") if state else None) if writer else NullLogger()
    progress = Progress(cfg.train.epochs)
    for epoch in range(start, cfg.train.epochs if stopped_early is None else start):
        model.train()
        running = torch.zeros(len(TERMS), device=device)
        count = 0
        for s, batch in enumerate(stepper.epoch_batches(data.train_x)):
            running += stepper(batch)
            count += 1
            if stepper.step % cfg.train.log_every == 0 or s == stepper.steps_per_epoch - 1:
                mean_loss = (D.mean(running[0]) / count).item()  # the one host read per interval
                if not math.isfinite(mean_loss):
                    diverged = mean_loss
                    break
                progress.step(epoch, (s + 1) / stepper.steps_per_epoch, mean_loss)
        terms_mean = (D.mean(running) / max(count, 1)).tolist()
        if diverged is not None:
            last.update(dict(zip(TERMS, terms_mean)))
            break
        if (epoch + 1) % cfg.eval.every == 0 or epoch == cfg.train.epochs - 1:
            diag, _ = evaluate(model, data, cfg.data.image_size, cfg)
            row = {"epoch": epoch + 1, "step": stepper.step, **dict(zip(TERMS, terms_mean)),
                   **{k: float(v) for k, v in diag.items()}, "z_scale_init": z_scale_init,
                   "lr": stepper.lr, "tau": stepper.tau,
                   "wall_s": round(time.time() - t_start, 2)}
            if writer:
                with metrics_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            progress.epoch(row)
            logger.epoch(row)
            last = row
            if early_stop:
                collapsed = verdict(row, model.dim, len(data.test_x), cfg.verdict, scale_free)[0] == "collapse"
                streak = streak + 1 if collapsed else 0
                if streak >= early_stop:
                    stopped_early = epoch + 1
                    log.info("stopping early: verdict collapse at %d consecutive evaluations (epoch %d, "
                             "train.early_stop_collapse=%d)", streak, stopped_early, early_stop)
        # RNG states (every rank's) at the epoch boundary: a resumed run draws the same permutations and
        # augmentations
        rng_cpu = D.gather_objects(torch.get_rng_state())
        rng_cuda = D.gather_objects(torch.cuda.get_rng_state(device)) if device.type == "cuda" else None
        if writer:
            save_checkpoint(run_dir, {
                "schema": SCHEMA, "ablate_version": __version__, "epoch": epoch + 1, "step": stepper.step,
                "lr": stepper.lr, "tau": stepper.tau, "model": model.state_dict(), "opt": stepper.opt.state_dict(),
                "rng_cpu": rng_cpu, "rng_cuda": rng_cuda, "last": last, "streak": streak,
                "stopped_early": stopped_early, "wall_s": time.time() - t_start, "config": _resumable_config(cfg),
                "logger_id": logger.run_id, "processes": n_ranks, "z_scale_init": z_scale_init,
            })
        if stopped_early is not None:
            break

    summary = {
        "schema": SCHEMA, "ablate_version": __version__, "status": "complete",
        "method": cfg.method.name, "techniques": on, "reg_geometry": model.geometry,
        "data": cfg.data.name, "backbone": cfg.backbone.name, "seed": cfg.seed,
        "epochs": cfg.train.epochs, "epochs_completed": last.get("epoch", 0), "batch_size": stepper.batch_size,
        "embedding_dim": model.dim, "num_classes": data.num_classes, "chance_top1": 100 / data.num_classes,
        "device": str(device), "processes": n_ranks, "equivalences": equivalences(cfg),
        "overrides": _overrides(), "choices": _choices(),
    }
    summary["stopped_early_epoch"] = stopped_early  # null unless train.early_stop_collapse stopped the run
    if diverged is not None:
        summary.update(status="diverged", verdict="diverged", verdict_reason=f"non-finite loss ({diverged}) at "
                       f"step {stepper.step}", metrics={k: v for k, v in last.items() if k in TERMS})
        summary["metrics"]["loss"] = diverged
    else:
        _, (bank_h, test_h, test_z) = evaluate(model, data, cfg.data.image_size, cfg)
        lp = cfg.eval.linear
        linear = 100 * linear_probe(bank_h, data.bank_y, test_h, data.test_y, data.num_classes, lp.epochs,
                                    lp.batch_size, lp.lr, lp.weight_decay, cfg.seed)
        metrics = {k: last.get(k) for k in ("knn_top1", "z_std", "z_std_ref", "z_scale", "z_scale_init", "h_std",
                                            "rank_z", "rank_h", *TERMS)}
        metrics["linear_top1"] = linear
        v, reason = verdict(metrics, model.dim, len(test_z), cfg.verdict, scale_free)
        summary.update(verdict=v, verdict_reason=reason, metrics=metrics,
                       spectrum_z=[float(x) for x in spectrum(test_z).cpu()])
    summary["verdict_thresholds"] = OmegaConf.to_container(cfg.verdict)
    summary["protocol"] = {
        "knn_top1": KNN_PROTOCOL.format(k=cfg.eval.knn_k, t=cfg.eval.knn_t, bank=len(data.bank_x)),
        "linear_top1": LINEAR_PROTOCOL.format(n=len(data.bank_x), lr=cfg.eval.linear.lr,
                                              bs=cfg.eval.linear.batch_size, wd=cfg.eval.linear.weight_decay,
                                              epochs=cfg.eval.linear.epochs),
        "eval_set": f"{len(data.test_x)} held-out {cfg.data.name} images",
        "units": "top-1 in percent",
    }
    summary["wall_s"] = round(time.time() - t_start, 2)
    if not writer:
        return summary
    write_json(summary_path, summary)
    logger.finish(summary)
    m = summary["metrics"]
    log.info("verdict %s (%s); kNN %.1f%%, linear %.1f%%, %.0f s -> %s", summary["verdict"],
             summary["verdict_reason"], m.get("knn_top1", float("nan")), m.get("linear_top1", float("nan")),
             summary["wall_s"], summary_path)
    return summary


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

"""Optional experiment loggers next to metrics.jsonl (which stays the source of truth): wandb, TensorBoard, CSV.

A logger failure must never cost a run: every logger call is guarded, and the first failure is logged and
switches the logger off for the rest of the run.
"""

import csv
import json
import logging
import os
import uuid

from omegaconf import OmegaConf

from ..config import TECHNIQUES, techniques

log = logging.getLogger("ablate")


class NullLogger:
    run_id = None

    def epoch(self, row: dict) -> None:
        pass

    def finish(self, summary: dict) -> None:
        pass


class WandbLogger:
    """Weights & Biases: name = the run directory, group = the sweep, tags = the six switches."""

    def __init__(self, cfg, run_dir, run_id: str | None):
        self.run, self.run_id = None, run_id or uuid.uuid4().hex[:12]  # kept in the checkpoint: a resume continues
        lc = cfg.logger
        on = techniques(cfg)
        tags = [f"{t}={'on' if on[t] else 'off'}" for t in TECHNIQUES] + list(lc.tags or [])
        self._guard("init", self._init, lc, run_dir, tags, OmegaConf.to_container(cfg, resolve=True))

    def _init(self, lc, run_dir, tags, config):
        import wandb

        self.run = wandb.init(project=lc.project, entity=lc.entity, name=run_dir.name, group=lc.group or _sweep(),
                              tags=tags, config=config, id=self.run_id, resume="allow", mode=lc.mode,
                              dir=os.environ.get("WANDB_DIR", str(run_dir)), reinit="create_new")

    def _guard(self, what, fn, *args):
        try:
            fn(*args)
        except Exception as e:  # wandb raises many types (network, auth, service); none may stop training
            log.warning("wandb %s failed (%s: %s); wandb logging is off for this run, training continues and "
                        "metrics.jsonl has every metric", what, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            self.run = None

    def epoch(self, row: dict) -> None:
        if self.run is not None:
            self._guard("log", self._log, {k: v for k, v in row.items() if v is not None})

    def _log(self, row):
        self.run.log(row, step=row["epoch"])

    def finish(self, summary: dict) -> None:
        if self.run is not None:
            self._guard("finish", self._finish, summary)

    def _finish(self, summary):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import wandb

        final = {k: v for k, v in summary.get("metrics", {}).items() if isinstance(v, (int, float))}
        self.run.summary.update({**final, "verdict": summary.get("verdict"),
                                 "stopped_early_epoch": summary.get("stopped_early_epoch")})
        if summary.get("spectrum_z"):
            fig, ax = plt.subplots(figsize=(5, 3.5))
            ax.semilogy([max(x, 1e-12) for x in summary["spectrum_z"]])
            ax.set(xlabel="index", ylabel="eigenvalue of Cov(z)", title=f"embedding spectrum ({summary['verdict']})")
            fig.tight_layout()
            self.run.log({"spectrum_z": wandb.Image(fig)})
            plt.close(fig)
        self.run.finish()
        self.run = None


class _Guarded:
    """A file logger whose first failure is logged once and switches it off; training never stops for it."""

    name = "logger"
    on = True

    def _guard(self, what, fn, *args):
        if not self.on:
            return
        try:
            fn(*args)
        except Exception as e:  # a full disk, a missing package, a broken writer: none may stop training
            log.warning("%s %s failed (%s: %s); %s logging is off for this run, training continues and "
                        "metrics.jsonl has every metric", self.name, what, type(e).__name__,
                        str(e).splitlines()[0] if str(e) else "", self.name)
            self.on = False


def _jsonl_rows(run_dir) -> list[dict]:
    """The rows of the run's metrics.jsonl as the runner left them before the first epoch of this process
    (emptied for a fresh run, cut back to the checkpoint's epoch for a resumed one)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


class CsvLogger(_Guarded):
    """``metrics.csv`` in the run directory: a header and one row per metrics.jsonl row, same fields; on a
    resume it is rewritten from metrics.jsonl first, so rows after the checkpoint are never duplicated.
    The final metrics and verdict go to ``summary.csv`` (a header and one row)."""

    name, run_id = "csv", None

    def __init__(self, cfg, run_dir, run_id=None):
        self.path, self.fields = run_dir / "metrics.csv", []
        self._guard("init", self._rewrite, _jsonl_rows(run_dir))

    def _rewrite(self, rows):
        for row in rows:
            self.fields += [k for k in row if k not in self.fields]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with tmp.open("w", newline="") as f:
            if self.fields:  # a fresh run starts from an empty file; the header comes with the first row
                w = csv.DictWriter(f, self.fields)
                w.writeheader()
                w.writerows(rows)
        os.replace(tmp, self.path)

    def epoch(self, row: dict) -> None:
        self._guard("log", self._append, row)

    def _append(self, row):
        if any(k not in self.fields for k in row):  # a field this file has no column for: widen the header
            self._rewrite([*_read_csv(self.path), row])
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)

    def finish(self, summary: dict) -> None:
        self._guard("finish", self._finish, summary)

    def _finish(self, summary):
        final = {**summary.get("metrics", {}), "verdict": summary.get("verdict"),
                 "verdict_reason": summary.get("verdict_reason"), "stopped_early_epoch": summary.get("stopped_early_epoch")}
        with (self.path.parent / "summary.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, list(final))
            w.writeheader()
            w.writerow(final)


def _read_csv(path) -> list[dict]:
    with path.open(newline="") as f:
        return [{k: _value(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _value(text: str):
    """A CSV cell back as the JSON value it was written from: numbers, and None for an empty cell."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


class TensorBoardLogger(_Guarded):
    """TensorBoard event files in ``<run dir>/tensorboard`` (or ``logger.dir``): each metrics.jsonl field as a
    scalar of the same name at step = epoch, the final metrics as ``final/<name>``, the verdict as text and the
    switches and settings as hparams (``run_hparams``).
    A resumed run purges the events after its checkpoint's epoch, so TensorBoard shows one curve."""

    name, run_id = "tensorboard", None

    def __init__(self, cfg, run_dir, run_id=None):
        self.writer = None
        rows = _jsonl_rows(run_dir)
        last = rows[-1]["epoch"] if rows else 0
        log_dir = cfg.logger.get("dir") or run_dir / "tensorboard"
        self._guard("init", self._init, str(log_dir), last + 1)

    def _init(self, log_dir, purge_step):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=log_dir, purge_step=purge_step if purge_step > 1 else None)

    def epoch(self, row: dict) -> None:
        self._guard("log", self._log, row)

    def _log(self, row):
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(k, v, global_step=row["epoch"])
        self.writer.flush()

    def finish(self, summary: dict) -> None:
        self._guard("finish", self._finish, summary)

    def _finish(self, summary):
        step = summary.get("epochs_completed") or 0
        for k, v in summary.get("metrics", {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"final/{k}", v, global_step=step)
        self.writer.add_text("verdict", f"{summary.get('verdict')}: {summary.get('verdict_reason')}", global_step=step)
        self._hparams(summary, step)
        self.writer.close()
        self.on = False

    def _hparams(self, summary, step):
        """The run's switches and key settings in TensorBoard's HParams dashboard, against its ``final/``
        metrics, in this run's own event file (``add_hparams`` would open a directory of its own)."""
        from torch.utils.tensorboard.summary import hparams

        metrics = {f"final/{k}": v for k, v in summary.get("metrics", {}).items() if k in HPARAM_METRICS}
        for s in hparams(run_hparams(summary), metrics):
            self.writer.file_writer.add_summary(s, global_step=step)


# What the HParams dashboard compares runs by: the six switches, where var/cov act, and the settings that
# change the computation; the metrics it sets against them.
HPARAM_KEYS = ("method", "reg_geometry", "data", "backbone", "seed", "epochs", "batch_size", "embedding_dim",
               "device", "precision", "channels_last", "view_parallel", "compile", "compile_aug")
HPARAM_METRICS = ("knn_top1", "linear_top1", "z_std", "z_scale", "rank_z", "rank_h")


def run_hparams(summary: dict) -> dict:
    """A summary's switches (``ema`` ... ``cov``: "on" or "off", as the wandb tags say; TensorBoard would show a
    boolean as 1.0 or 0.0) and key settings, as TensorBoard's hparams take them (str, int or float; a boolean
    setting becomes "true" or "false", a missing value "none")."""
    out = {t: "on" if on else "off" for t, on in summary.get("techniques", {}).items()}
    out.update({k: summary.get(k) for k in HPARAM_KEYS})
    return {k: "none" if v is None else str(v).lower() if isinstance(v, bool) else v for k, v in out.items()}


LOGGERS = {"wandb": WandbLogger, "tensorboard": TensorBoardLogger, "csv": CsvLogger}


def make_logger(cfg, run_dir, run_id: str | None = None):
    lc = cfg.get("logger")
    if lc is None or lc.name == "none":
        return NullLogger()
    if lc.name in LOGGERS:
        return LOGGERS[lc.name](cfg, run_dir, run_id)
    raise ValueError(f"unknown logger '{lc.name}'; choose logger= one of: none, {', '.join(LOGGERS)}")


def _sweep() -> str | None:
    """The sweep directory's name in a Hydra multirun: the cells of one sweep form one wandb group."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return hc.sweep.dir.rstrip("/").replace("/", "_") if hc.mode == RunMode.MULTIRUN else None
    except (ImportError, ValueError):
        return None

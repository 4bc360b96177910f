"""Optional experiment loggers next to metrics.jsonl (which stays the source of truth).

A logger failure must never cost a run: every wandb call is guarded, and the first failure is logged and
switches the logger off for the rest of the run.
"""

import logging
import os
import uuid

from omegaconf import OmegaConf

from .config import TECHNIQUES, techniques

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


def make_logger(cfg, run_dir, run_id: str | None = None):
    lc = cfg.get("logger")
    if lc is None or lc.name == "none":
        return NullLogger()
    if lc.name == "wandb":
        return WandbLogger(cfg, run_dir, run_id)
    raise ValueError(f"unknown logger '{lc.name}'; choose logger=none or logger=wandb")


def _sweep() -> str | None:
    """The sweep directory's name in a Hydra multirun: the cells of one sweep form one wandb group."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return hc.sweep.dir.rstrip("/").replace("/", "_") if hc.mode == RunMode.MULTIRUN else None
    except (ImportError, ValueError):
        return None

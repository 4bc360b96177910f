"""A finished or running run directory, read back from its newest checkpoint (for the offline tools)."""

import json
from pathlib import Path

from omegaconf import OmegaConf

from ..errors import AblateError
from .checkpoint import CheckpointError, load_checkpoint


class RunError(AblateError):
    """A run directory a tool cannot read; the message is one line that says what to change."""


def load_run(run_dir: Path):
    """``(state, cfg)`` of the newest readable checkpoint in ``run_dir``: the checkpoint dict and the run's
    resolved config as a DictConfig. Raises RunError for a missing directory or checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory; pass a run directory (it holds checkpoint.pt)")
    try:
        state = load_checkpoint(run_dir)
    except CheckpointError as e:
        raise RunError(str(e)) from None
    if state is None:
        raise RunError(f"{run_dir} holds no checkpoint.pt: pass a run directory that trained at least one epoch")
    check_current(run_dir, state)
    return state, OmegaConf.create(state["config"])


def check_current(run_dir: Path, state: dict) -> None:
    """RunError when the run's summary counts more epochs than its newest checkpoint holds (the last
    checkpoint failed to write): the weights read would be an earlier epoch's, not the run's."""
    try:
        done = json.loads((Path(run_dir) / "summary.json").read_text()).get("epochs_completed")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(done, int) and done > state["epoch"]:
        raise RunError(f"{run_dir}: the newest checkpoint holds epoch {state['epoch']} but the run trained {done} "
                       f"(its last checkpoint was not written); run its training command again to restore it")


def load_model(state, cfg):
    """The run's model with the checkpoint's weights, on the CPU, in eval mode: a ``JointEmbedding``, or for a
    baseline run (``method.baseline``) its ``Baseline``, whose ``online`` encoder the tools read alike."""
    from ..method import Baseline, JointEmbedding

    if cfg.method.get("baseline"):
        head = state["model"].get("classifier.weight")
        model = Baseline(cfg, head.shape[0] if head is not None else 1)
    else:
        model = JointEmbedding(cfg)
    model.load_state_dict(state["model"])
    return model.eval()

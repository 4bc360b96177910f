"""checkpoint.keep: what a finished run leaves on disk (a 72-run sweep must not keep two checkpoints a cell)."""

import pytest
import torch
from conftest import TINY

from ablate.config import ConfigError, check_config
from ablate.run.checkpoint import CURRENT, PREVIOUS, read_checkpoint
from ablate.run.loop import train


@pytest.mark.parametrize("keep,left", [
    ("last", {CURRENT}),
    ("none", set()),
    ("all", {CURRENT, PREVIOUS, "checkpoint.epoch1.pt", "checkpoint.epoch2.pt"}),
])
def test_keep_decides_which_checkpoints_a_finished_run_leaves(cfg_factory, tmp_path, keep, left):
    torch.set_num_threads(1)
    train(cfg_factory("+method=simsiam", *TINY, "train.epochs=2", f"checkpoint.keep={keep}"), tmp_path)
    assert {p.name for p in tmp_path.glob("checkpoint*.pt")} == left
    if keep == "all":  # each epoch's file is that epoch's checkpoint
        assert read_checkpoint(tmp_path / "checkpoint.epoch1.pt")["epoch"] == 1
        assert read_checkpoint(tmp_path / CURRENT)["epoch"] == 2


def test_unknown_keep_is_one_line(cfg_factory):
    with pytest.raises(ConfigError, match="checkpoint.keep=some is unknown; choose one of: last, none, all"):
        check_config(cfg_factory("+method=simsiam", "checkpoint.keep=some"))

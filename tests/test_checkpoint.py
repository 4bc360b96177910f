"""Checkpoints (ablate.run.checkpoint): a damaged one falls back or fails clearly, a foreign file is rejected, a
full disk keeps the previous one, and checkpoint.keep decides what a finished run leaves."""

import errno
import logging

import pytest
import torch
from conftest import TINY, rows

from ablate.config import ConfigError, check_config
from ablate.run import checkpoint
from ablate.run.checkpoint import CURRENT, PREVIOUS, CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from ablate.run.loop import train

ARGS = ["+method=vicreg", *TINY, "train.epochs=2"]


def unfinished_run(cfg_factory, run):
    """A run whose two epochs are checkpointed but whose summary is missing (killed in the final probe)."""
    train(cfg_factory(*ARGS, "checkpoint.keep=all"), run)  # a finished run keeps both of its last checkpoints
    (run / "summary.json").unlink()
    return rows(run)


def test_truncated_checkpoint_falls_back_to_the_previous_one(cfg_factory, tmp_path, caplog):
    run = tmp_path / "run"
    want = unfinished_run(cfg_factory, run)
    data = (run / CURRENT).read_bytes()
    (run / CURRENT).write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.INFO, logger="ablate"):
        summary = train(cfg_factory(*ARGS), run)
    assert f"{run / CURRENT} is unusable (no integrity trailer" in caplog.text
    assert "resuming from the previous checkpoint" in caplog.text and "(epoch 1)" in caplog.text
    assert summary["status"] == "complete" and rows(run) == want  # epoch 2 trained again, identically


def test_corrupted_checkpoints_give_a_clear_error_and_stay(cfg_factory, tmp_path):
    run = tmp_path / "run"
    unfinished_run(cfg_factory, run)
    for name in (CURRENT, PREVIOUS):
        data = bytearray((run / name).read_bytes())
        data[len(data) // 3] ^= 0xFF  # inside the zip: torch.load alone would not notice
        (run / name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        read_checkpoint(run / CURRENT)
    before = {n: (run / n).read_bytes() for n in (CURRENT, PREVIOUS, "metrics.jsonl")}
    with pytest.raises(CheckpointError, match=r"no usable checkpoint in .*checksum mismatch.*delete checkpoint.pt "
                                              r"and checkpoint.prev.pt to train from scratch"):
        train(cfg_factory(*ARGS), run)
    assert {n: (run / n).read_bytes() for n in before} == before


def test_a_foreign_file_named_checkpoint_is_rejected(tmp_path):
    (tmp_path / CURRENT).write_text("my notes\n")
    with pytest.raises(CheckpointError, match="no integrity trailer"):
        load_checkpoint(tmp_path)


def test_full_disk_keeps_the_previous_checkpoint_and_the_run_goes_on(cfg_factory, tmp_path, monkeypatch, caplog):
    real_open = open

    class FullDisk:
        """A file that takes a few bytes, then fails as a full disk does."""

        def __init__(self, path, mode):
            self.f = real_open(path, mode)

        def write(self, data):
            self.f.write(data[:100])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    run = tmp_path / "run"
    run.mkdir()
    assert save_checkpoint(run, {"epoch": 1, "w": torch.ones(3)})
    monkeypatch.setattr(checkpoint, "open", FullDisk, raising=False)
    with caplog.at_level(logging.INFO, logger="ablate"):
        assert not save_checkpoint(run, {"epoch": 2, "w": torch.zeros(3)})
    assert f"could not write the epoch 2 checkpoint (the disk is full); the previous checkpoint {run / CURRENT} is " \
           f"kept; training continues" in caplog.text
    assert load_checkpoint(run)["epoch"] == 1 and sorted(p.name for p in run.iterdir()) == [CURRENT]
    # a whole run on a disk that fills up after the first epoch's checkpoint still trains to the end, and its
    # summary says the last checkpoint is missing (not complete: the tools would read epoch 1's weights)
    run2 = tmp_path / "run2"
    run2.mkdir()
    monkeypatch.undo()
    calls = []

    def save_then_fill(run_dir, state, keep):
        calls.append(state["epoch"])
        if len(calls) > 1:
            monkeypatch.setattr(checkpoint, "open", FullDisk, raising=False)
        return save_checkpoint(run_dir, state, keep)

    monkeypatch.setattr("ablate.run.checkpoint.save_checkpoint", save_then_fill)  # what CheckpointWriter calls
    summary = train(cfg_factory(*ARGS), run2)
    assert summary["status"] == "failed" and "epoch 2 checkpoint could not be written" in summary["error"]
    assert calls == [1, 2] and load_checkpoint(run2)["epoch"] == 1


@pytest.mark.parametrize("keep,left", [
    ("last", {CURRENT}),
    ("none", set()),
    ("all", {CURRENT, PREVIOUS, "checkpoint.epoch1.pt", "checkpoint.epoch2.pt"}),
])
def test_keep_decides_which_checkpoints_a_finished_run_leaves(cfg_factory, tmp_path, keep, left):
    train(cfg_factory("+method=simsiam", *TINY, "train.epochs=2", f"checkpoint.keep={keep}"), tmp_path)
    assert {p.name for p in tmp_path.glob("checkpoint*.pt")} == left
    if keep == "all":  # each epoch's file is that epoch's checkpoint
        assert read_checkpoint(tmp_path / "checkpoint.epoch1.pt")["epoch"] == 1
        assert read_checkpoint(tmp_path / CURRENT)["epoch"] == 2


def test_unknown_keep_is_one_line(cfg_factory):
    with pytest.raises(ConfigError, match="checkpoint.keep=some is unknown; choose one of: last, none, all"):
        check_config(cfg_factory("+method=simsiam", "checkpoint.keep=some"))

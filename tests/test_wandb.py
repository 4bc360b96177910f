"""logger=wandb in offline mode: a local wandb run directory with the per-epoch metrics and the spectrum plot,
no network; a failing wandb never stops training."""

import json
import logging

import pytest
from conftest import TINY

from ablate.run.loop import train

pytest.importorskip("wandb")


@pytest.fixture
def offline(tmp_path, monkeypatch, one_thread):
    import wandb

    for k, v in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield tmp_path
    wandb.teardown()  # stop the wandb service process this test started


def test_offline_run_writes_a_local_wandb_run_with_the_metrics(cfg_factory, offline):
    import wandb

    run = offline / "run"
    cfg = cfg_factory("+method=byol", *TINY, "train.epochs=2", "logger=wandb", "logger.tags=[smoke]")
    summary = train(cfg, run)
    wandb.teardown()  # run.finish() can return before the service has written the run file; teardown waits
    runs = list((offline / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = next(runs[0].glob("run-*.wandb")).read_bytes()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:  # every per-epoch value is in wandb's history, as wandb serializes it
        for key in ("loss", "knn_top1", "rank_z", "z_std"):
            assert key.encode() in records and json.dumps(row[key]).encode() in records, key
    for tag in (b"ema=on", b"var=off", b"smoke"):
        assert tag in records
    assert run.name.encode() in records and b"head_width_mult" in records  # run name and config
    assert list(runs[0].glob("files/media/images/spectrum_z_*.png"))
    assert summary["status"] == "complete"


def test_wandb_failure_is_logged_and_training_continues(cfg_factory, offline, monkeypatch, caplog):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("api.wandb.ai unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING, logger="ablate"):
        summary = train(cfg_factory("+method=byol", *TINY, "logger=wandb"), offline / "run")
    assert summary["status"] == "complete" and (offline / "run" / "metrics.jsonl").read_text().count("\n") == 1
    assert "wandb init failed (RuntimeError: api.wandb.ai unreachable); wandb logging is off for this run, " \
           "training continues" in caplog.text

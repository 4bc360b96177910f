"""The loggers (ablate.run.logger): csv and tensorboard hold the same per-epoch fields as metrics.jsonl with no
duplicate rows after a resume, wandb offline writes a local run, a failing logger never stops training; the
progress bar."""

import csv
import json
import logging
import os

import pytest
from conftest import TINY

from ablate.run.logger import _value
from ablate.run.loop import train


def jsonl(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def csv_rows(path):
    with path.open(newline="") as f:
        return [{k: _value(v) for k, v in r.items()} for r in csv.DictReader(f)]


def resume_after_epoch_2(cfg, run):
    """Train 3 epochs, then put back the epoch-2 checkpoint as if the run had been killed after writing the
    epoch-3 metrics but before its checkpoint, and run the same config again: epoch 3 is trained twice."""
    train(cfg, run)
    (run / "summary.json").unlink()
    os.replace(run / "checkpoint.prev.pt", run / "checkpoint.pt")
    return train(cfg, run)


def test_csv_rows_equal_metrics_jsonl_rows_also_after_a_resume(cfg_factory, tmp_path):
    run = tmp_path / "run"
    summary = resume_after_epoch_2(cfg_factory("+method=byol", *TINY, "train.epochs=3", "logger=csv",
                                                   "checkpoint.keep=all"), run)
    rows = jsonl(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == list(rows[0])
    assert csv_rows(run / "metrics.csv") == rows  # same fields, same values, epoch 3 once
    final = csv_rows(run / "summary.csv")
    assert len(final) == 1 and final[0]["verdict"] == summary["verdict"]
    assert final[0]["linear_top1"] == summary["metrics"]["linear_top1"]


def test_tensorboard_has_every_field_as_a_scalar_and_one_curve_after_a_resume(cfg_factory, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    summary = resume_after_epoch_2(cfg_factory("+method=vicreg", *TINY, "train.epochs=3", "logger=tensorboard",
                                                   "checkpoint.keep=all"),
                                   run)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    rows = jsonl(run)
    tags = set(acc.Tags()["scalars"])
    fields = {k for k, v in rows[0].items() if k != "epoch" and v is not None}
    assert fields <= tags and "loss" in fields and "knn_top1" in fields
    for key in ("loss", "z_std", "rank_z", "knn_top1"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [1, 2, 3], key  # the first epoch-3 point was purged
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert acc.Scalars("final/linear_top1")[0].value == pytest.approx(summary["metrics"]["linear_top1"], rel=1e-6)
    hp = tensorboard_hparams(acc)
    switches = {t: "on" if on else "off" for t, on in summary["techniques"].items()}
    assert hp["session"] == {**switches, "method": "vicreg", "reg_geometry": summary["reg_geometry"],
                             "data": "shapes", "backbone": summary["backbone"], "seed": 0, "epochs": 3,
                             "batch_size": summary["batch_size"], "embedding_dim": summary["embedding_dim"],
                             "device": "cpu", "precision": summary["precision"],
                             "channels_last": str(summary["channels_last"]).lower(),
                             "view_parallel": str(summary["view_parallel"]).lower(),
                             "compile": "false", "compile_aug": "false"}
    assert hp["session"]["var"] == "on" and hp["session"]["ema"] == "off"
    assert {"final/linear_top1", "final/knn_top1", "final/rank_z"} <= hp["metrics"] <= tags  # charted against runs


def tensorboard_hparams(acc) -> dict:
    """The hparams a run recorded (name -> value) and the metric tags its experiment charts."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    data = {k: plugin_data_pb2.HParamsPluginData.FromString(v) for k, v in content.items()}
    start = data["_hparams_/session_start_info"].session_start_info
    session = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    metrics = {m.name.tag for m in data["_hparams_/experiment"].experiment.metric_infos}
    return {"session": {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in session.items()},
            "metrics": metrics}


@pytest.mark.parametrize("name", ["csv", "tensorboard"])
def test_a_failing_logger_is_logged_once_and_training_continues(cfg_factory, tmp_path, monkeypatch, caplog, name):
    run = tmp_path / "run"
    run.mkdir()
    if name == "csv":  # a directory where the file should go: every write fails
        (run / "metrics.csv").mkdir()
    else:
        import torch.utils.tensorboard

        def broken(*args, **kwargs):
            raise OSError("disk quota exceeded")

        monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", broken)
    with caplog.at_level(logging.WARNING, logger="ablate"):
        summary = train(cfg_factory("+method=byol", *TINY, "train.epochs=2", f"logger={name}"), run)
    assert summary["status"] == "complete" and len(jsonl(run)) == 2
    failures = [r.message for r in caplog.records if "logging is off" in r.message]
    assert len(failures) == 1 and failures[0].startswith(f"{name} init failed"), failures


def test_progress_bar_shows_rate_and_eta_on_a_terminal():
    import io

    from ablate.run.loop import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    bar = Progress(epochs=3, steps=10, file=out)
    bar.step(0, 0.5, 1.25)
    bar.step(0, 1.0, 1.0)
    assert bar.bar.n == 10
    text = out.getvalue()
    assert "epoch 1/3" in text and "step/s" in text and "loss=1.0000" in text and "<" in text  # rate, ETA
    bar.step(1, 0.2, 0.9)
    assert bar.bar_epoch == 1 and bar.bar.n == 2
    pipe = io.StringIO()
    quiet = Progress(epochs=3, steps=10, file=pipe)
    quiet.step(0, 0.5, 1.0)
    assert pipe.getvalue() == "" and quiet.bar is None


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """logger=wandb in offline mode: a local wandb run directory, no network (skipped where wandb is not
    installed)."""
    wandb = pytest.importorskip("wandb")

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

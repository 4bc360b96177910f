"""summary.json's one owner (ablate.run.summary): what a run records for a reader, and older files upgraded in
one place."""

import json
import logging

import pytest
import yaml
from conftest import TINY, make_cfg, rows

from ablate.config import ConfigError, conf_dir
from ablate.run.loop import train
from ablate.run.summary import PRESET_INVARIANCE, SCHEMA, read_summary, upgrade

# A schema-1 summary as ablate 0.1 wrote it (fields abridged): no invariance, scale_free, precision or layout.
OLD = {"schema": 1, "ablate_version": "0.1.0", "status": "complete", "method": "byol", "device": "cpu",
       "techniques": {"ema": True, "stop_grad": True, "predictor": True, "batchnorm": True, "var": False,
                      "cov": False}, "seed": 0, "verdict": "ok", "metrics": {"linear_top1": 41.5}}


def test_upgrade_fills_a_schema_1_summary():
    s = upgrade(OLD)
    assert s["invariance"] == "normalized_mse" and s["scale_free"] is True
    # no config: the precision is unknown; the layout's default, auto, meant NCHW on a CPU in fp32 or unknown
    assert s["precision"] is None and s["channels_last"] is False
    assert {k: s[k] for k in OLD} == OLD and "invariance" not in OLD  # a copy; the file's own fields kept
    # with the run's config.yaml: what ``auto`` meant then, bf16 and NHWC on CUDA only
    auto = {"train": {"precision": "auto", "channels_last": "auto"}}
    s = upgrade(OLD, auto)
    assert s["precision"] == "fp32" and s["channels_last"] is False
    s = upgrade({**OLD, "device": "cuda:0"}, auto)
    assert s["precision"] == "bf16" and s["channels_last"] is True
    s = upgrade(OLD, {"train": {"precision": "bf16", "channels_last": False}})
    assert s["precision"] == "bf16" and s["channels_last"] is False


@pytest.mark.parametrize("method, invariance, scale_free", [("simsiam", "neg_cosine", True), ("vicreg", "mse", False),
                                                            ("random", None, None), (None, None, None)])
def test_upgrade_reads_the_invariance_from_the_method(method, invariance, scale_free):
    s = upgrade({**OLD, "method": method})
    assert (s["invariance"], s["scale_free"]) == (invariance, scale_free)


def test_upgrade_prefers_the_config_and_keeps_recorded_fields():
    s = upgrade(OLD, {"method": {"name": "byol", "invariance": "mse"}})
    assert s["invariance"] == "mse" and s["scale_free"] is False
    new = {**OLD, "schema": SCHEMA, "invariance": "neg_cosine", "scale_free": True, "precision": "bf16",
           "channels_last": True}
    assert upgrade(new, {"train": {"precision": "fp32"}}) == new


@pytest.mark.parametrize("method", sorted(PRESET_INVARIANCE))
def test_the_preset_invariances_are_the_presets(method):
    preset = yaml.safe_load((conf_dir() / "method" / f"{method}.yaml").read_text())
    assert PRESET_INVARIANCE[method] == preset["method"]["invariance"]


def test_read_summary_upgrades_with_the_runs_config(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps(OLD))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"train": {"precision": "auto", "channels_last": "auto"}}))
    s = read_summary(tmp_path / "summary.json")
    assert s["invariance"] == "normalized_mse" and s["precision"] == "fp32" and s["channels_last"] is False
    for text in ("[1, 2]", "{not json", ""):
        (tmp_path / "summary.json").write_text(text)
        assert read_summary(tmp_path / "summary.json") is None
    assert read_summary(tmp_path / "missing.json") is None


@pytest.mark.parametrize("method, invariance, scale_free", [("vicreg", "mse", False), ("simsiam", "neg_cosine", True),
                                                            ("random", None, None)])
def test_a_run_records_its_invariance(tmp_path, method, invariance, scale_free):
    s = train(make_cfg(f"+method={method}", *TINY, "device=cpu", "train.view_parallel=false"), tmp_path)
    assert s["schema"] == SCHEMA == 2
    assert (s["invariance"], s["scale_free"]) == (invariance, scale_free)
    assert s["precision"] in ("fp32", "bf16") and isinstance(s["channels_last"], bool)
    on_disk = read_summary(tmp_path / "summary.json")
    assert on_disk == json.loads((tmp_path / "summary.json").read_text())  # nothing left to upgrade
    if method == "random":  # a baseline has no verdict to settle and is no cell to place
        assert s["verdict_settled"] is None and s["no_better_than_init"] is None
        assert s["metrics_init"]["linear_top1"] == s["metrics"]["linear_top1"]  # its initialization is the run


def test_a_run_places_itself_against_its_initialization(tmp_path, monkeypatch):
    """Each run evaluates its untrained initialization (metrics_init, the keys of metrics) without touching the
    training: the same rows and final metrics as a run that skips it."""
    cfg = make_cfg("+method=simsiam", *TINY, "device=cpu", "train.view_parallel=false", "train.epochs=2")
    s = train(cfg, tmp_path / "with")
    init = s["metrics_init"]
    assert init.keys() == s["metrics"].keys() and init["loss"] is None and 0 <= init["linear_top1"] <= 100
    assert init["z_scale_init"] == s["metrics"]["z_scale_init"] and init["rank_z"] > 0
    assert s["no_better_than_init"] is (s["metrics"]["linear_top1"] <= init["linear_top1"])
    assert isinstance(s["verdict_settled"], bool) and s["verdict_settled_reason"]
    monkeypatch.setattr("ablate.run.loop.evaluate_init", lambda *args: None)
    skipped = train(cfg, tmp_path / "without")
    assert skipped["metrics_init"] is None and skipped["no_better_than_init"] is None
    assert rows(tmp_path / "with") == rows(tmp_path / "without") and s["metrics"] == skipped["metrics"]


ARGS = ["+method=vicreg", *TINY, "train.epochs=2"]


@pytest.mark.parametrize("text,problem", [
    ('{"status": "compl', "is unreadable (Unterminated string"),
    ('["complete"]', "is unreadable (a JSON list, not an object)"),
    ('{"schema": 7, "status": "running"}', "has status 'running' from schema 7"),
])
def test_malformed_or_foreign_summary_is_never_overwritten(cfg_factory, tmp_path, text, problem):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(text)
    with pytest.raises(ConfigError, match="nothing was overwritten") as e:
        train(cfg_factory(*ARGS), run)
    assert problem in str(e.value) and "\n" not in str(e.value)
    assert (run / "summary.json").read_text() == text
    assert (run / "summary.json.unreadable").read_text() == text  # survives a sweep's failure record too
    assert not (run / "metrics.jsonl").exists()


def test_finished_summary_from_another_version_is_kept(cfg_factory, tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    text = json.dumps({"schema": 0, "ablate_version": "0.0.1", "status": "complete", "metrics": {}})
    (run / "summary.json").write_text(text)
    with caplog.at_level(logging.INFO, logger="ablate"):
        assert train(cfg_factory(*ARGS), run)["ablate_version"] == "0.0.1"
    assert "already holds a finished run (written by ablate 0.0.1)" in caplog.text
    assert (run / "summary.json").read_text() == text and not (run / "metrics.jsonl").exists()

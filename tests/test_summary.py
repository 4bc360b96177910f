"""Reading a run directory's summary.json (ablate.run.summary): a malformed or foreign summary is never
overwritten, a finished one from another version is kept."""

import json
import logging

import pytest
from conftest import TINY

from ablate.config import ConfigError
from ablate.run.loop import train

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

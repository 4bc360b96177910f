"""The run directory (ablate.run.rundir): one run per directory, a second process is refused, a killed run does not
block its resume, a refused or skipped run changes nothing, unrelated files are left alone, and which stored
configs count as the same config."""

import hashlib
import json
import os
import signal
from pathlib import Path

from conftest import TINY, one_error_line, popen, run_ablate, wait_for_claim
from omegaconf import OmegaConf

from ablate.run.checkpoint import CURRENT
from ablate.run.loop import train
from ablate.run.rundir import unique_dir


def snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(d.rglob("*"))}


def test_a_second_process_into_a_busy_directory_is_refused_and_the_first_result_is_intact(tmp_path):
    out = tmp_path / "run"
    args = ["+method=simsiam", *TINY, "train.epochs=3", f"hydra.run.dir={out}"]
    first = popen(*args, cwd=tmp_path)
    holder = wait_for_claim(out, first)
    os.kill(first.pid, signal.SIGSTOP)  # the first run holds the directory while the second starts
    try:
        second = run_ablate(*args, cwd=tmp_path, timeout=120)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    line = one_error_line(second)
    assert f"is in use by another run (pid {holder['pid']} on {holder['host']}" in line
    assert first.wait(timeout=300) == 0, first.communicate()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


def test_a_killed_run_does_not_block_its_own_resume(tmp_path):
    out = tmp_path / "run"
    args = ["+method=simsiam", *TINY, "train.epochs=3", f"hydra.run.dir={out}"]
    first = popen(*args, cwd=tmp_path)
    wait_for_claim(out, first)
    first.kill()  # SIGKILL: the lock file stays, the lock goes with the process
    first.wait()
    r = run_ablate(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


def test_default_directories_are_unique_per_process(tmp_path):
    base = tmp_path / "outputs" / "12-00-00_byol"
    dirs = [unique_dir(base) for _ in range(3)]
    assert [d.name for d in dirs] == ["12-00-00_byol", "12-00-00_byol-2", "12-00-00_byol-3"]


def test_a_refused_or_skipped_run_leaves_the_directory_byte_identical(tmp_path, refused):
    """A run, then the same command (skipped) and other configs (refused), these in this process: the CLI
    decides before it hands over to Hydra."""
    out = tmp_path / "run"
    args = ["+method=simsiam", *TINY, f"hydra.run.dir={out}"]
    assert run_ablate(*args, cwd=tmp_path).returncode == 0
    before = snapshot(out)
    r = refused(*args)  # the same config: skipped
    assert r.returncode == 0 and "already holds a finished run of this config" in r.stderr
    r = refused(*args, "train.epochs=2", "eval.knn_k=5")  # another config: refused
    line = one_error_line(r)
    assert "finished run of another config (eval.knn_k: 200 -> 5; train.epochs: 1 -> 2)" in line
    assert snapshot(out) == before
    (out / "summary.json").unlink()  # an unfinished run now (its checkpoint stays)
    before = snapshot(out)
    line = one_error_line(refused("+method=byol", *TINY, f"hydra.run.dir={out}"))
    assert "holds an unfinished run of another config" in line
    assert snapshot(out) == before


def test_a_run_stored_before_compile_aug_existed_reads_as_eager(cfg_factory):
    from ablate.run.rundir import config_diff as _config_diff
    from ablate.run.rundir import resumable_config as _resumable_config
    from ablate.run.rundir import upgrade_config

    def stored():
        old = _resumable_config(cfg_factory("+method=simsiam", *TINY))
        del old["train"]["compile_aug"]
        return old

    assert _config_diff(upgrade_config(stored()), _resumable_config(cfg_factory("+method=simsiam", *TINY))) == []
    compiled = _resumable_config(cfg_factory("+method=simsiam", *TINY, "train.compile_aug=true"))
    assert _config_diff(upgrade_config(stored()), compiled) == ["train.compile_aug: False -> True"]


def test_the_views_schedule_does_not_make_another_config(cfg_factory):
    """A run made with the views in turn (or before train.view_parallel existed) is the same config as one with
    them in parallel: finished, it is skipped; unfinished, it resumes."""
    from ablate.run.rundir import config_diff as _config_diff
    from ablate.run.rundir import resumable_config as _resumable_config
    from ablate.run.rundir import upgrade_config

    def stored(keep_switch=True):  # as a checkpoint of a run with the views in turn stores its config
        c = OmegaConf.to_container(cfg_factory("+method=simsiam", *TINY, "train.view_parallel=false"), resolve=True)
        c.pop("logger"), c.pop("checkpoint")
        if not keep_switch:  # written before the switch existed
            del c["train"]["view_parallel"]
        return c

    new = _resumable_config(cfg_factory("+method=simsiam", *TINY))
    assert _config_diff(upgrade_config(stored()), new) == []
    assert _config_diff(upgrade_config(stored(keep_switch=False)), new) == []
    other = _resumable_config(cfg_factory("+method=simsiam", *TINY, "train.epochs=2"))
    assert _config_diff(upgrade_config(stored()), other) == ["train.epochs: 1 -> 2"]


def test_unrelated_files_in_the_run_directory_are_left_alone(cfg_factory, tmp_path):
    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)
    unrelated = {"notes.txt": "lr looks high\n", "plots/a.csv": "1,2\n", f".{CURRENT}.999.tmp": "half a write",
                 "metrics.jsonl.bak": "{}\n"}
    for name, text in unrelated.items():
        (run / name).write_text(text)
    assert train(cfg_factory("+method=vicreg", *TINY, "train.epochs=2"), run)["status"] == "complete"
    assert {n: (run / n).read_text() for n in unrelated} == unrelated

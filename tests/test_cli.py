"""End to end through `python -m ablate` (ablate.run.cli): a short run writes a valid summary; bad input, bad data
and an unwritable output fail in one line before any training; Ctrl-C says how to resume; sweeps and launchers;
Hydra's flags and the console scripts."""

import importlib
import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TABLE4_CELL, TABLE4_SWEEP, TINY, one_error_line, popen, run_ablate, wait_for, wait_for_claim
from test_data import _image_folder
from test_launcher import _span

from ablate.config import ConfigError
from ablate.run.cli import check_overrides

ROOT = Path(__file__).resolve().parents[1]

REQUIRED_METRICS = ("knn_top1", "linear_top1", "z_std", "z_std_ref", "rank_z", "rank_h")


def test_short_run_writes_valid_summary(tmp_path):
    out = tmp_path / "run"
    # from an unrelated working directory: the configs come from the installed package
    r = run_ablate("+method=simsiam", "~predictor", *TINY, "train.epochs=2", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "complete" and s["method"] == "simsiam"
    assert s["techniques"] == dict(ema=False, stop_grad=True, predictor=False, batchnorm=True, var=False,
                                   cov=False, negatives=False, xcorr=False)
    for k in REQUIRED_METRICS:
        assert isinstance(s["metrics"][k], float)
    assert s["verdict"] == "ok", s["verdict_reason"]  # deterministic on CPU: z_std/z_std_ref 0.41, rank_z 5 of 20
    assert s["epochs"] == 2 and s["wall_s"] > 0
    assert s["compile"] is False and s["compile_mode"] is None  # the step ran eager
    assert s["compile_aug"] is False  # and the colour ops
    assert set(s["protocol"]) >= {"knn_top1", "linear_top1"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for k in ("loss", "loss_inv", "loss_var", "loss_cov", "z_std", "z_std_ref", "rank_z", "rank_h", "knn_top1",
              "lr", "tau"):
        assert k in rows[0]
    assert (out / "config.yaml").exists()
    # running into the same directory keeps the finished run
    before = (out / "summary.json").read_text()
    r = run_ablate("+method=simsiam", "~predictor", *TINY, "train.epochs=2", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0 and (out / "summary.json").read_text() == before
    assert "already holds a finished run" in r.stderr + r.stdout


def test_ema_run_logs_tau_and_equivalence_note(tmp_path):
    out = tmp_path / "run"
    r = run_ablate("+method=byol", "~stop_grad", *TINY, f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.99 <= row["tau"] <= 1.0
    assert (r.stdout + r.stderr).count("the same computation") == 1
    assert json.loads((out / "summary.json").read_text())["equivalences"]


def test_nan_loss_stops_with_diverged_summary(tmp_path):
    out = tmp_path / "run"
    r = run_ablate("+method=vicreg", *TINY, "train.epochs=3", "train.log_every=1", "optim.name=sgd",
                   "optim.lr=1e30", f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 1
    s = json.loads((out / "summary.json").read_text())
    assert s["verdict"] == "diverged" and s["status"] == "diverged"
    assert "diverged" in r.stderr.strip().splitlines()[-1]


BAD = [
    (["~predictor"], "no method chosen; add +method=NAME with NAME one of: barlowtwins, byol, random, simclr, "
                     "simsiam, supervised, vicreg"),
    (["+method=simsiam", "predictor=transformer"], "unknown option 'transformer' for predictor; choose one of: mlp, none"),
    (["+method=simcrl"], "unknown option 'simcrl' for method; choose one of: barlowtwins, byol, random, simclr, "
                         "simsiam, supervised, vicreg"),
    (["+method=vicreg", "var.weight=-1"], "var.weight=-1 must be finite and >= 0"),
    (["+method=vicreg", "cov.weight=nan"], "cov.weight=nan must be finite and >= 0"),
    (["+method=byol", "method.inv_weight=inf"], "method.inv_weight=inf must be finite and >= 0"),
    (["+method=vicreg", "train.batch_size=1"], "too small for the var/cov terms"),
    (["+method=byol", "data=cifar10", "data.root=/nonexistent/cifar"], "data.root=PATH"),
    (["+method=byol", "backbone=vit"], "unknown option 'vit' for backbone"),
    (["+method=byol", "backbone.name=vgg11"], "unknown backbone 'vgg11'; choose backbone= one of"),
    (["+method=byol", "verdict.collapse_rank=line"], "verdict.collapse_rank='line' is not a number"),
    (["+method=vicreg", "verdict.collapse_scale_ratio=-0.5"], "verdict.collapse_scale_ratio=-0.5 must be finite"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_one_line_before_training(tmp_path, refused, args, message):
    out = tmp_path / "run"
    r = refused(*args, f"hydra.run.dir={out}")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ablate: error: ") and message in lines[0], r.stderr
    assert not (out / "metrics.jsonl").exists()


def test_help_describes_the_tool_with_examples_and_writes_nothing(tmp_path):
    from ablate.run.cli import check_overrides

    r = run_ablate("--help", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert text.startswith("ablate: ") and "collapse" in text and "powered by Hydra" not in text
    for switch in ("ema", "stop_grad", "predictor", "batchnorm", "var", "cov", "reg_geometry"):
        assert re.search(rf"^ +{switch} ", text, re.M), switch  # described in the switch list
        assert re.search(rf"^{switch}: ", text, re.M), switch  # and its options, from the config tree
    assert re.search(r"^reg_geometry: auto, raw, sphere$", text, re.M)
    examples = [line.split("   ")[0].split()[3:] for line in text.splitlines() if line.startswith("  python -m ablate +")]
    assert ["+method=simsiam", "~predictor"] in examples and len(examples) >= 4
    for args in examples:
        check_overrides(args)  # every example is a valid command line
    assert list(tmp_path.iterdir()) == []  # no run directory, no outputs/
    r = run_ablate("--hydra-help", cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "--hydra-help" in r.stdout and "Hydra (" in r.stdout, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_sweep_over_a_switch_with_none(tmp_path):
    r = run_ablate("-m", "+method=simsiam", "predictor=mlp,none", *TINY, f"hydra.sweep.dir={tmp_path / 'm'}",
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summaries = sorted(Path(tmp_path / "m").glob("*/summary.json"))
    assert [json.loads(p.read_text())["techniques"]["predictor"] for p in summaries] == [True, False]


BAD_VALUES = [
    ("eval.linear.epochs=0", "eval.linear.epochs=0 must be an integer >= 1"),
    ("eval.knn_k=0", "eval.knn_k=0 must be an integer >= 1"),
    ("eval.test_size=0", "eval.test_size=0 must be an integer >= 16 (or null for all"),
    ("eval.bank_size=-3", "eval.bank_size=-3 must be an integer >= 1"),
    ("data.train_size=-1", "data.train_size=-1 must be an integer >= 1"),
    ("model.head_width_mult=0", "model.head_width_mult=0 must be finite and > 0"),
    ("model.head_width_mult=-1", "model.head_width_mult=-1 must be finite and > 0"),
    ("train.warmup_epochs=-1", "train.warmup_epochs=-1 must be an integer >= 0"),
    ("+train.epoch=3", "+train.epoch=3 adds a key that nothing reads"),
    ("seed=1.5", "seed=1.5 must be an integer >= 0"),
    ("eval.every=0", "eval.every=0 must be an integer >= 1"),
    ("data.image_size=0", "data.image_size=0 must be an integer >= 8"),
    ("device=tpu", "device=tpu is unknown"),
    ("train.compile_aug=maybe", "train.compile_aug=maybe must be auto, true or false"),
    ("train.compile=auto", "train.compile=auto must be true, false or reduce-overhead"),
]
if not torch.cuda.is_available():
    BAD_VALUES.append(("device=cuda", "device=cuda but CUDA is not available here"))


@pytest.mark.parametrize("arg,message", BAD_VALUES, ids=[a for a, _ in BAD_VALUES])
def test_bad_values_are_one_line_and_exit_2_before_anything_is_written(tmp_path, refused, arg, message):
    out = tmp_path / "run"
    line = one_error_line(refused("+method=byol", *TINY, arg, f"hydra.run.dir={out}"))
    assert message in line
    assert not out.exists()


def _npz(path, **change):
    from ablate.data import make_shapes

    x, y = make_shapes(40, seed=0)
    arrays = dict(x_train=x.permute(0, 2, 3, 1).numpy(), y_train=y.numpy(), x_test=x[:20].permute(0, 2, 3, 1).numpy(),
                  y_test=y[:20].numpy())
    arrays.update(change)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def _bad_inputs(tmp_path):
    """(overrides, message) for bad data and output directories, built in ``tmp_path``."""
    ok = np.load(_npz(tmp_path / "ok.npz"))
    one_class = _image_folder(tmp_path / "one", n_per_class=1)
    for split in ("train", "val"):
        for d in sorted((one_class / split).iterdir())[1:]:
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
    corrupt = _image_folder(tmp_path / "corrupt", n_per_class=2)
    bad = sorted((corrupt / "train").rglob("*.png"))[0]
    bad.write_bytes(b"")
    npz = lambda name, **c: ["data=npz", f"data.path={_npz(tmp_path / name, **c)}"]  # noqa: E731
    return [
        (npz("f64.npz", x_train=ok["x_train"].astype(np.float64)), "x_train is float64; expected uint8"),
        (npz("nchw.npz", x_train=ok["x_train"].transpose(0, 3, 1, 2).copy()), "(NCHW: store them as N, H, W, 3)"),
        (npz("keys.npz", x_test=None), "expected x_train, y_train, x_test, y_test"),
        (npz("ylen.npz", y_train=ok["y_train"][:5]), "expected 40 integer labels"),
        (npz("labels.npz", y_test=ok["y_test"] + 10), "outside [0, 10)"),
        (["data=folder", f"data.root={one_class}", "data.workers=0", f"data.cache_dir={tmp_path / 'c'}"],
         "has a single class"),
        (["data=folder", f"data.root={corrupt}", "data.workers=0", f"data.cache_dir={tmp_path / 'c'}"],
         f"cannot read image {bad}"),
        (["hydra.run.dir=/proc/ablate-run"], "cannot write to /proc/ablate-run"),
    ]


def test_bad_data_and_output_directories_are_one_line_and_exit_2(tmp_path, cfg_factory, refused):
    """The first bad input end to end through the command; the others stop training with the one-line error
    (an AblateError) that the command prints the same way, and the unwritable output before Hydra runs."""
    from ablate.errors import AblateError
    from ablate.run.loop import train

    tiny = ["+method=byol", *(o for o in TINY if not o.startswith("data.")), "data.image_size=32"]
    (overrides, message), *data, (out_dir, out_message) = _bad_inputs(tmp_path)
    out = tmp_path / "run"
    r = run_ablate(*tiny, *overrides, f"hydra.run.dir={out}", cwd=tmp_path)
    assert message in one_error_line(r), (overrides, r.stderr)
    assert not (out / "metrics.jsonl").exists()
    for overrides, message in data:
        with pytest.raises(AblateError) as e:
            train(cfg_factory(*tiny, *overrides), out)
        assert message in str(e.value) and "\n" not in str(e.value), overrides
        assert not (out / "metrics.jsonl").exists()
    assert out_message in one_error_line(refused(*tiny, *out_dir))


def test_ctrl_c_is_one_line_that_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    proc = popen("+method=simsiam", *TINY, "train.epochs=200", f"hydra.run.dir={out}", cwd=tmp_path)
    wait_for_claim(out, proc)
    # interrupt the training loop, not the imports (a library's bare except may eat it)
    wait_for((out / "metrics.jsonl").stat, proc, "started training")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == ("ablate: error: interrupted; run the same command again to resume "
                                            "from the last checkpoint"), err
    assert "Traceback" not in err


# 40 overrides, each a setting at its default value (plus the tiny sizes and device=cpu)
MANY = [*TINY, "eval.knn_t=0.1", "eval.batch_size=1024", "eval.linear.batch_size=256", "eval.linear.lr=0.1",
        "eval.linear.weight_decay=0.0", "aug.flip_p=0.5", "aug.jitter_p=0.8", "aug.brightness=0.4",
        "aug.contrast=0.4", "aug.hue=0.1", "aug.gray_p=0.2", "optim.momentum=0.9", "optim.eta=0.02",
        "optim.final_lr_frac=0.002", "optim.exclude_bias_norm=true", "optim.predictor_fixed_lr=false",
        "train.log_every=10", "train.compile=false", "train.precision=auto", "train.deterministic=true",
        "verdict.collapse_std_ratio=0.1", "verdict.collapse_scale_ratio=0.1", "verdict.dim_collapse_rank_frac=0.01",
        "data.data_seed=0", "data.image_size=32", "aug.saturation=0.2", "train.channels_last=auto", "eval.every=1",
        "eval.knn_k=200", "seed=0", "reg_geometry=auto"]


def test_a_40_override_sweep_runs_and_a_failed_cell_fails_the_sweep_after_the_others(tmp_path):
    assert len(MANY) >= 40
    sweep = tmp_path / "m"
    r = run_ablate("-m", "+method=simsiam", *MANY[:-1], "train.batch_size=1000,16", f"hydra.sweep.dir={sweep}",
                   cwd=tmp_path, timeout=600)
    assert r.returncode == 1, r.stderr
    failed = [x for x in r.stderr.splitlines() if x.startswith("ablate: cell ")]
    assert len(failed) == 1 and "train.batch_size=1000" in failed[0] and "smaller than train.batch_size" in failed[0]
    assert r.stderr.strip().splitlines()[-1].startswith("ablate: error: 1 of 2 sweep cells failed")
    cells = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(cells) == 2 and all(len(c.name.encode()) <= 255 for c in cells)
    summaries = [json.loads((c / "summary.json").read_text()) for c in cells]
    assert sorted(s["status"] for s in summaries) == ["complete", "failed"]
    assert all(len(s.get("overrides", [])) >= 40 or s["status"] == "failed" for s in summaries)
    assert all(len((c / ".hydra" / "overrides.yaml").read_text().splitlines()) >= 40 for c in cells)


def baselines(sweep) -> list[str]:
    return sorted(p.parent.name for p in sweep.glob("baseline=*/summary.json"))


def cell(summaries: dict, *overrides: str):
    """The one value of ``summaries`` ({summary path: value}) whose cell's command line holds ``overrides`` (a long
    cell name is shortened, so its overrides are read from its .hydra/overrides.yaml)."""
    (hit,) = [v for p, v in summaries.items()
              if set(overrides) <= set(yaml.safe_load((p.parent / ".hydra" / "overrides.yaml").read_text()))]
    return hit


@pytest.mark.xdist_group("table4_sweep")  # one worker trains the shared sweep once
def test_a_table4_subset_given_as_reg_alone_runs(table4_sweep):
    """``+reg=none`` named before ``+row=...`` and with no other reg: the CLI applies the row first."""
    sweep, r = table4_sweep
    assert "+reg=none" in r.args and r.args.index("+reg=none") < r.args.index("+row=simsiam_no_pred_no_bn")
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")
                 if not p.parent.name.startswith("baseline=")]
    assert len(summaries) == 4 and {s["method"] for s in summaries} == {"simsiam"}
    assert sorted(s["status"] for s in summaries) == ["complete", "complete", "failed", "failed"]  # sgd, bogus
    assert baselines(sweep) == ["baseline=random,seed=0", "baseline=random,seed=1", "baseline=supervised,seed=0",
                                "baseline=supervised,seed=1"]  # the sweep's baselines, once per seed


@pytest.mark.xdist_group("table4_sweep")  # one worker trains the shared sweep once
def test_the_parallel_launcher_runs_cells_on_a_share_of_the_cores_each_as_a_single_run_would(table4_sweep,
                                                                                            cfg_factory, tmp_path):
    import joblib

    from ablate.bench import torch_threads
    from ablate.run.hydra_args import order_groups
    from ablate.run.loop import train

    (sweep, r), threads = table4_sweep, max(joblib.cpu_count() // 2, 1)
    assert "hydra/launcher=parallel" in r.args and "hydra.launcher.n_jobs=2" in r.args
    # a failing cell in a worker process still fails the sweep, with the count
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("ablate: error: 2 of 4 sweep cells failed")
    summaries = {p: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert len(summaries) == 8  # four cells, two baselines for each of the two seeds
    good = cell(summaries, "optim.name=sgd", "seed=0")
    assert all(s["host"]["torch_threads"] == threads for s in summaries.values() if s["status"] == "complete")
    assert sorted(s["baseline"] for s in summaries.values() if s["baseline"]) == ["random"] * 2 + ["supervised"] * 2
    # two at a time: two runs trained at once (their logs' spans overlap)
    spans = [_span(next(p.parent.glob("*.log"))) for p, s in summaries.items() if s["status"] == "complete"]
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:]), spans
    # the cell equals a single run on the same number of threads, to the bit
    with torch_threads(threads):
        alone = train(cfg_factory(*order_groups([*TABLE4_CELL, "optim.name=sgd", "seed=0"])), tmp_path / "single")
    assert alone["host"]["torch_threads"] == threads and alone["metrics"] == good["metrics"]


@pytest.mark.xdist_group("table4_sweep")  # one worker trains the shared sweep once
def test_rerun_skips_finished_cells_and_a_crash_does_not_stop_the_sweep(table4_sweep, tmp_path):
    from ablate.report import main as report

    # four cells of one row; an unknown optimizer makes two of them fail
    sweep, first = table4_sweep
    assert first.returncode == 1, first.stderr[-2000:]  # after every cell ran, with a count
    assert "ablate: error: 2 of 4 sweep cells failed" in first.stderr
    summaries = {p: p for p in sweep.glob("*/summary.json") if not p.parent.name.startswith("baseline=")}
    assert len(summaries) == 4
    bad, good = cell(summaries, "optim.name=bogus", "seed=0"), cell(summaries, "optim.name=sgd", "seed=0")
    failed = json.loads(bad.read_text())
    assert failed["status"] == "failed" and "bogus" in failed["error"] and failed["method"] == "simsiam"
    assert json.loads(good.read_text())["status"] == "complete"

    hydra_files = sorted((good.parent / ".hydra").iterdir())
    assert [p.name for p in hydra_files] == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert yaml.safe_load(hydra_files[1].read_text())["hydra"]["runtime"]["choices"]["row"] == "simsiam_no_pred_no_bn"
    assert "optim.name=sgd" in yaml.safe_load(hydra_files[2].read_text())

    def state():
        return [(p.read_bytes(), p.stat().st_mtime_ns) for p in (good, good.parent / "metrics.jsonl", *hydra_files)]

    before = state()
    # the same sweep again, one cell at a time this time (the launcher is not part of a cell's config)
    second = run_ablate("-m", *TABLE4_CELL, *TABLE4_SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert second.returncode == 1, second.stderr[-2000:]  # the bogus cells fail again
    assert "already holds a finished run" in second.stdout + second.stderr
    assert state() == before  # the skipped cell, its Hydra files included, is left untouched
    assert json.loads(bad.read_text())["status"] == "failed"  # a failed cell is tried again, not skipped

    report([str(sweep), "--out", str(tmp_path / "r")])
    md = (tmp_path / "r" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| SimSiam |  | ✓ |  |  |"))
    assert "2 failed" in row.split("|")[6]


def test_shell_completion_prints_a_bash_script(tmp_path):
    r = run_ablate("-sc", "install=bash", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "hydra_bash_completion()" in r.stdout and "complete -o nospace -o default -F hydra_bash_completion" in r.stdout


@pytest.mark.parametrize("args, expect", [
    (["-c", "job"], "seed: 0"),
    (["--cfg", "job", "+method=byol", "-p", "method"], "name: byol"),
    (["+method=vicreg", "--cfg=job"], "name: vicreg"),
])
def test_config_printing_flags_pass_the_pre_check(tmp_path, args, expect):
    r = run_ablate(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert expect in r.stdout and not list(tmp_path.iterdir())  # printed, nothing trained


@pytest.mark.parametrize("args, line", [
    (["method=byol"], "ablate: error: write +method=byol: method is not in the defaults list"),
    (["+method=byol", "reg=var"], "ablate: error: write +reg=var: reg is not in the defaults list"),
    (["-m", "method=byol,vicreg"], "ablate: error: write +method=byol,vicreg: method is not in the defaults list"),
])
def test_group_without_its_plus_is_one_line(tmp_path, monkeypatch, refused, args, line):
    monkeypatch.chdir(tmp_path)
    r = refused(*args)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [line], r.stderr
    assert not list(tmp_path.iterdir())


def test_groups_already_in_the_defaults_list_need_no_plus():
    check_overrides(["+method=byol", "ema=none", "scale=table_cpu", "data=cifar10", "logger=none"])
    check_overrides(["+row=byol", "method=vicreg"])  # the row's defaults list holds the method
    with pytest.raises(ConfigError, match=r"write \+row=byol"):
        check_overrides(["+method=byol", "row=byol"])


def console_scripts(text: str) -> dict[str, str]:
    """pyproject.toml's ``[project.scripts]`` table (``name = "module:func"`` lines), read without tomllib, which
    Python 3.10 lacks."""
    table = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S).group(1)
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', table, re.M))


def test_console_scripts_are_read_as_tomllib_reads_them():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    text = (ROOT / "pyproject.toml").read_text()
    assert console_scripts(text) == tomllib.loads(text)["project"]["scripts"]


def test_console_scripts_name_importable_callables(capsys):
    scripts = console_scripts((ROOT / "pyproject.toml").read_text())
    assert set(scripts) == {"ablate", "ablate-report", "ablate-geometry", "ablate-bench", "ablate-export",
                            "ablate-linear", "ablate-factorial"}
    for name, target in scripts.items():
        module, func = target.split(":")
        main = getattr(importlib.import_module(module), func)
        assert callable(main), name
        if name != "ablate":  # argparse tools: --help exits 0 with a usage line
            with pytest.raises(SystemExit) as e:
                main(["--help"])
            assert e.value.code == 0 and "usage:" in capsys.readouterr().out, name
    assert scripts["ablate"] == "ablate.run.cli:main"


def test_the_command_lines_checks_import_no_torch():
    """`python -m ablate -c job`, `--help` and every refusal before training start without torch (seconds each)."""
    import subprocess
    import sys

    code = "import sys, ablate.run.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"

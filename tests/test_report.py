"""``python -m ablate.report`` on fabricated runs: two seeds, a failed cell, a started and a missing one, a
hand-made run without Hydra choices, a factorial run, runs from two sweep directories and an unrelated file."""

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ablate.config import TECHNIQUES
from ablate.report import main, regen_commands, summarize_cell, write_report

ROW_SWITCHES = {"byol": (1, 1, 1, 1), "simsiam_no_bn": (0, 1, 1, 0), "simsiam_no_pred_no_bn": (0, 1, 0, 0),
                "simsiam": (0, 1, 1, 1), "vicreg": (0, 0, 0, 1)}
REG_SWITCHES = {"none": (0, 0), "var": (1, 0), "var_cov": (1, 1)}


def switches(row, reg):
    return dict(zip(TECHNIQUES, map(bool, ROW_SWITCHES[row] + REG_SWITCHES[reg])))


def hydra_files(run_dir, method, tech, choices, seed, epochs=3, legacy=False, extra=None):
    """What Hydra writes into a job directory before the job runs (``legacy``: before reg_geometry existed;
    ``extra``: top-level config sections to set)."""
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = {"seed": seed, "method": {"name": method}, "train": {"epochs": epochs}, "data": {"name": "shapes"},
           "backbone": {"name": "small_cnn"}, **{t: ({"on": True} if on else None) for t, on in tech.items()}}
    if not legacy:
        cfg["reg_geometry"] = "auto"
    cfg.update(extra or {})
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))


def fake_run(root, name, method, tech, *, row=None, reg=None, seed=0, verdict="ok", linear=50.0,
             experiment="vicreg_table4", epochs=3, choices=True, geometry=None, legacy=False, baseline=None,
             extra=None):
    run_dir = root / name
    ch = {"experiment": experiment, "scale": "table_cpu", "method": method}
    if row:
        ch.update(row=row, reg=reg)
    hydra_files(run_dir, method, tech, ch, seed, epochs, legacy, extra)
    collapsed = verdict == "collapse"
    curve = [{"epoch": e + 1, "z_std": 0.001 if collapsed else 0.1, "z_std_ref": 0.125,
              "z_scale": 0.3 * 0.1 ** (e + 1) if collapsed else 0.6, "z_scale_init": 0.3,
              "rank_z": 1.1 if collapsed else 20.0, "knn_top1": 30.0} for e in range(epochs)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(c) + "\n" for c in curve))
    summary = {
        "schema": 1, "status": "complete", "method": method, "techniques": tech, "data": "shapes",
        "backbone": "small_cnn", "seed": seed, "epochs": epochs, "epochs_completed": epochs, "embedding_dim": 64,
        "chance_top1": 10.0, "device": "cpu", "choices": ch if choices else {}, "overrides": [f"+method={method}"],
        "verdict": verdict, "verdict_reason": "z_std/z_std_ref = 0.008 < 0.1" if collapsed else "fine",
        "metrics": {"linear_top1": linear, "knn_top1": 30.0, "z_std": curve[-1]["z_std"], "z_std_ref": 0.125,
                    "z_scale": curve[-1]["z_scale"], "z_scale_init": 0.3, "rank_z": curve[-1]["rank_z"],
                    "rank_h": 30.0, "loss": -0.9},
        "spectrum_z": [1.0, 0.1, 1e-3, 1e-9], "wall_s": 90.0,
        "protocol": {"linear_top1": "linear probe, 100 epochs", "knn_top1": "kNN k=200", "eval_set": "32 images"},
    }
    if geometry:
        summary["reg_geometry"] = geometry
    if baseline:
        summary.update(baseline=baseline, verdict=None, verdict_reason=f"baseline run ({baseline})")
    if not choices:
        (run_dir / ".hydra" / "hydra.yaml").unlink()
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def make_sweeps(tmp_path):
    a, b = tmp_path / "sweep_a", tmp_path / "sweep_b"
    a.mkdir()
    (a / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {
        "hydra": ["hydra.mode=MULTIRUN"], "task": ["+experiment=vicreg_table4", "backbone.widths=[4,8]"]}}}))
    fake_run(a, "byol_s0", "byol", switches("byol", "none"), row="byol", reg="none", seed=0, linear=60.0)
    fake_run(b, "byol_s1", "byol", switches("byol", "none"), row="byol", reg="none", seed=1, linear=64.0)
    (b / "byol_s1" / "linear_eval.json").write_text(json.dumps({"top1": 71.5, "units": "top-1 in percent"}))
    fake_run(a, "sg_only", "simsiam", switches("simsiam_no_pred_no_bn", "none"), row="simsiam_no_pred_no_bn",
             reg="none", verdict="collapse", linear=11.0)
    fake_run(a, "vicreg_inv", "vicreg", switches("vicreg", "none"), row="vicreg", reg="none", linear=40.0)
    # hand-made run: no Hydra choices, placed by its method and switches
    fake_run(a, "by_hand", "simsiam", switches("simsiam_no_bn", "var_cov"), choices=False, linear=55.5,
             geometry="sphere")
    # the same cell with var/cov on raw outputs (runs from before the switch recorded no geometry: raw)
    fake_run(a, "by_hand_raw", "simsiam", switches("simsiam_no_bn", "var_cov"), choices=False, verdict="collapse",
             linear=12.0, legacy=True)
    # a factorial cell outside the table: EMA on, no predictor
    fake_run(a, "fact", "simsiam", dict(ema=True, stop_grad=True, predictor=False, batchnorm=True, var=False,
                                        cov=False), experiment="factorial", linear=33.0)
    # a crashed cell: the summary cli._record_failure writes, beside Hydra's files
    failed = a / "vicreg_failed"
    tech = switches("vicreg", "var_cov")
    hydra_files(failed, "vicreg", tech, {"experiment": "vicreg_table4", "scale": "table_cpu", "row": "vicreg",
                                         "reg": "var_cov"}, 0)
    (failed / "summary.json").write_text(json.dumps({
        "schema": 1, "status": "failed", "error": "RuntimeError: out of memory in cell", "method": "vicreg",
        "techniques": tech, "seed": 0, "verdict": None, "metrics": {}}))
    # a run stopped by a non-finite loss: neither a number nor a collapse
    div = fake_run(a, "vicreg_div", "vicreg", switches("vicreg", "var"), row="vicreg", reg="var")
    summary = json.loads((div / "summary.json").read_text())
    summary.update(status="diverged", verdict="diverged", verdict_reason="non-finite loss (inf) at step 290",
                   epochs_completed=2, metrics={"loss": None})
    (div / "summary.json").write_text(json.dumps(summary))
    # a cell still training: Hydra's files and one epoch of metrics, no summary yet
    running = a / "running"
    hydra_files(running, "simsiam", switches("simsiam", "var"), {"experiment": "vicreg_table4",
                                                                  "scale": "table_cpu", "row": "simsiam",
                                                                  "reg": "var"}, 0)
    (running / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "z_std": 0.1, "z_std_ref": 0.125,
                                                       "rank_z": 9.0}) + "\n")
    (a / "other").mkdir()
    (a / "other" / "summary.json").write_text('{"unrelated": true}')
    return a, b


# the tests that read the fixture report run on one xdist worker, which builds it once
SHARED = pytest.mark.xdist_group("report_fixture")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report on the fixture sweeps, built once (figures take seconds), and the warnings it printed."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("sweeps")
    a, b = make_sweeps(root)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        main([str(a), str(b), "--out", str(root / "report")])
    return root / "report", err.getvalue()


def table_row(md, prefix):
    return next(line for line in md.splitlines() if line.startswith(prefix))


@SHARED
def test_report_table_text(report):
    out, err = report
    assert "skipping" in err and "other/summary.json" in err  # the unrelated file, one warning
    md = (out / "report.md").read_text()
    assert table_row(md, "| Method |") == ("| Method | ME | SG | PR | BN | No Reg (ours / paper) | "
                                          "Var Reg (ours / paper) | Var/Cov Reg (ours / paper) |")
    # two seeds from two sweep dirs: mean +- 95% t half-width (12.706 * 2.828 / sqrt(2)); other columns pending
    assert table_row(md, "| BYOL |") == "| BYOL | ✓ | ✓ | ✓ | ✓ | 62.0 ± 25.4 / 69.3† | pending / 70.2 | pending / 69.5 |"
    # collapse where the paper has it; seed 1 of this cell never ran
    assert table_row(md, "| SimSiam |  | ✓ |  |  |") == (
        "| SimSiam |  | ✓ |  |  | collapse 1/1 (1 pending) / collapse | pending / 56.8 | pending / 66.1 |")
    assert table_row(md, "| SimSiam |  | ✓ | ✓ | ✓ |") == (
        "| SimSiam |  | ✓ | ✓ | ✓ | pending / 67.9† | pending (1/3 ep) / 68.1 | pending / 67.6 |")
    assert table_row(md, "| SimSiam |  | ✓ | ✓ |  |") == (
        "| SimSiam |  | ✓ | ✓ |  | pending / 35.1 | pending / 67.3 | 55.5 (1 pending) / 67.1 |")
    # no collapse where the paper reports one: flagged; the failed cell says why
    assert table_row(md, "| VICReg |  |  |  | ✓ |") == (
        "| VICReg |  |  |  | ✓ | 40.0 (1 pending) / collapse ⚠ | diverged 1/1 (1 pending) / 57.5 | "
        "failed: RuntimeError: out of memory in cell / 68.6† |")
    assert "- VICReg (vicreg), No Reg: ours 40.0 (1 pending), paper collapse. Our verdict: fine." in md
    assert "RuntimeError: out of memory in cell" in md.split("Failed runs:")[1]
    assert "vicreg_div`: non-finite loss (inf) at step 290, after 2/3 epochs" in md.split("Diverged runs")[1]
    # diagnostics, protocol, regeneration command
    assert table_row(md, "| SimSiam (simsiam_no_pred_no_bn), No Reg |").split(" | ")[1:9] == [
        "0", "collapse", "0.001", "0.125", "0.008", "0.001", "1.1 / 64", "30.0"]  # z_scale 3e-4 of init 0.3
    assert "- linear_top1: linear probe, 100 epochs" in md
    # no baseline runs: said above the table, and no normalized accuracy anywhere
    assert "| untrained backbone (`random`) | not run (re-run the sweep to add it) |" in md
    assert "lacks a finished random and supervised baseline" in md and " [0." not in md
    assert "python -m ablate -m +experiment=vicreg_table4 'backbone.widths=[4,8]'" in md
    # the factorial run: 64 combinations, the ones not run pending
    fact = md.split("### Switch combinations, `simsiam` recipe")[1].split("###")[0]
    assert fact.count("\n| ") == 65 and "| ✓ | ✓ |  | ✓ |  |  | 33.0 (1 pending) |" in fact
    # 64 minus the factorial, hand-made, collapsed and still-training simsiam runs
    assert fact.count("| pending |") == 60 and "| pending (1/3 ep) |" in fact


@SHARED
def test_report_csv_and_figures(report):
    out, _ = report
    df = pd.read_csv(out / "runs.csv")
    assert len(df) == 10  # 7 finished, 1 diverged, 1 failed, 1 still training; the unrelated file skipped
    for col in (*TECHNIQUES, "method", "seed", "verdict", "status", "linear_top1", "knn_top1", "rank_z", "z_std"):
        assert col in df.columns
    assert df["ema"].dtype == bool and df["var"].dtype == bool
    byol = df[df["row"] == "byol"].sort_values("seed")
    assert byol["linear_top1"].tolist() == [60.0, 64.0] and byol["seed"].tolist() == [0, 1]
    assert df.loc[df["status"] == "failed", "error"].item() == "RuntimeError: out of memory in cell"
    # python -m ablate.tools.linear's result beside the in-run probe, for the run that has one
    assert byol["linear_eval_top1"].tolist()[1] == 71.5 and pd.isna(byol["linear_eval_top1"].tolist()[0])
    diag = (out / "report.md").read_text().split("### Diagnostics per run")[1]
    assert "| linear % | linear eval % | norm |" in diag and "| 64.0 | 71.5 |" in diag
    assert df.loc[df["dir"].str.endswith("by_hand_raw"), "reg_geometry"].item() == "raw"
    assert df.loc[df["dir"].str.endswith("by_hand"), "reg_geometry"].item() == "sphere"
    assert df.loc[df["dir"].str.endswith("sg_only"), "reg_geometry"].isna().all()  # no var/cov: no geometry
    for name in ("table4_table_cpu", "table4_table_cpu_raw", "std_table_cpu", "scale_table_cpu", "rank_table_cpu",
                 "spectra_table_cpu",
                 "factorial_table_cpu_simsiam"):
        data = (out / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
        assert f"({name}.png)" in (out / "report.md").read_text()


@SHARED
def test_report_shows_each_geometry_and_the_claims(report):
    out, _ = report
    md = (out / "report.md").read_text()
    default, raw = md.split("### VICReg Table 4")[1], md.split("### VICReg Table 4, `reg_geometry=raw`")[1]
    assert table_row(default, "| SimSiam |  | ✓ | ✓ |  |").endswith("| 55.5 (1 pending) / 67.1 |")
    # the raw table: the regularized cell from the raw run, the No Reg cells shared with the default table
    assert table_row(raw, "| SimSiam |  | ✓ | ✓ |  |").endswith("| collapse 1/1 (1 pending) / 67.1 ⚠ |")
    assert table_row(raw, "| BYOL |").startswith("| BYOL | ✓ | ✓ | ✓ | ✓ | 62.0 ± 25.4 / 69.3† |")
    assert "- SimSiam (simsiam_no_bn), Var/Cov Reg: ours collapse 1/1 (1 pending), paper 67.1." in raw
    claims = md.split("### The paper's claims")[1].split("###")[0]
    assert table_row(claims, "| Paper's claim") == (
        "| Paper's claim (VICReg Table 4) | `reg_geometry=auto` | `reg_geometry=raw` | cells |")
    # BYOL No Reg ran (no collapse), SimSiam with BN No Reg did not
    assert table_row(claims, "| BYOL and SimSiam with BN").startswith(
        "| BYOL and SimSiam with BN need no var/cov: no collapse with No Reg | held (1 of 2 cells run) | "
        "held (1 of 2 cells run) | BYOL ME SG PR BN No Reg, SimSiam SG PR BN No Reg |")
    # rows 4-8 No Reg: SimSiam SG collapsed, VICReg BN did not
    assert "| mixed: not in VICReg BN No Reg (2 of 5 cells run) |" in table_row(claims, "| Invariance alone")
    # Var/Cov in every row: the default has SimSiam SG PR at 55.5, raw has it collapsed; VICReg BN failed
    row = table_row(claims, "| Variance and covariance")
    assert "| held (1 of 8 cells run) | not held (1 of 8 cells run) |" in row
    assert "[raw]" in table_row(md, "| SimSiam (simsiam_no_bn), Var/Cov Reg [raw]")


@SHARED
def test_report_reads_an_earlier_runs_csv(report, tmp_path):
    """An earlier report's runs.csv stands for its runs; a live run with the same path and geometry replaces
    its row, one with another geometry (the new default) sits beside it in the other table."""
    out, _ = report
    new = tmp_path / "sweep_new"
    old = pd.read_csv(out / "runs.csv")
    raw_dir = old.loc[old["dir"].str.endswith("by_hand_raw"), "dir"].item()
    byol_dir = old.loc[(old["row"] == "byol") & (old["seed"] == 0), "dir"].item()
    fake_run(new, "byol_s0", "byol", switches("byol", "none"), row="byol", reg="none", seed=0, linear=70.0)
    # the live runs claim the old runs' paths: same geometry replaces, another geometry adds
    import shutil

    shutil.rmtree(byol_dir)
    shutil.move(str(new / "byol_s0"), byol_dir)
    shutil.rmtree(raw_dir)
    fake_run(Path(raw_dir).parent, Path(raw_dir).name, "simsiam", switches("simsiam_no_bn", "var_cov"),
             choices=False, linear=44.0, geometry="sphere")
    write_report([out / "runs.csv", Path(raw_dir).parent], tmp_path / "again", figures=False)
    df = pd.read_csv(tmp_path / "again" / "runs.csv")
    assert len(df) == 11  # 10 old rows, BYOL s0 replaced, the raw run kept beside its sphere successor
    assert sorted(df.loc[df["row"] == "byol", "linear_top1"]) == [64.0, 70.0]
    assert sorted(df.loc[df["dir"] == raw_dir, "reg_geometry"]) == ["raw", "sphere"]
    md = (tmp_path / "again" / "report.md").read_text()
    assert table_row(md, "| BYOL |").startswith("| BYOL | ✓ | ✓ | ✓ | ✓ | 67.0 ± 38.1 / 69.3† |")
    assert "runs are read from" in md and "runs.csv" in md


def test_report_places_each_cell_between_the_baselines(tmp_path):
    """Baselines of seeds 0 and 1 (random 20 / 24, supervised 80 / 84), worked by hand: a run of seed s is
    (acc - random_s) / (supervised_s - random_s); seed 2 has none, so it uses the means 22 and 82."""
    off = dict.fromkeys(TECHNIQUES, False)
    for seed, (lo, hi) in enumerate([(20.0, 80.0), (24.0, 84.0)]):
        fake_run(tmp_path, f"random_s{seed}", "random", off, seed=seed, verdict=None, linear=lo, baseline="random",
                 experiment=None)
        fake_run(tmp_path, f"sup_s{seed}", "supervised", off, seed=seed, verdict=None, linear=hi,
                 baseline="supervised", experiment=None)
    fake_run(tmp_path, "byol_s0", "byol", switches("byol", "none"), row="byol", reg="none", seed=0, linear=60.0)
    fake_run(tmp_path, "byol_s1", "byol", switches("byol", "none"), row="byol", reg="none", seed=1, linear=64.0)
    for seed, acc in ((0, 26.0), (1, 30.0)):  # collapsed, yet above the untrained backbone by 6 points
        fake_run(tmp_path, f"sg_s{seed}", "simsiam", switches("simsiam_no_pred_no_bn", "none"),
                 row="simsiam_no_pred_no_bn", reg="none", seed=seed, verdict="collapse", linear=acc)
    fake_run(tmp_path, "vicreg_s2", "vicreg", switches("vicreg", "none"), row="vicreg", reg="none", seed=2,
             linear=52.0)
    write_report([tmp_path], tmp_path / "r", figures=False)  # the text; figures: other tests
    md = (tmp_path / "r" / "report.md").read_text()
    assert table_row(md, "| untrained") == "| untrained backbone (`random`) | 22.0 ± 25.4 | 30.0 ± 0.0 | 0, 1 |"
    assert table_row(md, "| supervised (") == "| supervised (`supervised`) | 82.0 ± 25.4 | 30.0 ± 0.0 | 0, 1 |"
    assert md.index("| untrained backbone") < md.index("| Method |")  # above the table, not in it
    assert table_row(md, "| BYOL |").startswith("| BYOL | ✓ | ✓ | ✓ | ✓ | 62.0 ± 25.4 [0.67] (1 pending) / 69.3† |")
    assert table_row(md, "| SimSiam |  | ✓ |  |  |").startswith(
        "| SimSiam |  | ✓ |  |  | collapse 2/2: 28.0 [0.10] (1 pending) / collapse |")
    assert table_row(md, "| VICReg |  |  |  | ✓ |").startswith(
        "| VICReg |  |  |  | ✓ | 52.0 [0.50] (2 pending) / collapse ⚠ |")
    assert "### Switch combinations" not in md  # the baselines' methods get no grid of switch combinations
    df = pd.read_csv(tmp_path / "r" / "runs.csv")
    df = df.set_index(df["dir"].map(lambda d: Path(d).name))
    assert df.loc["random_s1", "baseline"] == "random" and pd.isna(df.loc["byol_s0", "baseline"])
    want = {"random_s0": 0.0, "sup_s1": 1.0, "byol_s0": 40 / 60, "byol_s1": 40 / 60, "sg_s0": 0.1, "sg_s1": 0.1,
            "vicreg_s2": 0.5}
    assert df.loc[list(want), "linear_norm"].round(6).tolist() == [round(v, 6) for v in want.values()]
    assert df.loc[["random_s0", "sup_s0"], "row"].isna().all()  # never placed in a cell


def test_no_figures_writes_the_text_alone_and_says_so(tmp_path):
    a, _ = make_sweeps(tmp_path)
    assert main([str(a), "--out", str(tmp_path / "r"), "--no-figures"]) in (None, 0)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.md", "runs.csv"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "--no-figures`" in md and "![" not in md  # the command that regenerates it; no link to a missing PNG


def test_report_bad_input_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "is not a directory" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--out", str(tmp_path / "r")])
    assert e.value.code == 2 and "no runs" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--out", str(tmp_path / "afile")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "is a file" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("bad", ['{"epoch": 1, "z_std": "abc"}', "[1, 2]", "not json"])
def test_run_with_malformed_metrics_is_skipped_with_a_warning(tmp_path, capsys, bad):
    good = fake_run(tmp_path, "good", "byol", switches("byol", "none"), row="byol", reg="none")
    broken = fake_run(tmp_path, "broken", "byol", switches("byol", "none"), row="byol", reg="none", seed=1)
    (broken / "metrics.jsonl").write_text(bad + "\n" + '{"epoch": 2, "z_std": 0.1}\n')
    write_report([tmp_path], tmp_path / "r", figures=False)  # the text; figures: other tests
    err = capsys.readouterr().err
    assert f"skipping {broken}: " in err and "line 1" in err and str(good) not in err
    df = pd.read_csv(tmp_path / "r" / "runs.csv")
    assert df["dir"].tolist() == [str(good)]


def _cell_run(seed, verdict, acc=50.0, **extra):
    return {"status": "diverged" if verdict == "diverged" else "complete", "seed": seed, "verdict": verdict,
            "metrics": {"linear_top1": acc}, **extra}


def test_a_cell_whose_seeds_disagree_is_mixed_and_says_its_counts():
    # diverged in 1 of 3: painted as mixed, not as diverged; the two others' mean with its t interval
    c = summarize_cell([_cell_run(0, "ok", 50.0), _cell_run(1, "ok", 54.0), _cell_run(2, "diverged")], [0, 1, 2])
    assert c["color"] == "mixed" and c["collapse"] is False
    assert c["text"] == "52.0 ± 25.4 (diverged in 1/3)"  # 12.706 * 2.828 / sqrt(2)
    c = summarize_cell([_cell_run(0, "ok"), _cell_run(1, "collapse", 11.0), _cell_run(2, "collapse", 12.0)], [0, 1, 2])
    assert c["color"] == "mixed" and c["collapse"] == "mixed" and c["text"] == "50.0 (collapse in 2/3)"
    c = summarize_cell([_cell_run(s, "collapse", 10.0) for s in range(3)], [0, 1, 2])
    assert (c["color"], c["text"], c["collapse"]) == ("collapse", "collapse 3/3", True)
    c = summarize_cell([_cell_run(0, "dimensional_collapse")], [0])
    assert (c["color"], c["text"]) == ("dimensional_collapse", "50.0 (dim. collapse in 1/1)")


def test_a_cell_says_unsettled_verdicts_and_runs_no_better_than_their_initialization():
    runs = [_cell_run(0, "collapse", 40.0, verdict_settled=False, no_better_than_init=True),
            _cell_run(1, "collapse", 42.0, verdict_settled=True, no_better_than_init=False)]
    c = summarize_cell(runs, [0, 1])
    assert c["text"] == "collapse 2/2 (verdict unsettled in 1/2, no better than init in 1/2)"


def test_report_analyses_a_partial_factorial(tmp_path):
    """A SimSiam-recipe factorial over predictor x var x batchnorm (the other switches fixed), one cell missing:
    collapse exactly when neither predictor nor var is on."""
    import itertools

    sweep = tmp_path / "factorial"
    for pred, var, bn in itertools.product((True, False), repeat=3):
        if (pred, var, bn) == (True, True, False):
            continue  # the gap
        tech = dict(ema=False, stop_grad=True, predictor=pred, batchnorm=bn, var=var, cov=False)
        for seed in (0, 1):
            collapsed = not pred and not var
            fake_run(sweep, f"p{pred:d}v{var:d}b{bn:d}s{seed}", "simsiam", tech, seed=seed, experiment="factorial",
                     verdict="collapse" if collapsed else "ok", linear=10.0 if collapsed else 50.0,
                     geometry="sphere" if var else None)
    main([str(sweep), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "report.md").read_text()
    # its runs include Table 4's SimSiam cells, yet a factorial's report is not a partial Table 4
    assert md.startswith("# Anti-collapse ablations: the six switches' factorial") and "VICReg Table 4" not in md
    part = md.split("### Which switch matters, `simsiam` recipe")[1].split("\n### ")[0]
    assert "`python -m ablate.report.factorial runs.csv --method simsiam` prints the same" in part
    # predictor: pairs (var, bn) = (0,0), (0,1), (1,1); with it off 2 of those 3 collapse, 2 seeds each
    assert "| `predictor` | 3 | 0 / 6 | 4 / 6 | -0.67 ± 1.43 | 50.0 | 23.3 |" in part
    assert "Held fixed in every run (no effect measured): `ema`, `stop_grad`, `cov`." in part
    assert "- on, no run collapsed: `predictor` on [6]; `var` on [6]" in part
    assert "- off, every run collapsed: `predictor` and `var` off [4]" in part
    assert "Gaps: 57 of 64 combinations have no finished run" in part
    assert "The largest interaction is `predictor` x `var` (+1.00 in collapse rate over 1 quadruples)" in part
    png = (tmp_path / "out" / "interactions_table_cpu_simsiam.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and "(interactions_table_cpu_simsiam.png)" in md
    # the CLI on the report's runs.csv prints the same analysis
    from ablate.report import factorial

    df = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert factorial.markdown(factorial.outcomes(df[df["method"] == "simsiam"]),
                              heatmap="interactions_table_cpu_simsiam.png") in part


def test_regen_command_names_every_seed_a_sweep_dir_holds(tmp_path):
    # multirun.yaml keeps the last invocation only: seed=1 run after seed=0 into the same directory
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {
        "hydra": ["hydra.mode=MULTIRUN"], "task": ["+experiment=factorial", "+method=vicreg", "seed=1"]}}}))
    runs = [{"sweep_dir": tmp_path, "seed": s, "overrides": []} for s in (1, 0, 1)]
    assert regen_commands(runs) == ["python -m ablate -m +experiment=factorial +method=vicreg seed=0,1"]
    assert regen_commands(runs[:1]) == ["python -m ablate -m +experiment=factorial +method=vicreg seed=1"]


def test_a_sweep_that_is_not_table4_gets_a_comparison_report(tmp_path):
    """SimSiam's predictor on / off, two seeds each, outside the Table 4 sweep: a comparison of the two configs,
    with the switch that varies as a column, intervals over seeds, and their curves overlaid on one axis."""
    sweep = tmp_path / "pred"
    for pred in (True, False):
        for seed, acc in ((0, 40.0), (1, 44.0)):
            tech = {**switches("simsiam", "none"), "predictor": pred}
            fake_run(sweep, f"pred{pred:d}_s{seed}", "simsiam", tech, seed=seed, experiment=None,
                     linear=acc + 10 * pred, verdict="ok" if pred else "collapse")
    main([str(sweep), "--out", str(tmp_path / "r")])
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Table 4" not in md and "pending" not in md and "claim" not in md
    assert md.startswith("# Anti-collapse ablations: a comparison of configs")
    assert table_row(md, "| `predictor` |") == ("| `predictor` | seeds | linear top-1 % | kNN top-1 % | RankMe z | "
                                               "verdicts |")
    assert table_row(md, "| on |") == "| on | 2 | 52.0 ± 25.4 | 30.0 ± 0.0 | 20.0 ± 0.0 | ok 2/2 |"
    assert table_row(md, "| off |") == "| off | 2 | 42.0 ± 25.4 | 30.0 ± 0.0 | 1.1 ± 0.0 | collapse 2/2 |"
    assert "95% Student-t interval" in md
    lines = md.splitlines()
    assert next(i for i, line in enumerate(lines) if line.startswith("| ")) < 40
    png = (tmp_path / "r" / "curves_table_cpu.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000 and "(curves_table_cpu.png)" in md
    # the figure draws both configs' curves on each axis, with a legend naming them
    from ablate.report import compare, figures
    from ablate.report.cells import build_settings
    from ablate.report.load import find_runs

    (s,) = build_settings(find_runs([sweep]))
    s["comparison"] = compare.comparison(s)
    plt = figures.pyplot()
    seen = []
    real_save = figures._save
    figures._save = lambda plt, fig, path, dpi=100: seen.append(fig)
    try:
        figures.overlaid_figure(plt, s["comparison"]["cells"], "t", tmp_path / "c.png")
    finally:
        figures._save = real_save
    ax = seen[0].axes[0]
    assert len(ax.get_lines()) == 2 and sorted(t.get_text() for t in seen[0].legends[0].get_texts()) == [
        "predictor=off (n=2)", "predictor=on (n=2)"]


def _sized(root, name, widths, seed=0, linear=60.0, **kw):
    extra = {"backbone": {"name": "small_cnn", "widths": widths}, **kw.pop("extra", {})}
    method = kw.pop("method", "byol")
    tech = kw.pop("tech", switches("byol", "none"))
    return fake_run(root, name, method, tech, seed=seed, linear=linear, extra=extra, **kw)


def test_runs_of_other_sizes_are_not_seeds_and_a_copy_counts_once(tmp_path, capsys):
    import shutil

    off = dict.fromkeys(TECHNIQUES, False)
    small = _sized(tmp_path, "byol_small", [4, 8], row="byol", reg="none", linear=60.0)
    _sized(tmp_path, "byol_big", [8, 16], row="byol", reg="none", linear=70.0)
    for kind, acc in (("random", 20.0), ("supervised", 80.0)):  # baselines of the small size only
        _sized(tmp_path, f"{kind}_small", [4, 8], linear=acc, method=kind, tech=off, verdict=None, baseline=kind,
               experiment=None)
    shutil.copytree(small, tmp_path / "byol_small_copy")
    write_report([tmp_path], tmp_path / "r", figures=False)
    assert "counting" in capsys.readouterr().err
    md = (tmp_path / "r" / "report.md").read_text()
    byol = [line for line in md.splitlines() if line.startswith("| BYOL |")]
    # two settings, each BYOL cell one run: never 65.0 over 'seeds' of two sizes, the copy not a second seed
    assert len(byol) == 2 and "60.0 [0.67] / 69.3†" in byol[0] + byol[1] and "70.0 / 69.3†" in byol[0] + byol[1]
    assert md.count("not run (re-run the sweep to add it)") == 2  # the big setting: no baselines of its size
    assert "## Setting `table_cpu`: shapes, small_cnn, 3 epochs (`backbone.widths`=[8, 16])" in md
    assert len(pd.read_csv(tmp_path / "r" / "runs.csv")) == 4


def test_configs_that_share_a_cell_are_said_to_differ(tmp_path):
    for seed, lr in ((0, 0.1), (1, 0.2)):
        _sized(tmp_path, f"byol_lr{lr}", [4, 8], seed=seed, row="byol", reg="none", extra={"optim": {"lr": lr}})
    write_report([tmp_path], tmp_path / "r", figures=False)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "- BYOL (byol), No Reg: its runs' configs differ (`optim.lr`: 0.1 / 0.2)" in md


def test_a_value_that_points_at_another_key_reads_as_that_value():
    from ablate.report.load import resolve_refs

    flat = {"method.var_weight": 25.0, "var.weight": "${method.var_weight}", "method.xcorr_weight": 0.1,
            "xcorr.weight": "${oc.select:method.xcorr_weight,1.0}", "xcorr.lambd": "${oc.select:method.nope,0.0051}",
            "data.root": "${oc.env:HOME,/tmp}", "a": "${b}", "b": "${c}"}
    got = resolve_refs(flat)
    assert (got["var.weight"], got["xcorr.weight"], got["xcorr.lambd"]) == (25.0, 0.1, 0.0051)
    assert got["data.root"] == "${oc.env:HOME,/tmp}" and got["a"] == "${b}"  # the environment, a chain: as written
    # the config id hashes the config as saved (sorted JSON of its flat keys, less seed), as earlier reports'
    # runs.csv files have it, so a run and its row there still count once; comparisons read the resolved values
    from ablate.report.load import config_parts

    cfg = {"method": {"name": "byol", "var_weight": 25.0}, "var": {"weight": "${method.var_weight}"}, "seed": 0}
    saved = json.dumps({"method.name": "byol", "method.var_weight": 25.0, "var.weight": "${method.var_weight}"},
                       sort_keys=True)
    flat, config_id, _ = config_parts(cfg)
    assert config_id == hashlib.sha256(saved.encode()).hexdigest()[:12] and flat["var.weight"] == 25.0


def test_split_gives_a_table_per_value_and_shares_the_runs_without_the_key(tmp_path, capsys):
    from ablate.report.build import main

    off = dict.fromkeys(TECHNIQUES, False)
    for seed, lr, acc in ((0, 0.1, 60.0), (1, 0.1, 62.0), (0, 0.2, 70.0), (1, 0.2, 72.0)):
        _sized(tmp_path, f"byol_lr{lr}_s{seed}", [4, 8], seed=seed, row="byol", reg="none", linear=acc,
               extra={"optim": {"lr": lr}})
    for kind, acc in (("random", 20.0), ("supervised", 80.0)):  # no optim.lr: they serve both tables
        _sized(tmp_path, kind, [4, 8], linear=acc, method=kind, tech=off, verdict=None, baseline=kind,
               experiment=None)
    write_report([tmp_path], tmp_path / "r", figures=False, split=("optim.lr",))
    md = (tmp_path / "r" / "report.md").read_text()
    assert "--split optim.lr`" in md.splitlines()[2]  # the command that regenerates it
    for lr in (0.1, 0.2):
        assert f"## Setting `table_cpu`: shapes, small_cnn, 3 epochs (`optim.lr`={lr})" in md
    byol = [line for line in md.splitlines() if line.startswith("| BYOL |")]
    # each table averages its own two seeds, placed between the same baselines: (61 - 20) / 60, (71 - 20) / 60
    assert len(byol) == 2 and "61.0 ± 12.7 [0.68]" in byol[0] and "71.0 ± 12.7 [0.85]" in byol[1]
    assert "configs differ" not in md and len(pd.read_csv(tmp_path / "r" / "runs.csv")) == 6
    with pytest.raises(SystemExit) as e:  # a misspelt key: one line, nothing written
        main([str(tmp_path), "--out", str(tmp_path / "x"), "--split", "optim.rl"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "--split optim.rl: no run's config has this key" in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_an_inverted_baseline_pair_is_not_normalizable(tmp_path):
    off = dict.fromkeys(TECHNIQUES, False)
    for kind, acc in (("random", 60.0), ("supervised", 50.0)):
        fake_run(tmp_path, kind, kind, off, linear=acc, verdict=None, baseline=kind, experiment=None)
    fake_run(tmp_path, "byol", "byol", switches("byol", "none"), row="byol", reg="none", linear=55.0)
    write_report([tmp_path], tmp_path / "r", figures=False)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Not normalizable: the supervised baseline (50.0%) scores no better than the untrained one (60.0%)" in md
    assert table_row(md, "| BYOL |").startswith("| BYOL | ✓ | ✓ | ✓ | ✓ | 55.0 / 69.3† |")
    assert pd.read_csv(tmp_path / "r" / "runs.csv")["linear_norm"].isna().all()


@SHARED
def test_reused_runs_say_their_curves_were_not_kept(report, tmp_path):
    out, _ = report
    write_report([out / "runs.csv"], tmp_path / "again", figures=False)
    md = (tmp_path / "again" / "report.md").read_text()
    assert "their curves and spectra were not kept" in md
    from ablate.report import figures

    texts = []
    figures._empty_panel(type("Ax", (), {"text": lambda self, *a, **k: texts.append(a[2]), "transAxes": None,
                                          "set_xticks": lambda self, x: None, "set_yticks": lambda self, y: None})(),
                         [{"status": "complete", "source": "runs.csv"}])
    assert texts == ["curve not kept (runs.csv)"]


@SHARED
def test_report_leads_with_the_answer_and_renders_the_note_after_it(report, tmp_path):
    out, _ = report
    note = tmp_path / "note.md"
    note.write_text("A short note for the reader.")
    write_report([out / "runs.csv"], tmp_path / "n", note, figures=False)
    md = (tmp_path / "n" / "report.md").read_text()
    lines = md.splitlines()
    first_table = next(i for i, line in enumerate(lines) if line.startswith("| "))
    assert first_table < 40 and md.index("| Method |") < md.index("## Note") < md.index("### Diagnostics per run")
    assert "![" not in md  # written without figures: no link to a missing PNG
    full = (out / "report.md").read_text()  # the fixture's report, with its figures: the main one leads
    assert full.index("![table4_table_cpu.png]") < full.index("### Diagnostics per run")


def test_the_t_interval_on_worked_numbers():
    import math

    from ablate.report.stats import fmt_ci, mean_ci, t975

    # [1, 2, 3]: mean 2, s = 1, half-width t_{0.975,2} * 1 / sqrt(3) = 4.303 / 1.732 = 2.484
    mean, half, n = mean_ci([1.0, 2.0, 3.0, None, float("nan")])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.303 / math.sqrt(3)) and round(half, 3) == 2.484
    assert fmt_ci([60.0, 64.0]) == "62.0 ± 25.4"  # 12.706 * sqrt(8) / sqrt(2)
    assert mean_ci([5.0]) == (5.0, None, 1) and mean_ci([]) == (None, None, 0) and fmt_ci([7.0]) == "7.0"
    # the table's ends and the expansion beyond it, against published quantiles
    assert (t975(1), t975(2), t975(30)) == (12.706, 4.303, 2.042)
    for df, want in ((31, 2.0395), (40, 2.0211), (60, 2.0003), (120, 1.9799), (10 ** 6, 1.9600)):
        assert t975(df) == pytest.approx(want, abs=2e-4)
    assert all(t975(d) > t975(d + 1) for d in range(1, 200))  # falls toward the normal value
    with pytest.raises(ValueError):
        t975(0)


@SHARED
def test_the_spectra_label_promises_dashes_only_where_a_collapsed_run_is_drawn(report, tmp_path):
    from ablate.report import figures
    from ablate.report.cells import build_settings
    from ablate.report.load import find_runs

    out, _ = report
    root = out.parent
    (s,) = build_settings(find_runs([root / "sweep_a", root / "sweep_b"]))
    ref = s["ref"]
    seen = []
    real_save = figures._save
    figures._save = lambda plt, fig, path, dpi=100: seen.append(fig)
    try:
        figures.spectra_figure(figures.pyplot(), s, ref, tmp_path / "a.png")
        s["runs"] = [r for r in s["runs"] if r["verdict"] != "collapse"]
        figures.spectra_figure(figures.pyplot(), s, ref, tmp_path / "b.png")
    finally:
        figures._save = real_save
    with_collapse, without = seen
    assert "dashed: collapsed run" in with_collapse.axes[0].get_ylabel()
    assert any(line.get_linestyle() == "--" for ax in with_collapse.axes for line in ax.get_lines())
    assert "dashed" not in without.axes[0].get_ylabel()
    assert all(t.get_fontsize() >= 8 for fig in seen for ax in fig.axes
               for t in (ax.title, ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(), *ax.get_yticklabels()))


def test_an_unreadable_runs_csv_is_one_line(tmp_path, capsys):
    for name, data in (("empty.csv", b""), ("binary.csv", b"\x89PNG\x00\xff\xfe" * 20)):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SystemExit) as e:
            main([str(tmp_path / name), "--out", str(tmp_path / "r")])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and name in err


def test_old_summaries_are_upgraded_in_one_place():
    from ablate.run.summary import upgrade

    old = {"schema": 1, "status": "complete", "method": "simsiam", "device": "cpu"}
    s = upgrade(old, {"train": {"precision": "auto", "channels_last": "auto"}})
    assert (s["invariance"], s["scale_free"], s["precision"], s["channels_last"]) == ("neg_cosine", True, "fp32",
                                                                                      False)
    assert "invariance" not in old  # a copy
    s = upgrade({**old, "device": "cuda:0"}, {"method": {"invariance": "mse"}, "train": {"precision": "auto"}})
    assert (s["invariance"], s["scale_free"], s["precision"], s["channels_last"]) == ("mse", False, "bf16", True)
    assert upgrade({"method": "random"})["invariance"] is None and upgrade({"method": "random"})["scale_free"] is None


def test_schema2_fields_are_shown(tmp_path):
    """A summary that records its initialization's metrics and whether its verdict settled: the cell and the
    diagnostics say a run ended no better than its own initialization and that a verdict is unsettled."""
    run = fake_run(tmp_path, "vicreg_s0", "vicreg", switches("vicreg", "none"), row="vicreg", reg="none",
                   verdict="collapse", linear=30.0)
    s = json.loads((run / "summary.json").read_text())
    s.update(schema=2, invariance="mse", scale_free=False, metrics_init={"linear_top1": 45.5, "knn_top1": 40.0},
             verdict_settled=False, verdict_settled_reason="z_scale still rising at the last evaluation")
    (run / "summary.json").write_text(json.dumps(s))
    write_report([tmp_path], tmp_path / "r", figures=False)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "collapse 1/1 (verdict unsettled in 1/1, no better than init in 1/1) / collapse" in table_row(
        md, "| VICReg |  |  |  | ✓ |")
    diag = table_row(md.split("### Diagnostics per run")[1], "| VICReg (vicreg), No Reg |")
    assert "collapse (unsettled) (no better than init)" in diag and "| 30.0 | 45.5 |" in diag
    assert "z_scale still rising at the last evaluation" in diag
    df = pd.read_csv(tmp_path / "r" / "runs.csv")
    assert df["init_linear_top1"].tolist() == [45.5] and df["no_better_than_init"].tolist() == [True]

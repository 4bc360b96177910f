"""``python -m ablate.report RUNS_DIR [RUNS_DIR ...] --out DIR``: sweep runs -> the paper-style table.

Reads every ``summary.json`` (and every started run without one) below the given directories and writes into
DIR:
  report.md  VICReg Table 4's layout with our linear-probe top-1 beside the paper's number, a flag on each
             cell whose collapse / no-collapse disagrees with the paper, per-run diagnostics, the protocol,
             the data and scale, and the command that regenerates the runs
  runs.csv   one row per run: the six switches, method, baseline, seed, status, verdict, every final metric and
             linear_norm, the linear top-1 placed between the random (0) and supervised (1) baselines
  *.png      the table coloured by verdict, embedding std and RankMe over epochs, singular spectra, and for
             factorial sweeps a grid of verdicts over the six switches
A run is placed in a table cell by its ``choices.row`` / ``choices.reg``, else by its method and switches, so
runs of the factorial sweep and hand-made runs land in the table too. Runs are grouped into settings (scale,
data, backbone, epochs); seeds of one cell give mean +- std. A setting's baseline runs (``method.baseline``:
random, supervised) sit above its tables, never in a cell.
"""

import argparse
import functools
import json
import math
import shlex
import sys
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from ..config import TECHNIQUES, conf_dir
from ..errors import AblateError
from ..losses import reg_geometry
from ..run.summary import FINISHED, STATUSES
from . import factorial as fa

REGS = {"none": "No Reg", "var": "Var Reg", "var_cov": "Var/Cov Reg"}
REG_OF_SWITCHES = {(False, False): "none", (True, False): "var", (True, True): "var_cov"}
SHORT = {"ema": "ME", "stop_grad": "SG", "predictor": "PR", "batchnorm": "BN", "var": "Var", "cov": "Cov"}
SEVERITY = ("ok", "dimensional_collapse", "diverged", "collapse")  # a tied cell's colour: the last of these
GEOMETRIES = {"auto": "var/cov in the geometry the invariance compares (`reg_geometry=auto`, the default: sphere "
                        "for BYOL/SimSiam, raw for VICReg)",
              "raw": "var/cov on the raw projector outputs in every row (`reg_geometry=raw`)",
              "sphere": "var/cov on sqrt(d) z/|z| in every row (`reg_geometry=sphere`)"}
COLORS = {"ok": "#66bb6a", "dimensional_collapse": "#ffca28", "collapse": "#ef5350", "diverged": "#ab47bc",
          "failed": "#9e9e9e", "pending": "#f5f5f5"}


def warn(msg: str) -> None:
    print(f"ablate.report: warning: {msg}", file=sys.stderr)


def reference() -> pd.DataFrame:
    """The paper's Table 4 (shipped in the package), indexed by the conf/row/ option name."""
    with (resources.files("ablate") / "reference" / "vicreg_table4.csv").open() as f:
        ref = pd.read_csv(f, comment="#", dtype=str, keep_default_na=False).set_index("row")
    for t in TECHNIQUES[:4]:
        ref[t] = ref[t] == "1"
    return ref


# ---------------------------------------------------------------- reading runs

def _yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _sweep_dir(run_dir: Path) -> Path | None:
    for p in run_dir.parents:
        if (p / "multirun.yaml").exists():
            return p
    return None


def offline_linear(run_dir: Path) -> dict:
    """``linear_eval_top1`` from the run's ``linear_eval.json`` (``python -m ablate.linear``), when there is one."""
    res = _json(run_dir / "linear_eval.json")
    top1 = res.get("top1") if isinstance(res, dict) else None
    return {"linear_eval_top1": top1} if _is_number(top1) else {}


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _old_precision(train: dict, s: dict) -> str | None:
    """The precision of a run from before summary.json recorded it: ``auto`` then meant bf16 on CUDA only."""
    p, device = train.get("precision"), s.get("device")
    if p in ("fp32", "bf16"):
        return p
    return None if p is None or device is None else ("bf16" if str(device).startswith("cuda") else "fp32")


def _old_channels_last(train: dict, s: dict, precision: str | None) -> bool | None:
    """The memory format of a run from before summary.json recorded it: ``auto`` then meant NHWC on CUDA or in
    bf16 only."""
    v = train.get("channels_last", "auto")
    if v != "auto":
        return bool(v)
    device = s.get("device")
    return None if device is None else (str(device).startswith("cuda") or precision == "bf16")


def _layout(channels_last) -> str:
    if channels_last is None or (isinstance(channels_last, float) and channels_last != channels_last):
        return "?"
    return "NHWC" if channels_last in (True, "True", "true") else "NCHW"


def load_run(run_dir: Path, summary: dict | None) -> dict:
    """One run as a flat record; fields a failed or unfinished run's summary lacks come from Hydra's files."""
    s = summary or {"status": "pending"}
    if not isinstance(s.get("metrics", {}), dict) or not all(map(_is_number, (s.get("metrics") or {}).values())):
        raise Malformed(f"{run_dir / 'summary.json'} has metrics that are not numbers")
    cfg = _yaml(run_dir / ".hydra" / "config.yaml") or _yaml(run_dir / "config.yaml") or {}
    hydra = _yaml(run_dir / ".hydra" / "hydra.yaml") or {}
    choices = s.get("choices") or (hydra.get("hydra", {}).get("runtime", {}).get("choices") or {})
    tech = s.get("techniques") or ({t: cfg.get(t) is not None for t in TECHNIQUES} if cfg else None)
    section = lambda k: cfg.get(k) if isinstance(cfg.get(k), dict) else {}  # noqa: E731
    curve = read_metrics(run_dir / "metrics.jsonl")
    epochs = s.get("epochs", section("train").get("epochs"))
    method = s.get("method") or section("method").get("name")
    invariance = section("method").get("invariance") or _preset_invariance(method)
    precision = s.get("precision") or _old_precision(section("train"), s)
    return {
        "dir": str(run_dir), "sweep_dir": _sweep_dir(run_dir), "status": s.get("status"), "source": None,
        "baseline": s.get("baseline") or section("method").get("baseline"),
        "device": s.get("device"), "precision": precision,
        "channels_last": s.get("channels_last", _old_channels_last(section("train"), s, precision)),
        "compile_aug": s.get("compile_aug"),  # None: a run from before train.compile_aug (eager)
        "error": s.get("error"), "verdict": s.get("verdict"), "verdict_reason": s.get("verdict_reason"),
        "method": method, "techniques": tech, "invariance": invariance,
        # runs from before the switch (no field, no config key) acted on raw outputs
        "reg_geometry": s.get("reg_geometry") or reg_geometry(cfg.get("reg_geometry") or "raw", invariance),
        "seed": s.get("seed", cfg.get("seed")), "choices": choices,
        "experiment": choices.get("experiment"), "scale": choices.get("scale"),
        "data": s.get("data") or section("data").get("name"),
        "backbone": s.get("backbone") or section("backbone").get("name"),
        "epochs": epochs, "epochs_completed": s.get("epochs_completed", len(curve)),
        "wall_s": s.get("wall_s"), "embedding_dim": s.get("embedding_dim"), "chance_top1": s.get("chance_top1"),
        "metrics": {**(s.get("metrics") or {}), **offline_linear(run_dir)}, "protocol": s.get("protocol") or {},
        "spectrum": s.get("spectrum_z"),
        "curve": curve, "overrides": s.get("overrides") or [],
    }


@functools.cache
def _preset_invariance(method: str | None) -> str | None:
    """The invariance a method preset sets (conf/method/NAME.yaml), for runs whose config lacks it."""
    preset = _yaml(conf_dir() / "method" / f"{method}.yaml") if method else None
    return ((preset or {}).get("method") or {}).get("invariance")


def regularized(run: dict) -> bool:
    return bool((run["techniques"] or {}).get("var") or (run["techniques"] or {}).get("cov"))


def in_geometry(run: dict, mode: str) -> bool:
    """Whether a run belongs to the table of ``reg_geometry=mode``: runs without var/cov belong to every one."""
    return not regularized(run) or run["reg_geometry"] == reg_geometry(mode, run["invariance"])


class Malformed(ValueError):
    """A run file that is readable but not what ablate writes; the run is skipped with a warning."""


def _is_number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def read_metrics(path: Path) -> list[dict]:
    """The rows of metrics.jsonl; a last line cut short is a row being written, any other bad line is Malformed."""
    rows = []
    lines = path.read_text().splitlines() if path.exists() else []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:  # a line being written by a running job
                break
            raise Malformed(f"{path} line {i + 1} is not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int) or not all(
                map(_is_number, row.values())):
            raise Malformed(f"{path} line {i + 1} is not a metrics row (an integer epoch and numbers)")
        rows.append(row)
    return rows


CSV_FIELDS = ("dir", "experiment", "scale", "row", "reg", "method", "baseline", *TECHNIQUES, "reg_geometry", "seed",
              "status", "verdict", "verdict_reason", "error", "data", "backbone", "epochs", "epochs_completed",
              "wall_s", "embedding_dim", "chance_top1", "device", "precision", "channels_last", "compile_aug",
              "linear_norm")


def load_csv_runs(path: Path) -> list[dict]:
    """The runs of an earlier report's runs.csv, as records without curves or spectra: a sweep that adds a
    dimension can be reported beside the runs it leaves unchanged without training them again."""
    try:
        df = fa.read_runs_csv(path, ("dir", "method", "status", *TECHNIQUES), dtype={"seed": object})
    except AblateError as e:  # main prints it in one line, exit 2
        raise SystemExit(f"ablate.report: error: {e}") from None
    runs = []
    for rec in df.astype(object).where(df.notna(), None).to_dict("records"):
        tech = {t: str(rec[t]) == "True" for t in TECHNIQUES}
        method, seed = rec["method"], rec["seed"]
        invariance = _preset_invariance(method)
        runs.append({
            **{k: rec.get(k) for k in CSV_FIELDS if k not in TECHNIQUES},
            "seed": int(seed) if str(seed).isdigit() else seed, "techniques": tech, "invariance": invariance,
            "channels_last": rec["channels_last"] if "channels_last" in df.columns  # older files predate the column
            else _old_channels_last({}, rec, rec.get("precision")),
            "compile_aug": {"True": True, "False": False}.get(str(rec.get("compile_aug"))),
            "reg_geometry": rec.get("reg_geometry") or reg_geometry("raw", invariance),
            "choices": {k: rec.get(k) for k in ("row", "reg", "experiment", "scale") if rec.get(k)},
            "metrics": {k: v for k, v in rec.items() if k not in CSV_FIELDS and v is not None},
            "protocol": {}, "spectrum": None, "curve": [], "overrides": [], "sweep_dir": None, "source": str(path),
        })
    return runs


def _append_run(runs: list[dict], run_dir: Path, summary: dict | None) -> None:
    try:
        runs.append(load_run(run_dir, summary))
    except Malformed as e:
        warn(f"skipping {run_dir}: {e}")


def _identity(run: dict) -> tuple:
    """What makes two records the same run: its directory and, where var/cov act, their geometry."""
    return Path(run["dir"]).resolve(), run["reg_geometry"] if regularized(run) else None


def find_runs(dirs: list[Path]) -> list[dict]:
    """Finished and failed runs (summary.json) and started ones (Hydra job dir or metrics, no summary yet)
    below each directory; a runs.csv file stands for the runs of an earlier report, each kept unless a run
    found in a directory has its path and its reg_geometry."""
    runs, seen = [], set()
    for root in (d for d in dirs if d.is_dir()):
        for path in sorted(root.rglob("summary.json")):
            try:
                s = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                warn(f"skipping {path}: not readable JSON ({e})")
                continue
            if not isinstance(s, dict) or s.get("status") not in STATUSES:
                warn(f"skipping {path}: not an ablate run summary (no status among {', '.join(STATUSES)})")
                continue
            seen.add(path.parent.resolve())
            _append_run(runs, path.parent, s)
        started = {p.parent.parent for p in root.rglob(".hydra/config.yaml")} | {
            p.parent for p in root.rglob("metrics.jsonl")}
        for run_dir in sorted(started):
            if run_dir.resolve() not in seen and not (run_dir / "summary.json").exists():
                seen.add(run_dir.resolve())
                _append_run(runs, run_dir, None)
    live = {_identity(r) for r in runs}
    for csv in (d for d in dirs if d.is_file()):
        runs += [r for r in load_csv_runs(csv) if _identity(r) not in live]
    return runs


def place(run: dict, ref: pd.DataFrame) -> tuple[str, str] | None:
    """The Table 4 cell (row, reg) of a run, or None when its method and switches are not in the table."""
    tech, method = run["techniques"], run["method"]
    by_switches = None
    if tech and method:
        reg = REG_OF_SWITCHES.get((tech["var"], tech["cov"]))
        match = ref[(ref["method"] == method) & pd.concat([ref[t] == tech[t] for t in TECHNIQUES[:4]],
                                                           axis=1).all(axis=1)]
        if reg and len(match):
            by_switches = (match.index[0], reg)
    row, reg = run["choices"].get("row"), run["choices"].get("reg")
    if row in ref.index and reg in REGS:
        if by_switches is not None and by_switches != (row, reg):
            warn(f"{run['dir']}: row={row} reg={reg} but its switches are those of {by_switches}; "
                 f"placing it by its switches")
            return by_switches
        return row, reg
    return by_switches


def setting_of(run: dict) -> tuple:
    """Runs that can share a cell: same data, backbone and training length (from any sweep, any seed)."""
    return (run["data"] or "?", run["backbone"] or "?", run["epochs"])


# ---------------------------------------------------------------- cells

def summarize_cell(runs: list[dict], seeds: list) -> dict:
    """Text and colour of one cell: 'collapse' when every finished seed collapsed, else mean +- std of the
    linear-probe top-1 over the seeds that did not; failed and pending seeds are said so."""
    done = [r for r in runs if r["status"] in FINISHED]
    failed = [r for r in runs if r["status"] == "failed"]
    started = [r for r in runs if r["status"] == "pending"]
    missing = len([s for s in seeds if s not in {r["seed"] for r in runs}])
    notes = []
    if failed:
        notes.append(f"{len(failed)} failed")
    if started or missing:
        notes.append(f"{len(started) + missing} pending")
    if not done:
        if failed:
            return {"text": "failed: " + _short(failed[0]["error"]), "color": "failed", "collapse": None,
                    "done": 0, "acc": None}
        if started:
            r = started[0]
            return {"text": f"pending ({r['epochs_completed']}/{r['epochs']} ep)", "color": "pending",
                    "collapse": None, "done": 0, "acc": None}
        return {"text": "pending", "color": "pending", "collapse": None, "done": 0, "acc": None}
    verdicts = [r["verdict"] for r in done]
    n_col = verdicts.count("collapse")
    shown = [r for r in done if r["verdict"] not in ("collapse", "diverged")]
    accs = pd.Series([r["metrics"].get("linear_top1") for r in shown], dtype=float).dropna()
    if n_col == len(done):  # the collapsed runs' accuracy, shown only beside its place between the baselines
        col_accs = pd.Series([r["metrics"].get("linear_top1") for r in done], dtype=float).dropna()
        norm = _mean_norm(done)
        text = "collapse" if norm is None or not len(col_accs) else f"collapse: {col_accs.mean():.1f}{norm}"
    elif verdicts.count("diverged") == len(done):
        text = "diverged"
    else:
        text = (f"{accs.mean():.1f}" + (f" ± {accs.std():.1f}" if len(accs) > 1 else "") + (_mean_norm(shown) or "")
                if len(accs) else "n/a")
        if n_col:
            notes.insert(0, f"collapse in {n_col}/{len(done)}")
        if "dimensional_collapse" in verdicts:
            notes.insert(0, "dim. collapse" + (f" in {verdicts.count('dimensional_collapse')}/{len(done)}"
                                               if len(done) > 1 else ""))
        if "diverged" in verdicts:
            notes.insert(0, f"diverged in {verdicts.count('diverged')}/{len(done)}")
    if notes:
        text += f" ({', '.join(notes)})"
    # the most frequent verdict; a tie shows the worse outcome (a set's order changes with the hash seed)
    color = max(set(verdicts), key=lambda v: (verdicts.count(v), SEVERITY.index(v)))
    collapse = True if n_col == len(done) else (False if n_col == 0 else "mixed")
    return {"text": text, "color": color, "collapse": collapse, "done": len(done),
            "acc": float(accs.mean()) if len(accs) and n_col < len(done) else None}


def _mean_norm(runs: list[dict]) -> str | None:
    """' [n]': the mean of the runs' linear_norm, or None unless every run has one (no baselines)."""
    norms = [r.get("linear_norm") for r in runs]
    return None if not norms or any(n is None for n in norms) else f" [{sum(norms) / len(norms):.2f}]"


# ---------------------------------------------------------------- baselines

BASELINE_LABELS = {"random": "untrained backbone (`random`)", "supervised": "supervised (`supervised`)"}


def baseline_refs(base: list[dict]) -> dict:
    """{kind: {seed: linear_top1}} of a setting's finished baseline runs (a seed run twice: its mean)."""
    refs = {}
    for kind in BASELINE_LABELS:
        by_seed = {}
        for r in base:
            acc = r["metrics"].get("linear_top1")
            if r["baseline"] == kind and r["status"] == "complete" and acc is not None:
                by_seed.setdefault(r["seed"], []).append(acc)
        refs[kind] = {seed: sum(a) / len(a) for seed, a in by_seed.items()}
    return refs


def linear_norm(run: dict, refs: dict) -> float | None:
    """(acc - random) / (supervised - random) of a run's linear top-1: 0 is the untrained backbone, 1 the
    supervised one. Each baseline from the run's seed when it ran, else its mean over seeds; None without
    both baselines or the run's accuracy."""
    acc = run["metrics"].get("linear_top1")
    ends = []
    for kind in ("random", "supervised"):
        by_seed = refs.get(kind) or {}
        ends.append(by_seed.get(run["seed"], sum(by_seed.values()) / len(by_seed) if by_seed else None))
    lo, hi = ends
    if acc is None or lo is None or hi is None or hi == lo:
        return None
    return (acc - lo) / (hi - lo)


def baselines_markdown(s: dict) -> str:
    """The rows above each Table 4: each baseline's linear and kNN top-1 over seeds, or why it is missing."""
    rows = []
    for kind, label in BASELINE_LABELS.items():
        runs = [r for r in s["baselines"] if r["baseline"] == kind]
        done = [r for r in runs if r["status"] == "complete"]
        if not done:
            failed = [r for r in runs if r["status"] == "failed"]
            why = ("failed: " + _short(failed[0]["error"]) if failed else
                   "diverged" if any(r["status"] == "diverged" for r in runs) else "pending" if runs else
                   "not run (re-run the sweep to add it)")
            rows.append([label, why, "", ""])
            continue
        cols = []
        for key in ("linear_top1", "knn_top1"):
            v = pd.Series([r["metrics"].get(key) for r in done], dtype=float).dropna()
            cols.append(f"{v.mean():.1f}" + (f" ± {v.std():.1f}" if len(v) > 1 else "") if len(v) else "n/a")
        rows.append([label, *cols, ", ".join(map(str, sorted({r["seed"] for r in done}, key=str)))])
    return md_table(["Baseline (same data, backbone, epochs and probe)", "linear top-1 %", "kNN top-1 %", "seeds"],
                    rows)


def _short(error, limit: int = 70) -> str:
    error = " ".join(str(error or "unknown error").split())
    return error if len(error) <= limit else error[:limit - 3] + "..."


def _ratio(m: dict, num: str, den: str) -> float | None:
    """m[num] / m[den], or None where either is missing (runs that predate a metric) or the denominator is 0."""
    return m[num] / m[den] if m.get(num) is not None and m.get(den) else None


def _fmt(x, digits: int = 1) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(x) else (f"{x:.{digits}f}" if abs(x) >= 10 ** -digits or x == 0 else f"{x:.2g}")


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- report

def build_tables(runs: list[dict], ref: pd.DataFrame) -> list[dict]:
    """One entry per setting: its runs, the Table 4 cells, and the off-table (factorial) combinations."""
    for r in runs:
        r["cell"] = place(r, ref)
    settings = []
    for key in sorted({setting_of(r) for r in runs}, key=str):
        every = [r for r in runs if setting_of(r) == key]
        base = [r for r in every if r["baseline"]]
        refs = baseline_refs(base)
        for r in every:
            r["linear_norm"] = linear_norm(r, refs)
        srun = [r for r in every if not r["baseline"]]  # the runs that fill cells
        seeds = sorted({r["seed"] for r in srun if r["seed"] is not None}, key=str)
        tables = {}  # a factorial's runs fill Table 4's cells they match, but do not call for the table alone
        if any(r["cell"] and r["experiment"] != "factorial" or r["experiment"] == "vicreg_table4" for r in srun):
            for mode in geometry_modes([r for r in srun if r["cell"]]):
                tables[mode] = {(row, reg): summarize_cell([r for r in srun if r["cell"] == (row, reg)
                                                            and in_geometry(r, mode)], seeds)
                                for row in ref.index for reg in REGS}
        factorial = {}
        for method in sorted({r["method"] for r in srun if r["method"]}):
            mruns = [r for r in srun if r["method"] == method and r["techniques"]]
            if any(r["experiment"] == "factorial" for r in mruns) or any(not r["cell"] for r in mruns):
                factorial[method] = {combo: summarize_cell([r for r in mruns if _combo(r) == combo], seeds)
                                     for combo in _combos(mruns, full=any(r["experiment"] == "factorial"
                                                                          for r in mruns))}
        named = [r["scale"] for r in every if r["scale"]]
        scale = max(set(named), key=named.count) if named else "custom"
        settings.append({"key": key, "scale": scale, "runs": every, "seeds": seeds, "tables": tables,
                         "factorial": factorial, "analysis": analyses(srun, factorial),
                         "baselines": base, "normalized": bool(refs["random"] and refs["supervised"])})
    scales = [s["scale"] for s in settings]
    for s in settings:  # file-name stem of the setting's figures
        s["slug"] = s["scale"] if scales.count(s["scale"]) == 1 else "_".join(map(str, (s["scale"], *s["key"])))
    return settings


def analyses(runs: list[dict], factorial: dict) -> dict:
    """Per recipe whose runs (default geometry) form a factorial, at least one pair of switch combinations that
    differ in one switch alone: the finished runs as ``ablate.factorial`` reads them from runs.csv."""
    out = {}
    for method in factorial:
        mruns = [r for r in runs if r["method"] == method and r["techniques"] and in_geometry(r, "auto")]
        done = fa.outcomes(runs_frame(mruns)) if mruns else pd.DataFrame()
        if len(done) and len(fa.main_effects(done)):
            out[method] = done
    return out


def geometry_modes(runs: list[dict]) -> list[str]:
    """The reg_geometry tables worth showing: auto always, raw and sphere where some regularized run belongs
    to them and not to auto (so a table differs from the default in at least one cell)."""
    reg = [r for r in runs if regularized(r)]
    return ["auto"] + [m for m in ("raw", "sphere")
                       if any(in_geometry(r, m) and not in_geometry(r, "auto") for r in reg)]


def _combo(run) -> tuple:
    return tuple(bool(run["techniques"][t]) for t in TECHNIQUES)


def _combos(runs, full: bool) -> list[tuple]:
    if full:
        return [tuple(bool(i >> (5 - k) & 1) for k in range(6)) for i in range(63, -1, -1)]
    return sorted({_combo(r) for r in runs}, reverse=True)


def table_markdown(setting: dict, mode: str, ref: pd.DataFrame) -> tuple[str, list[str]]:
    rows, flags = [], []
    for row, r in ref.iterrows():
        cells = []
        for reg in REGS:
            c, paper = setting["tables"][mode][(row, reg)], r[reg]
            dagger = "†" if r["original"] == reg else ""
            flag = ""
            if c["collapse"] is not None and c["collapse"] != (paper == "collapse"):
                flag = " ⚠"
                reasons = sorted({x["verdict_reason"] for x in setting["runs"]
                                  if x["cell"] == (row, reg) and in_geometry(x, mode) and x["status"] in FINISHED
                                  and x["verdict_reason"]})
                flags.append(f"- {r['label']} ({row}), {REGS[reg]}: ours {c['text']}, paper {paper}. "
                             f"Our verdict: {'; '.join(reasons)}.")
            cells.append(f"{c['text']} / {paper}{dagger}{flag}")
        rows.append([r["label"], *("✓" if r[t] else "" for t in TECHNIQUES[:4]), *cells])
    header = ["Method", "ME", "SG", "PR", "BN", *(f"{v} (ours / paper)" for v in REGS.values())]
    return md_table(header, rows), flags


# The paper's statements about Table 4; each test reads one table of cells and returns True, False or None
# (not run yet), and names the cell it decides on.
def _no_collapse(cell):
    return cell, lambda t: None if t[cell]["collapse"] is None else t[cell]["collapse"] is False


def _collapse(cell):
    return cell, lambda t: None if t[cell]["collapse"] is None else t[cell]["collapse"] is True


def _better(cell, base):
    """``cell`` beats ``base``: a higher mean linear top-1, or no collapse where ``base`` collapsed."""
    def test(t):
        a, b = t[cell], t[base]
        if a["collapse"] is None or b["collapse"] is None:
            return None
        if a["collapse"] is True or b["collapse"] is True:
            return a["collapse"] is not True
        return None if a["acc"] is None or b["acc"] is None else a["acc"] > b["acc"]
    return cell, test


def _close(cell, base, points=2.0):
    def test(t):
        a, b = t[cell], t[base]
        if a["collapse"] is None or b["collapse"] is None:
            return None
        return a["acc"] is not None and b["acc"] is not None and abs(a["acc"] - b["acc"]) <= points
    return cell, test


WITH_BN = ("byol", "simsiam")
ROWS_3_8 = ("simsiam_no_bn", "simsiam_no_pred_no_bn", "vicreg_pred_no_bn", "vicreg_pred", "vicreg", "vicreg_no_bn")
CLAIMS = [
    ("BYOL and SimSiam with BN need no var/cov: no collapse with No Reg",
     [_no_collapse((row, "none")) for row in WITH_BN]),
    ("SimSiam without BN does not collapse with No Reg, but is below SimSiam with BN (35.1 vs 67.9)",
     [_no_collapse(("simsiam_no_bn", "none")), _better(("simsiam", "none"), ("simsiam_no_bn", "none"))]),
    ("Invariance alone collapses in rows 4-8 (SimSiam without predictor and BN, every VICReg row)",
     [_collapse((row, "none")) for row in ROWS_3_8[1:]]),
    ("The variance term alone prevents collapse in every row",
     [_no_collapse((row, "var")) for row in (*WITH_BN, *ROWS_3_8)]),
    ("Variance and covariance together prevent collapse in every row",
     [_no_collapse((row, "var_cov")) for row in (*WITH_BN, *ROWS_3_8)]),
    ("Covariance improves on variance alone in rows 3-8 (+9 to +12 points in the paper)",
     [_better((row, "var_cov"), (row, "var")) for row in ROWS_3_8]),
    ("Var or Var/Cov changes BYOL and SimSiam with BN little (paper: within 1 point; here: within 2)",
     [_close((row, reg), (row, "none")) for row in WITH_BN for reg in ("var", "var_cov")]),
]
VERDICT_WORDS = {(True,): "held", (False,): "not held", (False, True): "mixed"}


def claims_markdown(setting: dict, ref: pd.DataFrame) -> str:
    """One row per claim: held / not held / mixed in each reg_geometry table, and the cells that decide it."""
    modes = list(setting["tables"])
    rows = []
    for claim, tests in CLAIMS:
        outcomes = []
        for mode in modes:
            got = [test(setting["tables"][mode]) for _, test in tests]
            known = sorted({g for g in got if g is not None})
            word = VERDICT_WORDS.get(tuple(known), "pending")
            if word == "mixed":
                word += ": not in " + ", ".join(_cell(ref, c) for (c, _), g in zip(tests, got) if g is False)
            if known and None in got:
                word += f" ({len(got) - got.count(None)} of {len(got)} cells run)"
            outcomes.append(word)
        rows.append([claim, *outcomes, ", ".join(_cell(ref, c) for c, _ in tests)])
    return md_table(["Paper's claim (VICReg Table 4)", *(f"`reg_geometry={m}`" for m in modes), "cells"], rows)


def _cell(ref: pd.DataFrame, cell: tuple) -> str:
    row, reg = cell
    return f"{ref.loc[row, 'label']} {' '.join(SHORT[t] for t in TECHNIQUES[:4] if ref.loc[row, t]) or '-'} " \
           f"{REGS[reg].replace(' Reg', '') if reg != 'none' else REGS[reg]}"


def diagnostics_markdown(runs: list[dict], ref: pd.DataFrame) -> str:
    order = {(row, reg): i for i, (row, reg) in enumerate((a, b) for a in ref.index for b in REGS)}
    runs = sorted(runs, key=lambda r: (order.get(r["cell"], len(order)), r["method"] or "",
                                       [not x for x in _combo(r)] if r["techniques"] else [], str(r["seed"])))
    rows, offline = [], any("linear_eval_top1" in r["metrics"] for r in runs)
    for r in runs:
        m = r["metrics"]
        where = (f"{ref.loc[r['cell'][0], 'label']} ({r['cell'][0]}), {REGS[r['cell'][1]]}" if r["cell"] else
                 f"baseline {BASELINE_LABELS.get(r['baseline'], r['baseline'])}" if r["baseline"] else
                 f"{r['method']} " + " ".join(SHORT[t] for t in TECHNIQUES if (r["techniques"] or {}).get(t)))
        where += f" [{r['reg_geometry']}]" if regularized(r) else ""
        ratio, shrink = _ratio(m, "z_std", "z_std_ref"), _ratio(m, "z_scale", "z_scale_init")
        verdict = r["verdict"] or ("baseline" if r["baseline"] and r["status"] == "complete" else r["status"])
        why = r["verdict_reason"] or (_short(r["error"], 120) if r["status"] == "failed" else "")
        wall = "" if r["wall_s"] is None else (f"{r['wall_s']:.0f} s" if r["wall_s"] < 120 else
                                               f"{r['wall_s'] / 60:.1f} min")
        rows.append([where, r["seed"], verdict, _fmt(m.get("z_std"), 3), _fmt(m.get("z_std_ref"), 3),
                     _fmt(ratio, 2), _fmt(shrink, 2), f"{_fmt(m.get('rank_z'))} / {r['embedding_dim'] or '?'}",
                     _fmt(m.get("rank_h")), _fmt(m.get("knn_top1")), _fmt(m.get("linear_top1")),
                     _fmt(r.get("linear_norm"), 2), f"{r['epochs_completed']}/{r['epochs']}", wall, why])
        if offline:
            rows[-1].insert(11, _fmt(m.get("linear_eval_top1")))
    header = ["Cell", "seed", "verdict", "z_std", "1/sqrt(d)", "ratio", "z_scale / init", "RankMe z / d",
              "RankMe h", "kNN %", "linear %", "norm", "epochs", "wall", "why"]
    if offline:  # python -m ablate.linear's full protocol, beside the in-run probe
        header.insert(11, "linear eval %")
    return md_table(header, rows)


def factorial_markdown(cells: dict) -> str:
    rows = [[*("✓" if on else "" for on in combo), c["text"]] for combo, c in cells.items()]
    return md_table([SHORT[t] for t in TECHNIQUES] + ["linear top-1 % (or verdict)"], rows)


def _with_seeds(task: list[str], seeds: set) -> list[str]:
    """A sweep's overrides with the seeds its runs have: multirun.yaml holds only the last invocation's, and a
    sweep is often extended one seed at a time into the same directory."""
    seeds = sorted(x for x in seeds if isinstance(x, int))
    if len(seeds) < 2:
        return list(task)
    kept = [o for o in task if not o.startswith("seed=")]
    return kept + ["seed=" + ",".join(map(str, seeds))]


def regen_commands(runs: list[dict]) -> list[str]:
    """The sweep commands from each sweep's multirun.yaml (run from the directory the sweep was started in);
    single runs from their recorded overrides."""
    cmds = []
    for sweep in sorted({r["sweep_dir"] for r in runs if r["sweep_dir"]}):
        ov = (_yaml(sweep / "multirun.yaml") or {}).get("hydra", {}).get("overrides", {})
        extra = [o for o in ov.get("hydra", []) if not o.startswith(("hydra.mode=", "hydra.output_subdir="))]
        task = _with_seeds(ov.get("task", []), {r["seed"] for r in runs if r["sweep_dir"] == sweep})
        cmds.append(" ".join(["python -m ablate -m", *map(shlex.quote, task + extra)]))
    for r in runs:
        if not r["sweep_dir"] and r["overrides"]:
            cmds.append(" ".join(["python -m ablate", *map(shlex.quote, r["overrides"])]))
    return list(dict.fromkeys(cmds))


def tables_markdown(s: dict, ref: pd.DataFrame) -> list[str]:
    """The claims table, then one Table 4 per reg_geometry with its baselines and flags, then failed and
    diverged runs."""
    runs, out = s["runs"], []
    if s["tables"]:
        out += ["### The paper's claims", "",
                "Each statement the paper makes about Table 4, checked on these runs (collapse / no collapse from "
                "the verdicts, improvements from the mean linear top-1), in each table below.", "",
                claims_markdown(s, ref), ""]
    norm_note = ("[n] beside an accuracy places it between the baselines above: n = (acc - random) / (supervised "
                 "- random), the mean of each run's value with its own seed's baselines (0: no better than the "
                 "untrained backbone, 1: as good as the supervised one); `collapse: acc [n]` gives the collapsed "
                 "runs' accuracy, whose backbone can still carry what the initialization had. "
                 if s["normalized"] else "No [n]: this setting lacks a finished random and supervised baseline. ")
    for mode in s["tables"]:
        text, flags = table_markdown(s, mode, ref)
        out += ["### VICReg Table 4" + ("" if mode == "auto" else f", `reg_geometry={mode}`"), "",
                f"{GEOMETRIES[mode][0].upper()}{GEOMETRIES[mode][1:]}. "
                "Ours: linear-probe top-1 (%) on the held-out set, mean ± std over seeds where there are several; "
                "`collapse` where every finished seed's verdict is complete collapse. " + norm_note +
                "Paper: ImageNet linear "
                "top-1 after 100 epochs, ResNet-50 (VICReg, Table 4; † the method's original setup). "
                "⚠ marks a cell whose collapse / no-collapse disagrees with the paper.", "",
                baselines_markdown(s), "", text, ""]
        out += ["Cells that disagree with the paper:", "", *flags, ""] if flags else [
            "Every finished cell agrees with the paper on collapse / no collapse.", ""]
    if s["tables"]:
        failed = [r for r in runs if r["status"] == "failed"]
        if failed:
            out += ["Failed runs:", "", *(f"- `{r['dir']}`: {r['error']}" for r in failed), ""]
        diverged = [r for r in runs if r["status"] == "diverged"]
        if diverged:  # neither collapse nor a number: a cell the paper trained and we did not
            out += ["Diverged runs (non-finite loss; no accuracy, counted as not collapsed):", "",
                    *(f"- `{r['dir']}`: {r['verdict_reason']}, after {r['epochs_completed']}/{r['epochs']} epochs"
                      for r in diverged), ""]
    return out


def provenance_markdown(s: dict) -> list[str]:
    """Protocol, data, scale and the commands (or earlier runs.csv) the runs came from."""
    (data, backbone, epochs), scale, runs, out = s["key"], s["scale"], s["runs"], []
    done = [r for r in runs if r["status"] in FINISHED]
    out += ["### Protocol, data and scale", ""]
    for key in ("linear_top1", "knn_top1", "eval_set"):
        values = sorted({r["protocol"].get(key) for r in done if r["protocol"].get(key)})
        out += [f"- {key}: {v}" for v in values]
    dims = sorted({r["embedding_dim"] for r in done if r["embedding_dim"]})
    devices = sorted({r["device"] or "?" for r in done})
    precisions = sorted({r.get("precision") or "?" for r in done})
    layouts = sorted({_layout(r.get("channels_last")) for r in done})
    colour = sorted({"compiled" if r.get("compile_aug") else "eager" for r in done})
    wall = sum(r["wall_s"] or 0 for r in done)
    out += [f"- data `{data}`, backbone `{backbone}`, {epochs} epochs, scale preset `{scale}`, embedding dims "
            f"{', '.join(map(str, dims)) or '?'}, device {', '.join(devices) or '?'}, precision "
            f"{', '.join(precisions) or '?'}, layout {', '.join(layouts) or '?'}, augmentation colour ops "
            f"{', '.join(colour) or '?'} (`train.compile_aug`), total training wall time "
            f"{wall / 60:.1f} min", ""]
    out += ["### Regenerate the runs", "", "```bash", *regen_commands(runs), "```", "",
            "Re-running a sweep skips the cells whose summary.json is complete.", ""]
    for src in sorted({r["source"] for r in runs if r["source"]}):
        n_src = sum(r["source"] == src for r in runs)
        out += [f"{n_src} runs are read from `{src}`, an earlier report's table of runs (final metrics and "
                f"verdicts only: no curves or spectra in the figures).", ""]
    return out


def setting_markdown(s: dict, ref: pd.DataFrame) -> str:
    (data, backbone, epochs), scale = s["key"], s["scale"]
    runs = s["runs"]
    n = {k: sum(r["status"] == k for r in runs) for k in (*STATUSES, "pending")}
    out = [f"## Setting `{scale}`: {data}, {backbone}, {epochs} epochs", "",
           f"{len(runs)} runs found: {n['complete']} complete, {n['diverged']} diverged, {n['failed']} failed, "
           f"{n['pending']} started and unfinished; seeds {', '.join(map(str, s['seeds'])) or 'none'}.", ""]
    out += tables_markdown(s, ref)
    for method, cells in s["factorial"].items():
        out += [f"### Switch combinations, `{method}` recipe", "", factorial_markdown(cells), ""]
        if method in s["analysis"]:
            png = f"interactions_{s['slug']}_{method}.png"
            mruns = [r for r in s["runs"] if r["method"] == method and r["techniques"]]
            geo = {r["reg_geometry"] for r in mruns if regularized(r)}
            auto = {r["reg_geometry"] for r in mruns if regularized(r) and in_geometry(r, "auto")}
            flag = f" --reg-geometry {auto.pop()}" if len(geo) > 1 and len(auto) == 1 else ""
            out += [f"### Which switch matters, `{method}` recipe", "",
                    f"From the finished runs of this recipe in `runs.csv` (var/cov in the default geometry); "
                    f"`python -m ablate.factorial runs.csv --method {method}{flag}` prints the same.", "",
                    fa.markdown(s["analysis"][method], heatmap=png), f"![{png}]({png})", ""]
    out += ["### Diagnostics per run", "",
            "z_std: std of l2-normalized embeddings over the held-out set (1/sqrt(d) for an isotropic "
            "embedding, 0 under collapse), the collapse test for the cosine losses of BYOL and SimSiam; "
            "z_scale / init: raw spread of z (sqrt of the mean per-dimension variance) over its value before "
            "training, the collapse test for VICReg, whose loss sees raw vectors up to a common offset (blank "
            "where the run predates it); RankMe: effective rank of the embeddings z and backbone features h.",
            "", diagnostics_markdown(runs, ref), ""]
    out += provenance_markdown(s)
    figs = [table_png(s, mode) for mode in s["tables"]]
    figs += [f"std_{s['slug']}.png", f"scale_{s['slug']}.png", f"rank_{s['slug']}.png", f"spectra_{s['slug']}.png"]
    figs += [f"factorial_{s['slug']}_{m}.png" for m in s["factorial"]]
    out += ["### Figures", "", *(f"![{f}]({f})" for f in figs), ""]
    return "\n".join(out)


# ---------------------------------------------------------------- figures

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _row_label(ref: pd.DataFrame, row: str) -> str:
    r = ref.loc[row]
    return f"{r['label']} " + (" ".join(SHORT[t] for t in TECHNIQUES[:4] if r[t]) or "-")


def _combo_label(method: str, combo: tuple) -> str:
    return f"{method} " + (" ".join(SHORT[t] for t, on in zip(TECHNIQUES, combo) if on) or "-")


def write_figures(s: dict, ref: pd.DataFrame, out: Path) -> None:
    plt = _pyplot()
    panels = []  # (title, runs) for every cell: the table's 24, then the off-table switch combinations
    for mode in s["tables"]:  # the default table's 24 cells, then the regularized cells of the other geometries
        table_figure(plt, s, mode, ref, out / table_png(s, mode))
        panels += [(f"{_row_label(ref, row)} | {REGS[reg]}" + ("" if mode == "auto" else f" [{mode}]"),
                    [r for r in s["runs"] if r["cell"] == (row, reg) and in_geometry(r, mode)])
                   for row in ref.index for reg in REGS if mode == "auto" or reg != "none"]
    for method, cells in s["factorial"].items():
        factorial_figure(plt, cells, f"{s['slug']}, {method} recipe", out / f"factorial_{s['slug']}_{method}.png")
        if method in s["analysis"]:
            fa.heatmap_figure(plt, s["analysis"][method], f"Interactions on collapse, {s['slug']}, {method} recipe",
                              out / f"interactions_{s['slug']}_{method}.png")
        panels += [(_combo_label(method, combo), [r for r in s["runs"] if not r["cell"] and r["method"] == method
                                                  and r["techniques"] and _combo(r) == combo])
                   for combo in cells if not any(r["cell"] and r["method"] == method and _combo(r) == combo
                                                 for r in s["runs"] if r["techniques"])]
    curves_figure(plt, panels, "z_std", "z_std_ref", "embedding std (dashed: 1/sqrt(d))",
                  out / f"std_{s['slug']}.png")
    curves_figure(plt, panels, "z_scale", "z_scale_init", "raw embedding spread (dashed: before training)",
                  out / f"scale_{s['slug']}.png", log=True)
    curves_figure(plt, panels, "rank_z", None, "RankMe of the embeddings", out / f"rank_{s['slug']}.png")
    spectra_figure(plt, s, ref, out / f"spectra_{s['slug']}.png")


def _legend(ax):
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=c, label=v) for v, c in COLORS.items()], loc="upper center",
              bbox_to_anchor=(0.5, -0.02), ncol=3, fontsize=8, frameon=False)


def table_png(s: dict, mode: str) -> str:
    return f"table4_{s['slug']}.png" if mode == "auto" else f"table4_{s['slug']}_{mode}.png"


def table_figure(plt, s: dict, mode: str, ref: pd.DataFrame, path: Path) -> None:
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(10, 6.5))
    for i, row in enumerate(ref.index):
        ax.text(-0.05, i + 0.5, _row_label(ref, row), ha="right", va="center", fontsize=9)
        for j, reg in enumerate(REGS):
            c, paper = s["tables"][mode][(row, reg)], ref.loc[row, reg]
            flag = c["collapse"] is not None and c["collapse"] != (paper == "collapse")
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=COLORS[c["color"]], edgecolor="black" if flag else
                                   "white", lw=2.5 if flag else 1))
            ax.text(j + 0.5, i + 0.5, f"{c['text']}\npaper: {paper}" + ("\n(!) disagrees" if flag else ""),
                    ha="center", va="center", fontsize=7, wrap=True)
    for j, reg in enumerate(REGS.values()):
        ax.text(j + 0.5, -0.1, reg, ha="center", va="bottom", fontsize=10)
    _finish_grid(plt, fig, ax, 3, len(ref), f"VICReg Table 4, ours ({s['slug']}, reg_geometry={mode}) vs paper, "
                 f"coloured by our verdict", path)


def _finish_grid(plt, fig, ax, width: int, height: int, title: str, path: Path) -> None:
    """Frame a grid of verdict cells, add the legend and write the figure."""
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    ax.set_title(title, pad=18)
    _legend(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def factorial_figure(plt, cells: dict, title: str, path: Path) -> None:
    """8 x 8 grid: rows are the ME/SG/PR settings, columns the BN/Var/Cov settings."""
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(11, 8))
    bits = [tuple(bool(i >> (2 - k) & 1) for k in range(3)) for i in range(7, -1, -1)]
    name = lambda names, b: " ".join(n for n, on in zip(names, b) if on) or "-"  # noqa: E731
    for i, a in enumerate(bits):
        ax.text(-0.05, i + 0.5, name(("ME", "SG", "PR"), a), ha="right", va="center", fontsize=9)
        for j, b in enumerate(bits):
            c = cells.get(a + b)
            if i == 0:
                ax.text(j + 0.5, -0.1, name(("BN", "Var", "Cov"), b), ha="center", va="bottom", fontsize=9)
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=COLORS[c["color"]] if c else "white",
                                   edgecolor="white"))
            if c:
                text = c["text"].replace(" (", "\n(").replace(", ", ",\n")  # one note a line: cells are narrow
                ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=6)
    _finish_grid(plt, fig, ax, 8, 8, f"Verdict over the six switches ({title})", path)


def curves_figure(plt, panels: list, key: str, ref_key: str | None, ylabel: str, path: Path,
                  log: bool = False) -> None:
    """One small plot per cell, one line per seed, coloured by the run's verdict."""
    ncols = 3 if len(panels) <= 24 else 6
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.0 * nrows), squeeze=False)
    for ax, (title, runs) in zip(axes.flat, panels):
        ax.set_title(title, fontsize=7)
        ax.tick_params(labelsize=6)
        for r in runs:
            if not r["curve"]:
                continue
            epoch = [c["epoch"] for c in r["curve"]]
            ax.plot(epoch, [c.get(key, math.nan) for c in r["curve"]], marker=".", lw=1,
                    color=COLORS.get(r["verdict"] or "failed"), label=f"seed {r['seed']}")
            if ref_key:
                ax.plot(epoch, [c.get(ref_key, math.nan) for c in r["curve"]], ls="--", lw=0.8, color="black")
            if log and any((c.get(key) or 0) > 0 for c in r["curve"]):
                ax.set_yscale("log")
        if not any(r["curve"] for r in runs):
            status = ("failed" if any(r["status"] == "failed" for r in runs) else
                      "no curves (runs.csv)" if runs and all(r["source"] for r in runs) else "pending")
            ax.text(0.5, 0.5, status, transform=ax.transAxes, ha="center", va="center", color="gray")
            ax.set_xticks([])
            ax.set_yticks([])
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.supxlabel("epoch")
    fig.supylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def spectra_figure(plt, s: dict, ref: pd.DataFrame, path: Path) -> None:
    """Sorted eigenvalues of the embedding covariance (log scale), one panel per Var/Cov setting."""
    groups = {}
    for r in s["runs"]:
        if r["spectrum"] and r["techniques"] and not r["baseline"]:
            groups.setdefault((r["techniques"]["var"], r["techniques"]["cov"]), []).append(r)
    keys = sorted(groups, key=lambda k: (k[0] + k[1], k[0])) or [(False, False)]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        ax.set_title(REGS.get(REG_OF_SWITCHES.get(key), "Cov Reg only"), fontsize=10)
        for r in groups.get(key, []):
            label = _row_label(ref, r["cell"][0]) if r["cell"] else _combo_label(r["method"], _combo(r))
            ax.semilogy([max(v, 1e-12) for v in r["spectrum"]], lw=1, ls="--" if r["verdict"] == "collapse"
                        else "-", label=f"{label} s{r['seed']}")
        if key in groups:
            ax.legend(fontsize=5, ncol=2)
        else:
            ax.text(0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center", color="gray")
        ax.set_xlabel("index (sorted)")
    axes.flat[0].set_ylabel("covariance eigenvalue (dashed: collapse)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def runs_frame(runs: list[dict]) -> pd.DataFrame:
    metric_keys = sorted({k for r in runs for k in r["metrics"]})
    rows = []
    for r in runs:
        tech = r["techniques"] or {}
        rows.append({
            "dir": r["dir"], "experiment": r["experiment"], "scale": r["scale"],
            "row": r["cell"][0] if r["cell"] else None, "reg": r["cell"][1] if r["cell"] else None,
            "method": r["method"], "baseline": r["baseline"], **{t: tech.get(t) for t in TECHNIQUES},
            "reg_geometry": r["reg_geometry"] if regularized(r) else None, "seed": r["seed"],
            "status": r["status"], "verdict": r["verdict"], "verdict_reason": r["verdict_reason"],
            "error": r["error"], "data": r["data"], "backbone": r["backbone"], "epochs": r["epochs"],
            "epochs_completed": r["epochs_completed"], "wall_s": r["wall_s"], "embedding_dim": r["embedding_dim"],
            "chance_top1": r["chance_top1"], "device": r["device"], "precision": r.get("precision"),
            "channels_last": r.get("channels_last"), "compile_aug": r.get("compile_aug"),
            **{k: r["metrics"].get(k) for k in metric_keys},
            "linear_norm": r.get("linear_norm"),
        })
    return pd.DataFrame(rows)


def write_report(dirs: list[Path], out: Path, note: Path | None = None) -> Path:
    ref = reference()
    runs = find_runs(dirs)
    if not runs:
        raise SystemExit(f"ablate.report: error: no runs (summary.json or started Hydra jobs) below "
                         f"{', '.join(map(str, dirs))}; point RUNS_DIR at a sweep directory such as "
                         f"multirun/vicreg_table4/table_cpu")
    settings = build_tables(runs, ref)
    out.mkdir(parents=True, exist_ok=True)
    runs_frame(runs).to_csv(out / "runs.csv", index=False)
    cmd = " ".join(["python -m ablate.report", *map(shlex.quote, map(str, dirs)), "--out", shlex.quote(str(out))]
                   + (["--note", shlex.quote(str(note))] if note else []))
    factorial_only = all(r["experiment"] == "factorial" for r in runs if not r["baseline"])
    title = "the six switches' factorial" if factorial_only else "VICReg Table 4, reproduced"
    md = [f"# Anti-collapse ablations: {title}", "",
          f"Generated by `{cmd}` from {len(runs)} runs. `runs.csv` holds every run and its final metrics.", ""]
    if note:
        md += ["## Note", "", note.read_text().strip(), ""]
    md += [setting_markdown(s, ref) for s in settings]
    (out / "report.md").write_text("\n".join(md).rstrip() + "\n")
    for s in settings:
        write_figures(s, ref, out)
    return out / "report.md"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m ablate.report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs_dirs", nargs="+", type=Path, metavar="RUNS_DIR",
                   help="sweep or run directories, or an earlier report's runs.csv")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where report.md, runs.csv, PNGs go")
    p.add_argument("--note", type=Path, help="markdown file included as the report's note")
    args = p.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        p.exit(2, f"ablate.report: error: --out {args.out} is a file; give a directory for report.md, runs.csv "
                  f"and the figures\n")
    for d in args.runs_dirs:
        if not d.is_dir() and not (d.is_file() and d.name.endswith(".csv")):
            p.exit(2, f"ablate.report: error: {d} is not a directory (nor a runs.csv file); give the sweep directory, "
                      f"e.g. multirun/vicreg_table4/table_cpu\n")
    if args.note and not args.note.is_file():
        p.exit(2, f"ablate.report: error: note file {args.note} does not exist\n")
    try:
        path = write_report(args.runs_dirs, args.out, args.note)
    except SystemExit as e:
        p.exit(2, f"{e}\n")
    print(f"wrote {path}, {args.out / 'runs.csv'} and figures")


if __name__ == "__main__":
    main()

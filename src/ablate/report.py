"""``python -m ablate.report RUNS_DIR [RUNS_DIR ...] --out DIR``: sweep runs -> the paper-style table.

Reads every ``summary.json`` (and every started run without one) below the given directories and writes into
DIR:
  report.md  VICReg Table 4's layout with our linear-probe top-1 beside the paper's number, a flag on each
             cell whose collapse / no-collapse disagrees with the paper, per-run diagnostics, the protocol,
             the data and scale, and the command that regenerates the runs
  runs.csv   one row per run: the six switches, method, seed, status, verdict and every final metric
  *.png      the table coloured by verdict, embedding std and RankMe over epochs, singular spectra, and for
             factorial sweeps a grid of verdicts over the six switches
A run is placed in a table cell by its ``choices.row`` / ``choices.reg``, else by its method and switches, so
runs of the factorial sweep and hand-made runs land in the table too. Runs are grouped into settings (scale,
data, backbone, epochs); seeds of one cell give mean +- std.
"""

import argparse
import json
import math
import shlex
import sys
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from .config import TECHNIQUES
from .summary import FINISHED, STATUSES

REGS = {"none": "No Reg", "var": "Var Reg", "var_cov": "Var/Cov Reg"}
REG_OF_SWITCHES = {(False, False): "none", (True, False): "var", (True, True): "var_cov"}
SHORT = {"ema": "ME", "stop_grad": "SG", "predictor": "PR", "batchnorm": "BN", "var": "Var", "cov": "Cov"}
SEVERITY = ("ok", "dimensional_collapse", "diverged", "collapse")  # a tied cell's colour: the last of these
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


def load_run(run_dir: Path, summary: dict | None) -> dict:
    """One run as a flat record; fields a failed or unfinished run's summary lacks come from Hydra's files."""
    s = summary or {"status": "pending"}
    cfg = _yaml(run_dir / ".hydra" / "config.yaml") or _yaml(run_dir / "config.yaml") or {}
    hydra = _yaml(run_dir / ".hydra" / "hydra.yaml") or {}
    choices = s.get("choices") or (hydra.get("hydra", {}).get("runtime", {}).get("choices") or {})
    tech = s.get("techniques") or ({t: cfg.get(t) is not None for t in TECHNIQUES} if cfg else None)
    section = lambda k: cfg.get(k) if isinstance(cfg.get(k), dict) else {}  # noqa: E731
    curve = read_metrics(run_dir / "metrics.jsonl")
    epochs = s.get("epochs", section("train").get("epochs"))
    return {
        "dir": str(run_dir), "sweep_dir": _sweep_dir(run_dir), "status": s.get("status"),
        "error": s.get("error"), "verdict": s.get("verdict"), "verdict_reason": s.get("verdict_reason"),
        "method": s.get("method") or section("method").get("name"), "techniques": tech,
        "seed": s.get("seed", cfg.get("seed")), "choices": choices,
        "experiment": choices.get("experiment"), "scale": choices.get("scale"),
        "data": s.get("data") or section("data").get("name"),
        "backbone": s.get("backbone") or section("backbone").get("name"),
        "epochs": epochs, "epochs_completed": s.get("epochs_completed", len(curve)),
        "wall_s": s.get("wall_s"), "embedding_dim": s.get("embedding_dim"), "chance_top1": s.get("chance_top1"),
        "metrics": s.get("metrics") or {}, "protocol": s.get("protocol") or {}, "spectrum": s.get("spectrum_z"),
        "curve": curve, "overrides": s.get("overrides") or [],
    }


def read_metrics(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line being written by a running job
                break
    return rows


def find_runs(dirs: list[Path]) -> list[dict]:
    """Finished and failed runs (summary.json) and started ones (Hydra job dir or metrics, no summary yet)."""
    runs, seen = [], set()
    for root in dirs:
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
            runs.append(load_run(path.parent, s))
        started = {p.parent.parent for p in root.rglob(".hydra/config.yaml")} | {
            p.parent for p in root.rglob("metrics.jsonl")}
        for run_dir in sorted(started):
            if run_dir.resolve() not in seen and not (run_dir / "summary.json").exists():
                seen.add(run_dir.resolve())
                runs.append(load_run(run_dir, None))
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
                    "done": 0}
        if started:
            r = started[0]
            return {"text": f"pending ({r['epochs_completed']}/{r['epochs']} ep)", "color": "pending",
                    "collapse": None, "done": 0}
        return {"text": "pending", "color": "pending", "collapse": None, "done": 0}
    verdicts = [r["verdict"] for r in done]
    n_col = verdicts.count("collapse")
    if n_col == len(done):
        text = "collapse"
    elif verdicts.count("diverged") == len(done):
        text = "diverged"
    else:
        accs = pd.Series([r["metrics"].get("linear_top1") for r in done
                          if r["verdict"] not in ("collapse", "diverged")], dtype=float).dropna()
        text = f"{accs.mean():.1f}" + (f" ± {accs.std():.1f}" if len(accs) > 1 else "") if len(accs) else "n/a"
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
    return {"text": text, "color": color, "collapse": collapse, "done": len(done)}


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
        srun = [r for r in runs if setting_of(r) == key]
        seeds = sorted({r["seed"] for r in srun if r["seed"] is not None}, key=str)
        table = None
        if any(r["cell"] for r in srun) or any(r["experiment"] == "vicreg_table4" for r in srun):
            table = {(row, reg): summarize_cell([r for r in srun if r["cell"] == (row, reg)], seeds)
                     for row in ref.index for reg in REGS}
        factorial = {}
        for method in sorted({r["method"] for r in srun if r["method"]}):
            mruns = [r for r in srun if r["method"] == method and r["techniques"]]
            if any(r["experiment"] == "factorial" for r in mruns) or any(not r["cell"] for r in mruns):
                factorial[method] = {combo: summarize_cell([r for r in mruns if _combo(r) == combo], seeds)
                                     for combo in _combos(mruns, full=any(r["experiment"] == "factorial"
                                                                          for r in mruns))}
        named = [r["scale"] for r in srun if r["scale"]]
        scale = max(set(named), key=named.count) if named else "custom"
        settings.append({"key": key, "scale": scale, "runs": srun, "seeds": seeds, "table": table,
                         "factorial": factorial})
    scales = [s["scale"] for s in settings]
    for s in settings:  # file-name stem of the setting's figures
        s["slug"] = s["scale"] if scales.count(s["scale"]) == 1 else "_".join(map(str, (s["scale"], *s["key"])))
    return settings


def _combo(run) -> tuple:
    return tuple(bool(run["techniques"][t]) for t in TECHNIQUES)


def _combos(runs, full: bool) -> list[tuple]:
    if full:
        return [tuple(bool(i >> (5 - k) & 1) for k in range(6)) for i in range(63, -1, -1)]
    return sorted({_combo(r) for r in runs}, reverse=True)


def table_markdown(setting: dict, ref: pd.DataFrame) -> tuple[str, list[str]]:
    rows, flags = [], []
    for row, r in ref.iterrows():
        cells = []
        for reg in REGS:
            c, paper = setting["table"][(row, reg)], r[reg]
            dagger = "†" if r["original"] == reg else ""
            flag = ""
            if c["collapse"] is not None and c["collapse"] != (paper == "collapse"):
                flag = " ⚠"
                reasons = sorted({x["verdict_reason"] for x in setting["runs"]
                                  if x["cell"] == (row, reg) and x["status"] in FINISHED and x["verdict_reason"]})
                flags.append(f"- {r['label']} ({row}), {REGS[reg]}: ours {c['text']}, paper {paper}. "
                             f"Our verdict: {'; '.join(reasons)}.")
            cells.append(f"{c['text']} / {paper}{dagger}{flag}")
        rows.append([r["label"], *("✓" if r[t] else "" for t in TECHNIQUES[:4]), *cells])
    header = ["Method", "ME", "SG", "PR", "BN", *(f"{v} (ours / paper)" for v in REGS.values())]
    return md_table(header, rows), flags


def diagnostics_markdown(runs: list[dict], ref: pd.DataFrame) -> str:
    order = {(row, reg): i for i, (row, reg) in enumerate((a, b) for a in ref.index for b in REGS)}
    runs = sorted(runs, key=lambda r: (order.get(r["cell"], len(order)), r["method"] or "",
                                       [not x for x in _combo(r)] if r["techniques"] else [], str(r["seed"])))
    rows = []
    for r in runs:
        m = r["metrics"]
        where = (f"{ref.loc[r['cell'][0], 'label']} ({r['cell'][0]}), {REGS[r['cell'][1]]}" if r["cell"] else
                 f"{r['method']} " + " ".join(SHORT[t] for t in TECHNIQUES if (r["techniques"] or {}).get(t)))
        ratio, shrink = _ratio(m, "z_std", "z_std_ref"), _ratio(m, "z_scale", "z_scale_init")
        verdict = r["verdict"] or r["status"]
        why = r["verdict_reason"] or (_short(r["error"], 120) if r["status"] == "failed" else "")
        wall = "" if r["wall_s"] is None else (f"{r['wall_s']:.0f} s" if r["wall_s"] < 120 else
                                               f"{r['wall_s'] / 60:.1f} min")
        rows.append([where, r["seed"], verdict, _fmt(m.get("z_std"), 3), _fmt(m.get("z_std_ref"), 3),
                     _fmt(ratio, 2), _fmt(shrink, 2), f"{_fmt(m.get('rank_z'))} / {r['embedding_dim'] or '?'}",
                     _fmt(m.get("rank_h")), _fmt(m.get("knn_top1")), _fmt(m.get("linear_top1")),
                     f"{r['epochs_completed']}/{r['epochs']}", wall, why])
    header = ["Cell", "seed", "verdict", "z_std", "1/sqrt(d)", "ratio", "z_scale / init", "RankMe z / d",
              "RankMe h", "kNN %", "linear %", "epochs", "wall", "why"]
    return md_table(header, rows)


def factorial_markdown(cells: dict) -> str:
    rows = [[*("✓" if on else "" for on in combo), c["text"]] for combo, c in cells.items()]
    return md_table([SHORT[t] for t in TECHNIQUES] + ["linear top-1 % (or verdict)"], rows)


def regen_commands(runs: list[dict]) -> list[str]:
    """The sweep commands from each sweep's multirun.yaml (run from the directory the sweep was started in);
    single runs from their recorded overrides."""
    cmds = []
    for sweep in sorted({r["sweep_dir"] for r in runs if r["sweep_dir"]}):
        ov = (_yaml(sweep / "multirun.yaml") or {}).get("hydra", {}).get("overrides", {})
        extra = [o for o in ov.get("hydra", []) if not o.startswith("hydra.mode=")]
        cmds.append(" ".join(["python -m ablate -m", *map(shlex.quote, ov.get("task", []) + extra)]))
    for r in runs:
        if not r["sweep_dir"] and r["overrides"]:
            cmds.append(" ".join(["python -m ablate", *map(shlex.quote, r["overrides"])]))
    return list(dict.fromkeys(cmds))


def setting_markdown(s: dict, ref: pd.DataFrame) -> str:
    (data, backbone, epochs), scale = s["key"], s["scale"]
    runs = s["runs"]
    n = {k: sum(r["status"] == k for r in runs) for k in (*STATUSES, "pending")}
    out = [f"## Setting `{scale}`: {data}, {backbone}, {epochs} epochs", "",
           f"{len(runs)} runs found: {n['complete']} complete, {n['diverged']} diverged, {n['failed']} failed, "
           f"{n['pending']} started and unfinished; seeds {', '.join(map(str, s['seeds'])) or 'none'}.", ""]
    if s["table"] is not None:
        text, flags = table_markdown(s, ref)
        out += ["### VICReg Table 4", "",
                "Ours: linear-probe top-1 (%) on the held-out set, mean ± std over seeds where there are several; "
                "`collapse` where every finished seed's verdict is complete collapse. Paper: ImageNet linear "
                "top-1 after 100 epochs, ResNet-50 (VICReg, Table 4; † the method's original setup). "
                "⚠ marks a cell whose collapse / no-collapse disagrees with the paper.", "", text, ""]
        out += ["Cells that disagree with the paper:", "", *flags, ""] if flags else [
            "Every finished cell agrees with the paper on collapse / no collapse.", ""]
        failed = [r for r in runs if r["status"] == "failed"]
        if failed:
            out += ["Failed runs:", "", *(f"- `{r['dir']}`: {r['error']}" for r in failed), ""]
        diverged = [r for r in runs if r["status"] == "diverged"]
        if diverged:  # neither collapse nor a number: a cell the paper trained and we did not
            out += ["Diverged runs (non-finite loss; no accuracy, counted as not collapsed):", "",
                    *(f"- `{r['dir']}`: {r['verdict_reason']}, after {r['epochs_completed']}/{r['epochs']} epochs"
                      for r in diverged), ""]
    for method, cells in s["factorial"].items():
        out += [f"### Switch combinations, `{method}` recipe", "", factorial_markdown(cells), ""]
    out += ["### Diagnostics per run", "",
            "z_std: std of l2-normalized embeddings over the held-out set (1/sqrt(d) for an isotropic "
            "embedding, 0 under collapse), the collapse test for the cosine losses of BYOL and SimSiam; "
            "z_scale / init: raw spread of z (sqrt of the mean per-dimension variance) over its value before "
            "training, the collapse test for VICReg, whose loss sees raw vectors up to a common offset (blank "
            "where the run predates it); RankMe: effective rank of the embeddings z and backbone features h.",
            "", diagnostics_markdown(runs, ref), ""]
    done = [r for r in runs if r["status"] in FINISHED]
    out += ["### Protocol, data and scale", ""]
    for key in ("linear_top1", "knn_top1", "eval_set"):
        values = sorted({r["protocol"].get(key) for r in done if r["protocol"].get(key)})
        out += [f"- {key}: {v}" for v in values]
    dims = sorted({r["embedding_dim"] for r in done if r["embedding_dim"]})
    devices = sorted({json.loads(Path(r["dir"], "summary.json").read_text()).get("device", "?") for r in done})
    wall = sum(r["wall_s"] or 0 for r in done)
    out += [f"- data `{data}`, backbone `{backbone}`, {epochs} epochs, scale preset `{scale}`, embedding dims "
            f"{', '.join(map(str, dims)) or '?'}, device {', '.join(devices) or '?'}, total training wall time "
            f"{wall / 60:.1f} min", ""]
    out += ["### Regenerate the runs", "", "```bash", *regen_commands(runs), "```", "",
            "Re-running a sweep skips the cells whose summary.json is complete.", ""]
    figs = [f"table4_{s['slug']}.png"] if s["table"] is not None else []
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
    if s["table"] is not None:
        table_figure(plt, s, ref, out / f"table4_{s['slug']}.png")
        panels += [(f"{_row_label(ref, row)} | {REGS[reg]}", [r for r in s["runs"] if r["cell"] == (row, reg)])
                   for row in ref.index for reg in REGS]
    for method, cells in s["factorial"].items():
        factorial_figure(plt, cells, f"{s['slug']}, {method} recipe", out / f"factorial_{s['slug']}_{method}.png")
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


def table_figure(plt, s: dict, ref: pd.DataFrame, path: Path) -> None:
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(10, 6.5))
    for i, row in enumerate(ref.index):
        ax.text(-0.05, i + 0.5, _row_label(ref, row), ha="right", va="center", fontsize=9)
        for j, reg in enumerate(REGS):
            c, paper = s["table"][(row, reg)], ref.loc[row, reg]
            flag = c["collapse"] is not None and c["collapse"] != (paper == "collapse")
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=COLORS[c["color"]], edgecolor="black" if flag else
                                   "white", lw=2.5 if flag else 1))
            ax.text(j + 0.5, i + 0.5, f"{c['text']}\npaper: {paper}" + ("\n(!) disagrees" if flag else ""),
                    ha="center", va="center", fontsize=7, wrap=True)
    for j, reg in enumerate(REGS.values()):
        ax.text(j + 0.5, -0.1, reg, ha="center", va="bottom", fontsize=10)
    _finish_grid(plt, fig, ax, 3, len(ref), f"VICReg Table 4, ours ({s['slug']}) vs paper, coloured by our verdict",
                 path)


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
                ax.text(j + 0.5, i + 0.5, c["text"].replace(" (", "\n("), ha="center", va="center", fontsize=6)
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
            status = "failed" if any(r["status"] == "failed" for r in runs) else "pending"
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
        if r["spectrum"] and r["techniques"]:
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
            "method": r["method"], **{t: tech.get(t) for t in TECHNIQUES}, "seed": r["seed"],
            "status": r["status"], "verdict": r["verdict"], "verdict_reason": r["verdict_reason"],
            "error": r["error"], "data": r["data"], "backbone": r["backbone"], "epochs": r["epochs"],
            "epochs_completed": r["epochs_completed"], "wall_s": r["wall_s"], "embedding_dim": r["embedding_dim"],
            "chance_top1": r["chance_top1"], **{k: r["metrics"].get(k) for k in metric_keys},
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
    md = ["# Anti-collapse ablations: VICReg Table 4, reproduced", "",
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
    p.add_argument("runs_dirs", nargs="+", type=Path, metavar="RUNS_DIR", help="sweep or run directories")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where report.md, runs.csv, PNGs go")
    p.add_argument("--note", type=Path, help="markdown file included as the report's note")
    args = p.parse_args(argv)
    for d in args.runs_dirs:
        if not d.is_dir():
            p.exit(2, f"ablate.report: error: {d} is not a directory; give the sweep directory, e.g. "
                      f"multirun/vicreg_table4/table_cpu\n")
    if args.note and not args.note.is_file():
        p.exit(2, f"ablate.report: error: note file {args.note} does not exist\n")
    try:
        path = write_report(args.runs_dirs, args.out, args.note)
    except SystemExit as e:
        p.exit(2, f"{e}\n")
    print(f"wrote {path}, {args.out / 'runs.csv'} and figures")


if __name__ == "__main__":
    main()

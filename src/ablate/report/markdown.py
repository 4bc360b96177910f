"""report.md's sections for one setting: the answer (claims, Table 4 or the factorial's effects or the
comparison, with the baselines and the main figure) first, then the details (other geometries, switch grids,
per-run diagnostics, protocol, the commands that regenerate the runs, the other figures)."""

import shlex

import pandas as pd

from ..config import SWITCHES
from ..run.summary import FINISHED, STATUSES
from . import factorial as fa
from .cells import BASELINE_LABELS, baselines_markdown, combo
from .compare import comparison_markdown
from .figures import figure_names
from .load import _yaml, regularized
from .stats import CI_NOTE
from .table4 import GEOMETRIES, REGS, SHORT, TABLES, TERMS, claims_markdown, in_geometry, rescues_markdown, table_markdown
from .tables import fmt, md_table, short


def _ratio(m: dict, num: str, den: str) -> float | None:
    """m[num] / m[den], or None where either is missing (runs that predate a metric) or the denominator is 0."""
    return m[num] / m[den] if m.get(num) is not None and m.get(den) else None


def _layout(channels_last) -> str:
    if channels_last is None or (isinstance(channels_last, float) and channels_last != channels_last):
        return "?"
    return "NHWC" if channels_last in (True, "True", "true") else "NCHW"


def _where(r: dict, ref: pd.DataFrame) -> str:
    where = (f"{ref.loc[r['cell'][0], 'label']} ({r['cell'][0]}), {REGS[r['cell'][1]]}" if r["cell"] else
             f"baseline {BASELINE_LABELS.get(r['baseline'], r['baseline'])}" if r["baseline"] else
             f"{r['method']} " + " ".join(SHORT[t] for t in SWITCHES if (r["techniques"] or {}).get(t)))
    return where + (f" [{r['reg_geometry']}]" if regularized(r) else "")


def _verdict(r: dict) -> str:
    v = r["verdict"] or ("baseline" if r["baseline"] and r["status"] == "complete" else r["status"])
    v += " (unsettled)" if r.get("verdict_settled") is False else ""
    return v + (" (no better than init)" if r.get("no_better_than_init") else "")


def _diagnostics_row(r: dict, offline: bool, init: bool) -> list:
    m = r["metrics"]
    ratio, shrink = _ratio(m, "z_std", "z_std_ref"), _ratio(m, "z_scale", "z_scale_init")
    why = r["verdict_settled_reason"] if r.get("verdict_settled") is False and r.get("verdict_settled_reason") \
        else r["verdict_reason"] or (short(r["error"], 120) if r["status"] == "failed" else "")
    wall = "" if r["wall_s"] is None else (f"{r['wall_s']:.0f} s" if r["wall_s"] < 120 else
                                           f"{r['wall_s'] / 60:.1f} min")
    accs = [fmt(m.get("linear_top1"))] + [fmt(m.get("linear_eval_top1"))] * offline + [
        fmt((r.get("metrics_init") or {}).get("linear_top1"))] * init
    return [r["seed"], _verdict(r), fmt(m.get("z_std"), 3), fmt(m.get("z_std_ref"), 3), fmt(ratio, 2),
            fmt(shrink, 2), f"{fmt(m.get('rank_z'))} / {r['embedding_dim'] or '?'}", fmt(m.get("rank_h")),
            fmt(m.get("knn_top1")), *accs, fmt(r.get("linear_norm"), 2), f"{r['epochs_completed']}/{r['epochs']}",
            wall, why]


def diagnostics_markdown(runs: list[dict], ref: pd.DataFrame) -> str:
    """One row per run: where it sits, its verdict, the collapse diagnostics, accuracies, epochs and time."""
    order = {(row, reg): i for i, (row, reg) in enumerate((a, b) for a in ref.index for b in REGS)}
    runs = sorted(runs, key=lambda r: (order.get(r["cell"], len(order)), r["method"] or "",
                                       [not x for x in combo(r)] if r["techniques"] else [], str(r["seed"])))
    offline = any("linear_eval_top1" in r["metrics"] for r in runs)  # python -m ablate.tools.linear's probe
    init = any("linear_top1" in (r.get("metrics_init") or {}) for r in runs)  # the run's epoch-0 probe
    rows = [[_where(r, ref), *_diagnostics_row(r, offline, init)] for r in runs]
    header = ["Cell", "seed", "verdict", "z_std", "1/sqrt(d)", "ratio", "z_scale / init", "RankMe z / d",
              "RankMe h", "kNN %", "linear %", *["linear eval %"] * offline, *["linear % at init"] * init, "norm",
              "epochs", "wall", "why"]
    return md_table(header, rows)


def factorial_markdown(cells: dict) -> str:
    """The combinations run; a column for negatives or xcorr only where some combination has it on."""
    shown = [i for i, t in enumerate(SWITCHES) if t not in TERMS or any(c[i] for c in cells)]
    rows = [[*("✓" if c[i] else "" for i in shown), cell["text"]] for c, cell in cells.items()]
    return md_table([SHORT[SWITCHES[i]] for i in shown] + ["linear top-1 % (or verdict)"], rows)


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


def provenance_markdown(s: dict) -> list[str]:
    """Protocol, data and scale and the commands (or earlier runs.csv) the runs came from."""
    (data, backbone, epochs), scale, runs = s["key"], s["scale"], s["runs"]
    done = [r for r in runs if r["status"] in FINISHED]
    out = ["### Protocol, data and scale", ""]
    for key in ("linear_top1", "knn_top1", "eval_set"):
        out += [f"- {key}: {v}" for v in sorted({r["protocol"].get(key) for r in done if r["protocol"].get(key)})]
    values = lambda f: ", ".join(sorted({f(r) for r in done})) or "?"  # noqa: E731
    dims = sorted({r["embedding_dim"] for r in done if r["embedding_dim"]})
    out += [f"- data `{data}`, backbone `{backbone}`, {epochs} epochs, scale preset `{scale}`, embedding dims "
            f"{', '.join(map(str, dims)) or '?'}, device {values(lambda r: r['device'] or '?')}, precision "
            f"{values(lambda r: r.get('precision') or '?')}, layout {values(lambda r: _layout(r['channels_last']))}"
            f", augmentation colour ops {values(lambda r: 'compiled' if r.get('compile_aug') else 'eager')} "
            f"(`train.compile_aug`), total training wall time {sum(r['wall_s'] or 0 for r in done) / 60:.1f} min",
            ""]
    if s["setting"]:
        out += [f"- data and scale config: `{s['setting']}`", ""]
    out += ["### Regenerate the runs", "", "```bash", *regen_commands(runs), "```", "",
            "Re-running a sweep skips the cells whose summary.json is complete.", ""]
    for src in sorted({r["source"] for r in runs if r["source"]}):
        out += [f"{sum(r['source'] == src for r in runs)} runs are read from `{src}`, an earlier report's table of "
                f"runs (final metrics and verdicts only: their curves and spectra were not kept).", ""]
    return out


def _norm_note(s: dict) -> str:
    if s["norm_problem"]:
        return s["norm_problem"]
    return ("[n] places an accuracy between the baselines: (acc - random) / (supervised - random), each run with "
            "its own seed's baselines (0: the untrained backbone, 1: the supervised one).")


PAPER_NOTES = {"vicreg_table4": "Paper: ImageNet linear top-1, 100 epochs, ResNet-50 († the method's original setup).",
               "beyond_table4": "Published: the method's own setup only (†), CIFAR-10 online linear top-1 after 1000 "
                                "epochs with a ResNet-18 (solo-learn's CIFAR configs); VICReg Table 4's ImageNet "
                                "numbers in its two rows; — where no paper reports the cell."}


def _table4_section(s: dict, mode: str, ref: pd.DataFrame) -> list[str]:
    text, flags = table_markdown(s, mode, ref)
    reported = [cell for cell in s["tables"][mode] if ref.loc[cell] != ""]
    done = sum(s["tables"][mode][cell]["done"] > 0 for cell in reported)
    if flags:
        agree = ["Cells that disagree with the paper:", "", *flags]
    elif len(reported) == 3 * len(ref):
        agree = [f"All {done} finished cells of {3 * len(ref)} agree with the paper on collapse / no collapse."]
    else:
        agree = [f"All {done} finished cells that a paper reports ({len(reported)} of {3 * len(ref)}) agree with "
                 f"it on collapse / no collapse."]
    rescues = rescues_markdown(s, mode, ref)
    rescues = ["What each added term does to the row it is added to:", "", *rescues, ""] if rescues else []
    return [f"### {TABLES[ref.attrs['table']]}" + ("" if mode == "auto" else f", `reg_geometry={mode}`"), "",
            baselines_markdown(s), "", text, "",
            f"Ours: linear-probe top-1 % on the held-out set, {CI_NOTE}; `collapse k/n`: k of n seeds collapsed "
            f"completely. {GEOMETRIES[mode][0].upper()}{GEOMETRIES[mode][1:]}. {PAPER_NOTES[ref.attrs['table']]} "
            f"⚠: collapse disagrees with the paper. {_norm_note(s)}", "", *rescues, *agree, ""]


def _factorial_answer(s: dict) -> list[str]:
    out = []
    for method in s["analysis"]:
        png = f"interactions_{s['slug']}_{method}.png"
        mruns = [r for r in s["runs"] if r["method"] == method and r["techniques"]]
        geo = {r["reg_geometry"] for r in mruns if regularized(r)}
        auto = {r["reg_geometry"] for r in mruns if regularized(r) and in_geometry(r, "auto")}
        flag = f" --reg-geometry {auto.pop()}" if len(geo) > 1 and len(auto) == 1 else ""
        out += [f"### Which switch matters, `{method}` recipe", "", fa.markdown(s["analysis"][method], heatmap=png),
                f"From the finished runs of this recipe in `runs.csv` (var/cov in the default geometry); "
                f"`python -m ablate.report.factorial runs.csv --method {method}{flag}` prints the same.", ""]
    return out


def _figures(s: dict) -> dict:
    """The setting's figure files, none when the report is written without figures (``--no-figures``)."""
    return figure_names(s) if s.get("figures", True) else {}


def answer_markdown(s: dict, ref: pd.DataFrame) -> list[str]:
    """The setting's answer: its title and counts, then the claims and Table 4, or the factorial's effects, or
    the comparison, with the baselines and the main figure."""
    (data, backbone, epochs), runs = s["key"], s["runs"]
    n = {k: sum(r["status"] == k for r in runs) for k in (*STATUSES, "pending")}
    distinct = f" ({s['distinct']})" if s["distinct"] else ""
    out = [f"## Setting `{s['scale']}`: {data}, {backbone}, {epochs} epochs{distinct}", "",
           f"{len(runs)} runs: {n['complete']} complete, {n['diverged']} diverged, {n['failed']} failed, "
           f"{n['pending']} started and unfinished; seeds {', '.join(map(str, s['seeds'])) or 'none'}.", ""]
    claims = claims_markdown(s, ref) if s["tables"] else None
    if claims:
        out += ["### The paper's claims", "", claims, "",
                "Decided claims only: collapse from the verdicts, improvements from the mean linear top-1.", ""]
    if s["tables"]:
        out += _table4_section(s, "auto", ref)
    out += _factorial_answer(s)
    if s["compare"]:
        out += ["### The configs compared", "", *comparison_markdown(s)]
    if not s["tables"] and s["baselines"]:
        out += ["Baselines of this setting (the [n] beside a cell's accuracy places it between them):", "",
                baselines_markdown(s), "", _norm_note(s), ""]
    main = _figures(s).get("main")
    return out + ([f"![{main}]({main})", ""] if main else [])


def details_markdown(s: dict, ref: pd.DataFrame) -> list[str]:
    """What follows the answer: other geometries' tables, switch grids, failed and diverged runs, cells whose
    configs differ, per-run diagnostics, protocol and provenance, the other figures."""
    out = [f"## Details, setting `{s['scale']}`", ""]
    for mode in list(s["tables"])[1:]:
        out += _table4_section(s, mode, ref)
    for method, cells in s["factorial"].items():
        out += [f"### Switch combinations, `{method}` recipe", "", factorial_markdown(cells), ""]
    failed = [r for r in s["runs"] if r["status"] == "failed"]
    out += ["Failed runs:", "", *(f"- `{r['dir']}`: {r['error']}" for r in failed), ""] if failed else []
    diverged = [r for r in s["runs"] if r["status"] == "diverged"]
    if diverged:  # neither collapse nor a number
        out += ["Diverged runs (non-finite loss; no accuracy, counted as not collapsed):", "",
                *(f"- `{r['dir']}`: {r['verdict_reason']}, after {r['epochs_completed']}/{r['epochs']} epochs"
                  for r in diverged), ""]
    if s["differ"]:
        out += ["Cells whose runs differ in more than the seed (their seeds are averaged all the same; "
                "`--split KEY` gives a table per value of KEY):", "",
                *s["differ"], ""]
    out += ["### Diagnostics per run", "",
            "z_std: std of l2-normalized embeddings (1/sqrt(d) isotropic, 0 collapsed), the collapse test of the "
            "cosine losses; z_scale / init: raw spread over its value before training, the collapse test of "
            "VICReg; RankMe: effective rank of z and of the backbone features h (docs/diagnostics.md).", "",
            diagnostics_markdown(s["runs"], ref), ""]
    out += provenance_markdown(s)
    rest = [f for k, f in _figures(s).items() if k != "main"]
    if not any(r["curve"] for r in s["runs"]):
        out += ["No curves or spectra: every run here was read from a runs.csv, which keeps final metrics only "
                "(their curves were not kept); re-running the sweep draws them.", ""]
    return out + (["### Figures", "", *(f"![{f}]({f})" for f in rest), ""] if rest else [])

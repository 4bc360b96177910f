"""Runs -> settings -> cells: which runs share a table (their data and scale), which share a cell (their
config but the seed), what a cell says (mean and 95% interval over seeds, verdict counts k/n), and where a
cell sits between its setting's baselines."""

import json

import pandas as pd

from ..config import SWITCHES, TECHNIQUES
from ..run.summary import FINISHED
from . import factorial as fa
from .load import runs_frame
from .stats import fmt_ci, mean_ci
from .table4 import REGS, geometry_modes, in_geometry, is_table4, place, reference_for
from .tables import md_table, short

VERDICT_WORDS = {"ok": "ok", "dimensional_collapse": "dim. collapse", "collapse": "collapse", "diverged": "diverged"}


def _pending_text(failed: list, started: list) -> str:
    if failed:
        return "failed: " + short(failed[0]["error"])
    if started:
        return f"pending ({started[0]['epochs_completed']}/{started[0]['epochs']} ep)"
    return "pending"


def _notes(runs: list[dict], done: list[dict], seeds: list) -> list[str]:
    """The cell's remarks: verdicts that are not the cell's, unsettled verdicts, runs no better than their own
    initialization, failed and pending seeds."""
    verdicts, n, notes = [r["verdict"] for r in done], len(done), []
    main = _unanimous(verdicts)
    for v in ("diverged", "dimensional_collapse", "collapse"):
        if v in verdicts and (v != main or v == "dimensional_collapse"):  # the others' text says so
            notes.append(f"{VERDICT_WORDS[v]} in {verdicts.count(v)}/{n}")
    unsettled = sum(r.get("verdict_settled") is False for r in done)
    if unsettled:
        notes.append(f"verdict unsettled in {unsettled}/{n}")
    flat = sum(r.get("no_better_than_init") is True for r in done)
    if flat:
        notes.append(f"no better than init in {flat}/{n}")
    failed = sum(r["status"] == "failed" for r in runs)
    pending = sum(r["status"] == "pending" for r in runs) + len(
        [s for s in seeds if s not in {r["seed"] for r in runs}])
    notes += [f"{failed} failed"] * bool(failed) + [f"{pending} pending"] * bool(pending)
    return notes


def _unanimous(verdicts: list) -> str | None:
    return verdicts[0] if verdicts and verdicts.count(verdicts[0]) == len(verdicts) else None


def summarize_cell(runs: list[dict], seeds: list) -> dict:
    """Text and colour of one cell. Every finished seed collapsed: ``collapse k/k`` (with the collapsed runs'
    accuracy where baselines place it); else the mean linear-probe top-1 ± its 95% t interval over the seeds
    that neither collapsed nor diverged, and the other verdicts as counts k/n. The colour is the verdict every
    seed shares, else ``mixed``."""
    done = [r for r in runs if r["status"] in FINISHED]
    if not done:
        text = _pending_text([r for r in runs if r["status"] == "failed"], [r for r in runs if r["status"] ==
                                                                            "pending"])
        return {"text": text, "color": "failed" if text.startswith("failed") else "pending", "collapse": None,
                "done": 0, "acc": None}
    verdicts, n = [r["verdict"] for r in done], len(done)
    n_col = verdicts.count("collapse")
    shown = [r for r in done if r["verdict"] not in ("collapse", "diverged")]
    accs = [r["metrics"].get("linear_top1") for r in shown]
    if n_col == n:  # the collapsed runs' accuracy, shown only beside its place between the baselines
        norm = _mean_norm(done)
        acc = mean_ci([r["metrics"].get("linear_top1") for r in done])[0]
        text = f"collapse {n}/{n}" + ("" if norm is None or acc is None else f": {acc:.1f}{norm}")
    elif verdicts.count("diverged") == n:
        text = f"diverged {n}/{n}"
    else:
        text = (fmt_ci(accs) + (_mean_norm(shown) or "")) if mean_ci(accs)[2] else "n/a"
    notes = _notes(runs, done, seeds)
    text += f" ({', '.join(notes)})" if notes else ""
    collapse = True if n_col == n else (False if n_col == 0 else "mixed")
    return {"text": text, "color": _unanimous(verdicts) or "mixed", "collapse": collapse, "done": n,
            "acc": mean_ci(accs)[0] if n_col < n else None}


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


def _ends(run: dict, refs: dict) -> tuple:
    """(random, supervised) linear top-1 for a run: its seed's when that ran, else the mean over seeds."""
    ends = []
    for kind in ("random", "supervised"):
        by_seed = refs.get(kind) or {}
        ends.append(by_seed.get(run["seed"], sum(by_seed.values()) / len(by_seed) if by_seed else None))
    return tuple(ends)


def linear_norm(run: dict, refs: dict) -> float | None:
    """(acc - random) / (supervised - random) of a run's linear top-1: 0 is the untrained backbone, 1 the
    supervised one. None without both baselines or the run's accuracy, and None where the supervised baseline
    does not score above the untrained one: the scale would invert (``normalization``)."""
    acc = run["metrics"].get("linear_top1")
    lo, hi = _ends(run, refs)
    if acc is None or lo is None or hi is None or hi <= lo:
        return None
    return (acc - lo) / (hi - lo)


def normalization(refs: dict) -> str | None:
    """None when the setting's cells can be placed between its baselines, else why not (one sentence)."""
    lo, hi = (list((refs.get(k) or {}).values()) for k in ("random", "supervised"))
    if not lo or not hi:
        return "No [n]: this setting lacks a finished random and supervised baseline."
    if sum(hi) / len(hi) <= sum(lo) / len(lo):
        return (f"Not normalizable: the supervised baseline ({sum(hi) / len(hi):.1f}%) scores no better than the "
                f"untrained one ({sum(lo) / len(lo):.1f}%), so no [n] is given.")
    return None


def baselines_markdown(s: dict) -> str:
    """The rows above each table: each baseline's linear and kNN top-1 (mean ± 95% t interval over seeds), or
    why it is missing."""
    rows = []
    for kind, label in BASELINE_LABELS.items():
        runs = [r for r in s["baselines"] if r["baseline"] == kind]
        done = [r for r in runs if r["status"] == "complete"]
        if not done:
            failed = [r for r in runs if r["status"] == "failed"]
            why = ("failed: " + short(failed[0]["error"]) if failed else
                   "diverged" if any(r["status"] == "diverged" for r in runs) else "pending" if runs else
                   "not run (re-run the sweep to add it)")
            rows.append([label, why, "", ""])
            continue
        cols = [fmt_ci([r["metrics"].get(k) for r in done]) for k in ("linear_top1", "knn_top1")]
        rows.append([label, *cols, ", ".join(map(str, sorted({r["seed"] for r in done}, key=str)))])
    return md_table(["Baseline (same data and scale)", "linear top-1 %", "kNN top-1 %", "seeds"], rows)


# ---------------------------------------------------------------- settings

def _base_key(run: dict) -> tuple:
    return (run["data"] or "?", run["backbone"] or "?", run["epochs"])


def setting_groups(runs: list[dict], split: tuple = ()) -> dict:
    """{(data, backbone, epochs, setting): runs}: runs share a setting when their data and scale configs agree
    (``load.SETTING``); a run whose config is unknown (an older runs.csv) joins the one setting of its data,
    backbone and epochs, or stands apart when there are several. Each config key in ``split`` (a parameter swept
    across a table, ``--split``) divides a setting by its values; a run without any of them (a baseline, a row
    without that term) joins every part of its setting."""
    groups = {}
    for r in runs:
        groups.setdefault((*_base_key(r), r["setting"]), []).append(r)
    for key in [k for k in groups if k[3] is None]:
        known = [k for k in groups if k[:3] == key[:3] and k[3] is not None]
        if len(known) == 1:
            groups[known[0]] += groups.pop(key)
    return _split(groups, split) if split else groups


_ABSENT = object()


def _split(groups: dict, keys: tuple) -> dict:
    absent, out = (_ABSENT,) * len(keys), {}
    for key, members in groups.items():
        values = [tuple((r["config"] or {}).get(k, _ABSENT) for k in keys) for r in members]
        parts = sorted(set(values) - {absent}, key=str)
        if not parts:
            out[key] = members
            continue
        for i, part in enumerate(parts):  # a run in several parts: a copy in each but the first (cells mutate it)
            setting = {**json.loads(key[3] or "{}"), **{k: v for k, v in zip(keys, part) if v is not _ABSENT}}
            out[(*key[:3], json.dumps(setting, sort_keys=True, default=str))] = [
                r if v == part or not i else dict(r) for r, v in zip(members, values) if v in (part, absent)]
    return out


def split_keys_unknown(runs: list[dict], keys: tuple) -> list[str]:
    """The ``--split`` keys that no run's config has."""
    return [k for k in keys if not any(k in (r["config"] or {}) for r in runs)]


def config_differences(runs: list[dict]) -> list[str]:
    """``key: a / b`` for each config key whose value differs between these runs (their seeds aside)."""
    configs = [r["config"] for r in runs if r["config"]]
    keys = sorted({k for c in configs for k in c})
    return [f"`{k}`: " + " / ".join(sorted({json.dumps(c.get(k), default=str) for c in configs}))
            for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]


def differing_cells(cells: dict) -> list[str]:
    """One line per cell whose runs come from more than one config: the seeds average over configs there."""
    out = []
    for name, runs in cells.items():
        diff = config_differences([r for r in runs if r["status"] in FINISHED])
        if diff:
            out.append(f"- {name}: its runs' configs differ ({'; '.join(diff[:4])}"
                       f"{'; ...' if len(diff) > 4 else ''})")
    return out


def combo(run) -> tuple:
    """The run's eight switches (the six, then negatives and xcorr: off in summaries older than them)."""
    return tuple(bool(run["techniques"].get(t)) for t in SWITCHES)


def combos(runs, full: bool) -> list[tuple]:
    if full:
        return [(*(bool(i >> (5 - k) & 1) for k in range(6)), False, False) for i in range(63, -1, -1)]
    return sorted({combo(r) for r in runs}, reverse=True)


def _table4_cells(srun: list[dict], seeds: list, ref: pd.DataFrame) -> tuple[dict, list[str]]:
    """{mode: {(row, reg): cell}} for each geometry worth a table, and the cells whose configs differ."""
    tables, differ = {}, []
    for mode in geometry_modes([r for r in srun if r["cell"]]):
        members = {(row, reg): [r for r in srun if r["cell"] == (row, reg) and in_geometry(r, mode)]
                   for row in ref.index for reg in REGS}
        tables[mode] = {cell: summarize_cell(rs, seeds) for cell, rs in members.items()}
        differ += differing_cells({f"{ref.loc[row, 'label']} ({row}), {REGS[reg]}" + (
            "" if mode == "auto" else f" [{mode}]"): rs for (row, reg), rs in members.items()})
    return tables, list(dict.fromkeys(differ))


def _factorials(srun: list[dict], seeds: list, tables: dict) -> dict:
    """{method: {combination: cell}} for recipes run as a factorial, or with runs off Table 4's cells."""
    factorial = {}
    for method in sorted({r["method"] for r in srun if r["method"]}):
        mruns = [r for r in srun if r["method"] == method and r["techniques"]]
        full = any(r["experiment"] == "factorial" for r in mruns)
        if full or (tables and any(not r["cell"] for r in mruns)):
            factorial[method] = {c: summarize_cell([r for r in mruns if combo(r) == c], seeds)
                                 for c in combos(mruns, full)}
    return factorial


def analyses(runs: list[dict], factorial: dict) -> dict:
    """Per recipe whose runs (default geometry) form a factorial, at least one pair of switch combinations that
    differ in one switch alone: the finished runs as ``ablate.report.factorial`` reads them from runs.csv."""
    out = {}
    for method in factorial:
        mruns = [r for r in runs if r["method"] == method and r["techniques"] and in_geometry(r, "auto")]
        beyond = tuple(t for t in SWITCHES[len(TECHNIQUES):] if any(r["techniques"].get(t) for r in mruns))
        done = fa.outcomes(runs_frame(mruns), (*TECHNIQUES, *beyond)) if mruns else pd.DataFrame()
        if len(done) and len(fa.main_effects(done)):
            out[method] = done
    return out


def build_setting(key: tuple, every: list[dict]) -> dict:
    """One setting: its runs, baselines, and either its cells of a reference table (Table 4 or beyond it,
    ``reference_for``; ``ref``), its factorial, or its comparison."""
    ref = reference_for(every)
    for r in every:
        r["cell"] = place(r, ref)
    base = [r for r in every if r["baseline"]]
    refs = baseline_refs(base)
    for r in every:
        r["linear_norm"] = linear_norm(r, refs)
    srun = [r for r in every if not r["baseline"]]  # the runs that fill cells
    seeds = sorted({r["seed"] for r in srun if r["seed"] is not None}, key=str)
    grid = is_table4([r for r in srun if r["experiment"] != "factorial"])
    if not grid and not any(r["experiment"] == "factorial" for r in srun):
        for r in srun:  # a comparison: its runs are not Table 4 cells, whatever their switches
            r["cell"] = None
    tables, differ = _table4_cells(srun, seeds, ref) if grid else ({}, [])
    factorial = _factorials(srun, seeds, tables)
    named = [r["scale"] for r in every if r["scale"]]
    return {"key": key[:3], "setting": key[3], "scale": max(set(named), key=named.count) if named else "custom",
            "runs": every, "seeds": seeds, "tables": tables, "factorial": factorial,
            "analysis": analyses(srun, factorial), "baselines": base, "norm_problem": normalization(refs),
            "differ": differ, "compare": not tables and not factorial, "ref": ref}


def build_settings(runs: list[dict], split: tuple = ()) -> list[dict]:
    """One entry per setting (``setting_groups``), each with a file-name stem ``slug`` for its figures."""
    groups = setting_groups(runs, split)
    settings = [build_setting(key, groups[key]) for key in sorted(groups, key=str)]
    scales = [s["scale"] for s in settings]
    for i, s in enumerate(settings):
        s["slug"] = s["scale"] if scales.count(s["scale"]) == 1 else f"{s['scale']}_{i + 1}"
        s["distinct"] = _distinct(s, [o for o in settings if o is not s and o["key"] == s["key"]])
    return settings


def _distinct(s: dict, others: list[dict]) -> str:
    """What sets this setting apart from the others of its data, backbone and epochs: ``key=value`` of each
    data or scale key whose value differs ('' when there is no other)."""
    if not others or not s["setting"]:
        return ""
    mine, theirs = json.loads(s["setting"]), [json.loads(o["setting"] or "{}") for o in others]
    keys = sorted(k for k in {*mine, *(k for t in theirs for k in t)} if any(t.get(k) != mine.get(k) for t in theirs))
    return ", ".join(f"`{k}`={json.dumps(mine.get(k))}" for k in keys)

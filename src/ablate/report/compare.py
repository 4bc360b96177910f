"""The comparison report for a sweep that is neither Table 4 nor a factorial: one row per config (its seeds
averaged), the config keys that vary as columns, the metrics as mean ± 95% t interval over seeds, and the
verdicts as counts k/n."""

import json

from ..config import SWITCHES
from ..run.summary import FINISHED
from .cells import summarize_cell
from .stats import CI_NOTE, fmt_ci
from .tables import md_table

METRICS = (("linear_top1", "linear top-1 %"), ("knn_top1", "kNN top-1 %"), ("rank_z", "RankMe z"))
MAX_COLUMNS = 6  # varying keys shown as columns; the rest are listed under the table


def run_config(run: dict) -> dict:
    """The run's flat config with each switch section read as on/off (its sub-keys kept where it is on); from
    an older runs.csv, which kept no config, its method, switches and reg_geometry."""
    if not run["config"]:
        return {"method.name": run["method"], **{t: bool((run["techniques"] or {}).get(t)) for t in SWITCHES},
                "reg_geometry": run["reg_geometry"]}
    out = {}
    for k, v in run["config"].items():
        top = k.split(".")[0]
        if top in SWITCHES:
            out[top] = v is not None or out.get(top, False)
        if top not in SWITCHES or v is not None:
            out[k] = v
    return out


def _config_key(run: dict) -> str:
    return run["config_id"] or json.dumps(run_config(run), sort_keys=True, default=str)


def varying(configs: list[dict]) -> list[str]:
    """The keys whose values differ between configs; a switch's sub-keys only where they differ among the
    configs that have the switch on (else its on/off column says it)."""
    keys = sorted({k for c in configs for k in c})
    vary = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
    out = []
    for k in vary:
        top = k.split(".")[0]
        if top in SWITCHES and k != top:
            on = [c for c in configs if c.get(top)]
            if len({json.dumps(c.get(k), default=str) for c in on}) < 2:
                continue
        out.append(k)
    return sorted(out, key=lambda k: (k.split(".")[0] not in SWITCHES, k))


def groups(runs: list[dict]) -> dict:
    """{config key: runs} of the runs that fill cells, in the order of their first run."""
    out = {}
    for r in runs:
        out.setdefault(_config_key(r), []).append(r)
    return out


def _value(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return "" if v is None else str(v)


def _verdicts(runs: list[dict]) -> str:
    done = [r for r in runs if r["status"] in FINISHED]
    verdicts = [r["verdict"] or "?" for r in done]
    text = ", ".join(f"{v} {verdicts.count(v)}/{len(done)}" for v in dict.fromkeys(verdicts))
    return text or summarize_cell(runs, [])["text"]


def comparison(setting: dict) -> dict:
    """The comparison's pieces: {'columns': varying keys shown, 'hidden': the others, 'cells': [(label, config,
    runs, cell summary)]}."""
    srun = [r for r in setting["runs"] if not r["baseline"]]
    by_config = groups(srun)
    configs = {k: run_config(rs[0]) for k, rs in by_config.items()}
    vary = varying(list(configs.values()))
    cols, hidden = vary[:MAX_COLUMNS], vary[MAX_COLUMNS:]
    cells = []
    for k, rs in by_config.items():
        label = ", ".join(f"{c}={_value(configs[k].get(c))}" for c in cols) or rs[0]["method"] or "run"
        cells.append((label, configs[k], rs, summarize_cell(rs, setting["seeds"])))
    return {"columns": cols, "hidden": hidden, "cells": cells}


def comparison_markdown(setting: dict) -> list[str]:
    """The comparison table, one row per config, and a note on the keys not shown as columns."""
    comp = setting["comparison"]
    rows = []
    for _, config, runs, _cell in comp["cells"]:
        done = [r for r in runs if r["status"] in FINISHED]
        metrics = [fmt_ci([r["metrics"].get(k) for r in done if r["verdict"] != "diverged"]) for k, _ in METRICS]
        rows.append([*(_value(config.get(c)) for c in comp["columns"]), len(done), *metrics, _verdicts(runs)])
    header = [*(f"`{c}`" for c in comp["columns"]), "seeds", *(name for _, name in METRICS), "verdicts"]
    out = [md_table(header, rows), "", f"Metrics: {CI_NOTE}; a collapsed run's accuracy is included here."]
    if not comp["columns"]:
        out += ["", "Every run shares one config (its seeds aside)."]
    if comp["hidden"]:
        out += ["", "Also varying: " + ", ".join(f"`{k}`" for k in comp["hidden"]) + "."]
    notes = [c["text"] for _, _, _, c in comp["cells"]]
    if any("(" in t for t in notes):
        out += ["", "Remarks per config: " + "; ".join(f"{label}: {c['text']}" for label, _, _, c in comp["cells"]
                                                        if "(" in c["text"]) + "."]
    return out + [""]



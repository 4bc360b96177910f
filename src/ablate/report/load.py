"""Finding and reading runs: every ``summary.json`` (through ``ablate.run.summary.read_summary``), every started
run without one, and the rows of an earlier report's ``runs.csv``, each as one flat record.

A record's ``config`` is the run's resolved config (``.hydra/config.yaml``) flattened to dotted keys, less the
seed and the keys that only schedule or log (``SCHEDULING``); ``config_id`` names it, so seeds average only
within one config. ``setting`` is the part that sets the data and scale (``SETTING``): runs of one setting share
a table and its baselines.
"""

import hashlib
import json
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

from ..config import SWITCHES, TECHNIQUES
from ..errors import AblateError
from ..losses import reg_geometry
from ..run.summary import FINISHED, STATUSES, read_config, read_summary, upgrade
from .factorial import read_runs_csv

SCHEDULING = ("seed", "logger", "checkpoint", "hydra", "device", "train.view_parallel", "train.log_every")
SETTING = ("data", "backbone", "model", "train.epochs", "train.batch_size", "train.warmup_epochs", "eval")


def warn(msg: str) -> None:
    print(f"ablate.report: warning: {msg}", file=sys.stderr)


class Malformed(ValueError):
    """A run file that is readable but not what ablate writes; the run is skipped with a warning."""


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _sweep_dir(run_dir: Path) -> Path | None:
    return next((p for p in run_dir.parents if (p / "multirun.yaml").exists()), None)


def offline_linear(run_dir: Path) -> dict:
    """``linear_eval_top1`` from the run's ``linear_eval.json`` (``python -m ablate.tools.linear``), if any."""
    res = _json(run_dir / "linear_eval.json")
    top1 = res.get("top1") if isinstance(res, dict) else None
    return {"linear_eval_top1": top1} if _is_number(top1) and top1 is not None else {}


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


# ---------------------------------------------------------------- configs

def flatten(config, prefix: str = "") -> dict:
    """{dotted key: value} of a nested config; a switch section that is off (null) stays one key."""
    if isinstance(config, dict) and config:
        return {k: v for key, sub in config.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: config}


def _under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


_REF = re.compile(r"^\$\{(?:([\w.]+)|oc\.select:([\w.]+),(.*))\}$")


def resolve_refs(flat: dict) -> dict:
    """The flat config with each value that only points at another key (``${method.var_weight}``,
    ``${oc.select:method.xcorr_weight,1.0}``, as Hydra saves a run's config unresolved) replaced by what it
    points at, so runs compare by the value they used; other interpolations (``${oc.env:...}``, which would read
    this machine's environment) stay as written."""
    out = dict(flat)
    for k, v in flat.items():
        m = _REF.match(v) if isinstance(v, str) else None
        if m is None:
            continue
        key = m.group(1) or m.group(2)
        target = flat.get(key)
        if key in flat and not (isinstance(target, str) and _REF.match(target)):
            out[k] = target
        elif m.group(2) and key not in flat:
            out[k] = yaml.safe_load(m.group(3))
    return out


def config_parts(config: dict | None) -> tuple[dict | None, str | None, str | None]:
    """(the flat config less seed and scheduling keys with its references resolved, its id, the setting as JSON)
    of a run's config. The id and the setting hash the config as saved, so they match those of an earlier
    report's runs.csv."""
    if not config:
        return None, None, None
    saved = {k: v for k, v in flatten(config).items() if not _under(k, SCHEDULING)}
    text = json.dumps(saved, sort_keys=True, default=str)
    setting = json.dumps({k: v for k, v in saved.items() if _under(k, SETTING)}, sort_keys=True, default=str)
    return resolve_refs(saved), hashlib.sha256(text.encode()).hexdigest()[:12], setting


# ---------------------------------------------------------------- one run

def _run_fields(s: dict, cfg: dict, choices: dict) -> dict:
    """The record fields a summary gives, each from the config where an unfinished run's summary lacks it."""
    section = lambda k: cfg.get(k) if isinstance(cfg.get(k), dict) else {}  # noqa: E731
    invariance = s.get("invariance")
    return {
        "status": s.get("status"), "baseline": s.get("baseline") or section("method").get("baseline"),
        "device": s.get("device"), "precision": s.get("precision"), "channels_last": s.get("channels_last"),
        "compile_aug": s.get("compile_aug"),  # None: a run from before train.compile_aug (eager)
        "error": s.get("error"), "verdict": s.get("verdict"), "verdict_reason": s.get("verdict_reason"),
        "method": s.get("method") or section("method").get("name"), "invariance": invariance,
        "scale_free": s.get("scale_free"),
        "techniques": s.get("techniques") or ({t: cfg.get(t) is not None for t in SWITCHES} if cfg else None),
        # runs from before the switch (no field, no config key) acted on raw outputs
        "reg_geometry": s.get("reg_geometry") or reg_geometry(cfg.get("reg_geometry") or "raw", invariance),
        "seed": s.get("seed", cfg.get("seed")), "choices": choices, "experiment": choices.get("experiment"),
        "scale": choices.get("scale"), "data": s.get("data") or section("data").get("name"),
        "backbone": s.get("backbone") or section("backbone").get("name"),
        "epochs": s.get("epochs", section("train").get("epochs")), "wall_s": s.get("wall_s"),
        "embedding_dim": s.get("embedding_dim"), "chance_top1": s.get("chance_top1"),
        "metrics_init": s.get("metrics_init") or {}, "no_better_than_init": s.get("no_better_than_init"),
        "verdict_settled": s.get("verdict_settled"), "verdict_settled_reason": s.get("verdict_settled_reason"),
        "protocol": s.get("protocol") or {}, "spectrum": s.get("spectrum_z"), "overrides": s.get("overrides") or [],
    }


def read_run(run_dir: Path, summary: dict | None) -> dict:
    """One run directory as a flat record; fields a failed or unfinished run's summary lacks come from Hydra's
    files (``summary``: the run's upgraded summary.json, None for a run still training)."""
    cfg = read_config(run_dir) or {}
    s = summary or upgrade({"status": "pending"}, cfg)
    for key in ("metrics", "metrics_init"):
        if not isinstance(s.get(key) or {}, dict) or not all(map(_is_number, (s.get(key) or {}).values())):
            raise Malformed(f"{run_dir / 'summary.json'} has {key} that are not numbers")
    hydra = _yaml(run_dir / ".hydra" / "hydra.yaml") or {}
    choices = s.get("choices") or (hydra.get("hydra", {}).get("runtime", {}).get("choices") or {})
    curve = read_metrics(run_dir / "metrics.jsonl")
    config, config_id, setting = config_parts(cfg)
    rec = {"dir": str(run_dir), "sweep_dir": _sweep_dir(run_dir), "source": None, **_run_fields(s, cfg, choices),
           "epochs_completed": s.get("epochs_completed", len(curve)), "curve": curve,
           "metrics": {**(s.get("metrics") or {}), **offline_linear(run_dir)},
           "config": config, "config_id": config_id, "setting": setting}
    if rec["no_better_than_init"] is None:
        rec["no_better_than_init"] = no_better_than_init(rec)
    return rec


def no_better_than_init(run: dict) -> bool | None:
    """Whether the trained run's linear top-1 is at or below its own untrained initialization's (``metrics_init``,
    recorded by runs that evaluate epoch 0); None where either is missing."""
    acc, init = run["metrics"].get("linear_top1"), (run.get("metrics_init") or {}).get("linear_top1")
    return None if acc is None or init is None or run.get("baseline") else acc <= init


def _yaml(path: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


# ---------------------------------------------------------------- an earlier report's runs.csv

CSV_FIELDS = ("dir", "experiment", "scale", "row", "reg", "method", "baseline", *SWITCHES, "reg_geometry",
              "invariance", "scale_free", "seed", "status", "verdict", "verdict_reason", "verdict_settled",
              "verdict_settled_reason", "no_better_than_init", "error", "data", "backbone", "epochs",
              "epochs_completed", "wall_s", "embedding_dim", "chance_top1", "device", "precision", "channels_last",
              "compile_aug", "config_id", "setting", "linear_norm")
INIT = "init_"  # runs.csv column prefix of metrics_init


def _flag(v) -> bool | None:
    return {"True": True, "False": False, "true": True, "false": False}.get(str(v))


def _csv_record(rec: dict, path: Path) -> dict:
    tech = {t: _flag(rec.get(t)) is True for t in SWITCHES}  # older files lack negatives, xcorr: off
    s = upgrade({k: rec.get(k) for k in ("method", "invariance", "scale_free", "device", "precision",
                                         "channels_last")})  # older files lack the later columns
    seed = rec["seed"]
    return {
        **{k: rec.get(k) for k in CSV_FIELDS if k not in SWITCHES},
        **{k: s[k] for k in ("invariance", "scale_free", "precision")},
        "channels_last": _flag(s["channels_last"]) if isinstance(s["channels_last"], str) else s["channels_last"],
        "seed": int(seed) if str(seed).isdigit() else seed, "techniques": tech,
        **{k: _flag(rec.get(k)) for k in ("compile_aug", "verdict_settled", "no_better_than_init")},
        "reg_geometry": rec.get("reg_geometry") or reg_geometry("raw", s["invariance"]),
        "choices": {k: rec.get(k) for k in ("row", "reg", "experiment", "scale") if rec.get(k)},
        "metrics": {k: v for k, v in rec.items() if k not in CSV_FIELDS and not k.startswith(INIT) and v is not None},
        "metrics_init": {k[len(INIT):]: v for k, v in rec.items() if k.startswith(INIT) and v is not None},
        "protocol": {}, "spectrum": None, "curve": [], "overrides": [], "sweep_dir": None, "source": str(path),
        "config": None,
    }


def load_csv_runs(path: Path) -> list[dict]:
    """The runs of an earlier report's runs.csv, as records without curves or spectra (not kept there): a sweep
    that adds a dimension can be reported beside the runs it leaves unchanged without training them again."""
    try:
        df = read_runs_csv(path, ("dir", "method", "status", *TECHNIQUES), dtype={"seed": object})
    except AblateError as e:  # main prints it in one line, exit 2
        raise SystemExit(f"ablate.report: error: {e}") from None
    return [_csv_record(rec, path) for rec in df.astype(object).where(df.notna(), None).to_dict("records")]


# ---------------------------------------------------------------- every run below the given paths

def _append_run(runs: list[dict], run_dir: Path, summary: dict | None) -> None:
    try:
        runs.append(read_run(run_dir, summary))
    except Malformed as e:
        warn(f"skipping {run_dir}: {e}")


def regularized(run: dict) -> bool:
    return bool((run["techniques"] or {}).get("var") or (run["techniques"] or {}).get("cov"))


def _identity(run: dict) -> tuple:
    """What makes two records the same run: its directory and, where var/cov act, their geometry."""
    return Path(run["dir"]).resolve(), run["reg_geometry"] if regularized(run) else None


def _summaries(root: Path, runs: list[dict], seen: set) -> None:
    for path in sorted(root.rglob("summary.json")):
        s = read_summary(path)
        if s is None:
            warn(f"skipping {path}: not a readable JSON object")
            continue
        if s.get("status") not in STATUSES:
            warn(f"skipping {path}: not an ablate run summary (no status among {', '.join(STATUSES)})")
            continue
        seen.add(path.parent.resolve())
        _append_run(runs, path.parent, s)


def find_runs(paths: list[Path]) -> list[dict]:
    """Finished and failed runs (summary.json) and started ones (Hydra job dir or metrics, no summary yet)
    below each directory; a runs.csv file stands for the runs of an earlier report, each kept unless a run
    found in a directory has its path and its reg_geometry. Copies of one run count once (``drop_copies``)."""
    runs, seen = [], set()
    for root in (d for d in paths if d.is_dir()):
        _summaries(root, runs, seen)
        started = {p.parent.parent for p in root.rglob(".hydra/config.yaml")} | {
            p.parent for p in root.rglob("metrics.jsonl")}
        for run_dir in sorted(started):
            if run_dir.resolve() not in seen and not (run_dir / "summary.json").exists():
                seen.add(run_dir.resolve())
                _append_run(runs, run_dir, None)
    live = {_identity(r) for r in runs}
    for csv in (d for d in paths if d.is_file()):
        runs += [r for r in load_csv_runs(csv) if _identity(r) not in live]
    return drop_copies(runs)


def _fingerprint(run: dict):
    """A finished run's config, seed and final metrics: a copied run directory has all three of its original."""
    if run["status"] not in FINISHED or not run["metrics"]:
        return None
    config = run["config_id"] or (run["method"], run["data"], run["backbone"], run["epochs"], run["setting"],
                                  tuple(sorted((run["techniques"] or {}).items())), run["reg_geometry"])
    return config, str(run["seed"]), json.dumps(run["metrics"], sort_keys=True, default=str)


def drop_copies(runs: list[dict]) -> list[dict]:
    """The runs with each copy (same config, seed and metrics as an earlier record) left out, with a warning."""
    first, kept = {}, []
    for r in runs:
        key = _fingerprint(r)
        if key is not None and key in first:
            warn(f"counting {r['dir']} once: a copy of {first[key]} (same config, seed and metrics)")
            continue
        if key is not None:
            first[key] = r["dir"]
        kept.append(r)
    return kept


def runs_frame(runs: list[dict]) -> pd.DataFrame:
    """runs.csv: one row per run, the ``CSV_FIELDS``, each final metric and each ``init_`` metric."""
    metric_keys = sorted({k for r in runs for k in r["metrics"]})
    init_keys = sorted({k for r in runs for k in r.get("metrics_init") or {}})
    rows = []
    for r in runs:
        tech = r["techniques"] or {}
        row = {k: r.get(k) for k in CSV_FIELDS}
        row.update({t: tech.get(t) for t in SWITCHES}, row=r["cell"][0] if r.get("cell") else None,
                   reg=r["cell"][1] if r.get("cell") else None,
                   reg_geometry=r["reg_geometry"] if regularized(r) else None)
        row.update({k: r["metrics"].get(k) for k in metric_keys})
        row.update({INIT + k: (r.get("metrics_init") or {}).get(k) for k in init_keys})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*CSV_FIELDS, *metric_keys, *(INIT + k for k in init_keys)])
    # the metrics before linear_norm, as earlier files had them
    return frame[[c for c in frame.columns if c != "linear_norm"] + ["linear_norm"]]

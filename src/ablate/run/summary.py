"""The run summary (``summary.json``): its schema, its status words and the atomic write every run file uses.

Read by ``train`` (is this directory's run finished?), the CLI (the summary of a failed run) and ``report``
(``read_summary``, which ``upgrade``s older schemas in this one place).
"""

import json
from pathlib import Path

from ..errors import ConfigError
from ..files import atomic_write, write_json, write_text  # noqa: F401  (the run files' writers)

SCHEMA = 1
FINISHED = ("complete", "diverged")
STATUSES = (*FINISHED, "failed")


def failure_summary(error: str, method: str | None, techniques: dict, seed, baseline: str | None = None) -> dict:
    """What a sweep records for a cell that could not train (status ``failed``)."""
    return {"schema": SCHEMA, "status": "failed", "error": error, "method": method, "techniques": techniques,
            "seed": seed, "verdict": None, "metrics": {}, "baseline": baseline}


def finished_summary(summary_path: Path, keep_copy: bool = True) -> dict | None:
    """The summary of a finished run in this directory, None when there is nothing to keep (no summary, or a
    failed run). A summary that cannot be read, or an unfinished one from another schema, may still be
    someone's result: refuse to train over it (a copy is kept next to it) rather than overwrite it."""
    if not summary_path.exists():
        return None
    try:
        summary = json.loads(summary_path.read_text())
        if not isinstance(summary, dict):
            raise ValueError(f"a JSON {type(summary).__name__}, not an object")
    except (OSError, ValueError) as e:
        problem = f"is unreadable ({str(e).splitlines()[0]})"
    else:
        status, schema = summary.get("status"), summary.get("schema")
        if status in FINISHED:
            return summary
        if status == "failed" or (schema == SCHEMA and status is None):
            return None
        problem = f"has status {status!r} from schema {schema!r} (this version writes schema {SCHEMA})"
    keep = summary_path.with_name(summary_path.name + ".unreadable")
    if keep_copy and not keep.exists():
        keep.write_bytes(summary_path.read_bytes())
    copy = f" (copy in {keep.name})" if keep.exists() else ""
    raise ConfigError(f"{summary_path} {problem}; it may hold a finished run, so nothing was overwritten{copy}: "
                      f"move it away to train here, or choose another hydra.run.dir")


# ---------------------------------------------------------------- reading (the report, the tools)

PRESET_INVARIANCE = {"byol": "normalized_mse", "simsiam": "neg_cosine", "vicreg": "mse"}  # conf/method/*.yaml


def _section(config: dict | None, key: str) -> dict:
    value = (config or {}).get(key)
    return value if isinstance(value, dict) else {}


def _old_precision(train: dict, device) -> str | None:
    """The precision of a run from before summary.json recorded it: ``auto`` then meant bf16 on CUDA only."""
    p = train.get("precision")
    if p in ("fp32", "bf16"):
        return p
    return None if p is None or device is None else ("bf16" if str(device).startswith("cuda") else "fp32")


def _old_channels_last(train: dict, device, precision: str | None) -> bool | None:
    """The memory format of a run from before summary.json recorded it: ``auto`` then meant NHWC on CUDA or in
    bf16 only."""
    v = train.get("channels_last", "auto")
    if v != "auto":
        return bool(v)
    return None if device is None else (str(device).startswith("cuda") or precision == "bf16")


def upgrade(summary: dict, config: dict | None = None) -> dict:
    """A summary in today's terms (a copy): the fields older schemas lack, from the run's resolved ``config``
    (its config.yaml) where given, else from what the method name implies: ``invariance`` (the preset's, for
    byol / simsiam / vicreg), ``scale_free`` (the invariance is blind to the embeddings' norms), ``precision``
    and ``channels_last`` (what ``auto`` meant before they were recorded)."""
    from ..losses import SCALE_FREE

    s = dict(summary)
    method = s.get("method") or _section(config, "method").get("name")
    invariance = s.get("invariance") or _section(config, "method").get("invariance") or PRESET_INVARIANCE.get(method)
    s["invariance"] = invariance
    if s.get("scale_free") is None:
        s["scale_free"] = None if invariance is None else invariance in SCALE_FREE
    train = _section(config, "train")
    if s.get("precision") is None:
        s["precision"] = _old_precision(train, s.get("device"))
    if s.get("channels_last") is None:
        s["channels_last"] = _old_channels_last(train, s.get("device"), s["precision"])
    return s


def read_config(run_dir: Path) -> dict | None:
    """The resolved config a run directory records (Hydra's ``.hydra/config.yaml``, else ``config.yaml``)."""
    import yaml

    for path in (run_dir / ".hydra" / "config.yaml", run_dir / "config.yaml"):
        try:
            config = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(config, dict):
            return config
    return None


def read_summary(path: Path) -> dict | None:
    """The summary.json at ``path`` upgraded to today's fields (``upgrade``), or None when it is not a readable
    JSON object."""
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict):
        return None
    return upgrade(summary, read_config(Path(path).parent))

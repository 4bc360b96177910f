"""The run summary (``summary.json``): its schema, its status words and the atomic write every run file uses.

Read by ``train`` (is this directory's run finished?), the CLI (the summary of a failed run) and ``report``.
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

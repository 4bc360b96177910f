"""``python -m ablate.report RUNS_DIR [RUNS_DIR ...] --out DIR [--note NOTE.md]``: runs -> a report that leads
with the answer.

Reads every ``summary.json`` (and every started run without one) below the given directories, or an earlier
report's ``runs.csv``, and writes into DIR:
  report.md  per setting (runs of one data and scale config), the answer first: for a Table 4 sweep the paper's
             claims that the runs decide and Table 4 (ours / paper) with the baselines; for a factorial the
             switches' main effects and interactions; for any other sweep a comparison of its configs; each
             with its figure. Then the note (``--note``, at most 300 words), then the details: per-run
             diagnostics, protocol, the commands that regenerate the runs, the other figures
  runs.csv   one row per run: switches, method, seed, status, verdict, every final (and epoch-0) metric
  *.png      the figures
Data flow: ``load`` (find and read runs) -> ``cells`` (settings, cells, baselines; ``stats`` for the intervals,
``table4`` for the paper's table) -> ``compare`` / ``factorial`` -> ``markdown`` and ``figures``.
"""

_API = {"main": "build", "write_report": "build", "build_settings": "cells", "summarize_cell": "cells",
        "regen_commands": "markdown", "find_runs": "load", "reference": "table4"}


def __getattr__(name):
    """The public names, imported on first use: ``python -m ablate.report.factorial`` then loads no sibling
    module before it runs (runpy warns when the package imported the module it is about to run)."""
    if name not in _API:
        raise AttributeError(f"module 'ablate.report' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_API[name]}", __name__), name)

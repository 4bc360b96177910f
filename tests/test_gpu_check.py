"""scripts/gpu_check.sh --dry-run: the GPU check's plumbing on a CPU with tiny sizes (about 2 minutes on a
loaded 2-core machine): every section runs and passes, and $OUT holds at most 8 files, none in a subfolder."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = {"summary.txt", "environment.txt", "cuda_tests.txt", "suite.txt", "quickstart.txt", "bench.txt", "table.txt",
         "report.md"}


def test_gpu_check_dry_run_writes_its_files(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OUT": str(out), "TMPDIR": str(tmp_path)}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in written} == FILES and all(p.parent == out for p in written)
    summary = (out / "summary.txt").read_text()
    for name in ("environment", "cuda_tests", "suite", "quickstart", "bench", "table"):
        assert f"{name}: exit 0," in summary, summary
    assert "bench vicreg" in summary and "images/s" in summary
    assert "PASSED" in (out / "suite.txt").read_text() and "SKIPPED" in (out / "cuda_tests.txt").read_text()
    assert (out / "quickstart.txt").read_text().count(": exit 0") == 1
    assert "cells finished: 1" in (out / "table.txt").read_text()  # one cell, without the baselines
    assert (out / "report.md").read_text().startswith("# ")
    assert not list(tmp_path.glob("gpu_check.*"))  # its work directory is removed

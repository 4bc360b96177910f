"""The `ablate` command: Hydra's short flags pass the pre-check, a group missing its `+` gets a one-line hint, and
every console script named in pyproject.toml is an importable callable."""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.config import ConfigError
from ablate.run.cli import check_overrides
from ablate.run.hydra_args import override_args

ROOT = Path(__file__).resolve().parents[1]


def run_ablate(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_shell_completion_prints_a_bash_script(tmp_path):
    r = run_ablate("-sc", "install=bash", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "hydra_bash_completion()" in r.stdout and "complete -o nospace -o default -F hydra_bash_completion" in r.stdout


@pytest.mark.parametrize("args, expect", [
    (["-c", "job"], "seed: 0"),
    (["--cfg", "job", "+method=byol", "-p", "method"], "name: byol"),
    (["+method=vicreg", "--cfg=job"], "name: vicreg"),
])
def test_config_printing_flags_pass_the_pre_check(tmp_path, args, expect):
    r = run_ablate(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert expect in r.stdout and not list(tmp_path.iterdir())  # printed, nothing trained


@pytest.mark.parametrize("args, line", [
    (["method=byol"], "ablate: error: write +method=byol: method is not in the defaults list"),
    (["+method=byol", "reg=var"], "ablate: error: write +reg=var: reg is not in the defaults list"),
    (["-m", "method=byol,vicreg"], "ablate: error: write +method=byol,vicreg: method is not in the defaults list"),
])
def test_group_without_its_plus_is_one_line(tmp_path, args, line):
    r = run_ablate(*args, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [line], r.stderr
    assert not list(tmp_path.iterdir())


def test_groups_already_in_the_defaults_list_need_no_plus():
    check_overrides(["+method=byol", "ema=none", "scale=table_cpu", "data=cifar10", "logger=none"])
    check_overrides(["+row=byol", "method=vicreg"])  # the row's defaults list holds the method
    with pytest.raises(ConfigError, match=r"write \+row=byol"):
        check_overrides(["+method=byol", "row=byol"])


def test_flag_values_are_not_overrides():
    args = ["-cn", "config", "-cp", "conf", "-m", "+method=byol", "--cfg=job", "-p", "method", "~ema", "x=1"]
    assert override_args(args) == ["+method=byol", "~ema", "x=1"]


def console_scripts(text: str) -> dict[str, str]:
    """pyproject.toml's ``[project.scripts]`` table (``name = "module:func"`` lines), read without tomllib, which
    Python 3.10 lacks."""
    table = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S).group(1)
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', table, re.M))


def test_console_scripts_are_read_as_tomllib_reads_them():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    text = (ROOT / "pyproject.toml").read_text()
    assert console_scripts(text) == tomllib.loads(text)["project"]["scripts"]


def test_console_scripts_name_importable_callables(capsys):
    scripts = console_scripts((ROOT / "pyproject.toml").read_text())
    assert set(scripts) == {"ablate", "ablate-report", "ablate-geometry", "ablate-bench", "ablate-export",
                            "ablate-linear", "ablate-factorial"}
    for name, target in scripts.items():
        module, func = target.split(":")
        main = getattr(importlib.import_module(module), func)
        assert callable(main), name
        if name != "ablate":  # argparse tools: --help exits 0 with a usage line
            with pytest.raises(SystemExit) as e:
                main(["--help"])
            assert e.value.code == 0 and "usage:" in capsys.readouterr().out, name
    assert scripts["ablate"] == "ablate.run.cli:main"

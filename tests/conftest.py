import copy
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from ablate.config import TECHNIQUES
from ablate.run.compiled import switch_overrides
from ablate.run.rundir import LOCK

# Tiny model settings so every test trains in well under a second, on the CPU (device=auto would take a GPU
# where there is one, and these tests expect the CPU's behaviour: its kernels, precision and determinism).
TINY = ["backbone.widths=[4,8,8,16]", "model.head_width_mult=0.01", "train.batch_size=16",
        "data.train_size=64", "data.test_size=32", "eval.bank_size=64", "eval.linear.epochs=2",
        "train.epochs=1", "train.warmup_epochs=0", "device=cpu"]


def rows(run):
    """A run's metrics.jsonl rows without ``wall_s``: what two runs of one computation share."""
    return [{k: v for k, v in json.loads(line).items() if k != "wall_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@functools.cache
def _composed(overrides: tuple[str, ...]):
    with initialize_config_module("ablate.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def make_cfg(*overrides):
    """The config ``python -m ablate OVERRIDES`` runs, a fresh copy each call: composed once per distinct list in a
    session, since Hydra reads and merges some twenty yaml files a compose (about 40 times a deep copy's cost);
    interpolations such as ${oc.env:...} still resolve when read."""
    return copy.deepcopy(_composed(tuple(overrides)))


def switched_cfg(method: str, on: dict, *overrides):
    """``make_cfg`` of ``+method=METHOD`` with the six switches as ``on`` says: composed once with every switch
    on, then the ones off set to null, which is what ``t=none`` composes to (test_config checks it on the
    factorial's 64 cells). One compose a method instead of one a combination."""
    cfg = make_cfg(f"+method={method}", *switch_overrides(dict.fromkeys(TECHNIQUES, True)), *overrides)
    for t in TECHNIQUES:
        cfg[t] = cfg[t] if on[t] else None
    return cfg


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip on a machine without a CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cfg_factory():
    return make_cfg


@pytest.fixture(scope="session")
def _tiny_runs(tmp_path_factory):
    return {}, tmp_path_factory.mktemp("tiny_runs")


@pytest.fixture
def tiny_run(_tiny_runs, tmp_path):
    """``tiny_run(METHOD)``: a finished one-epoch run of ``+method=METHOD`` at the TINY settings, as
    ``tmp_path / "run"``. Trained once per method in a session; each test gets its own copy to read or write."""
    from ablate.run.loop import train

    done, root = _tiny_runs

    def get(method: str):
        if method not in done:
            train(make_cfg(f"+method={method}", *TINY), root / method)
            done[method] = root / method
        return Path(shutil.copytree(done[method], tmp_path / "run"))

    return get


@pytest.fixture
def one_thread():
    """Kept for tests that name it: every test already runs on one torch thread (``_one_torch_thread``)."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread(request):
    """Every test on one torch thread unless marked ``default_threads``: the tests' tiny models run faster on one
    thread than on two, whose OpenMP handoffs cost more than the work, and on a loaded CPU two spinning threads
    make tiny steps 100x slower. Tests that need more threads (the split step) ask for them."""
    if request.node.get_closest_marker("default_threads"):
        yield
        return
    own = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(own)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def run_ablate(*args, cwd, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def refused(monkeypatch, capsys):
    """``python -m ablate ARGS`` run in this process, for input the command refuses before it hands over to Hydra
    (what a subprocess would add is the interpreter's start): a CompletedProcess with the exit status and what
    it printed. Reaching Hydra's main fails the test."""
    from ablate.run import cli

    monkeypatch.setattr(cli, "_hydra_main", lambda: pytest.fail("the command reached Hydra's main"))

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["ablate", *args])
        capsys.readouterr()
        try:
            cli.main()
            code = 0
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["ablate", *args], code, out, err)

    return run


def popen(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # a shell starts background jobs with SIGINT ignored, and a child inherits that: restore Ctrl-C
    return subprocess.Popen([sys.executable, "-m", "ablate", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(read, proc, what: str, timeout=120):
    """``read()``'s value once it stops raising OSError or ValueError, while the run is still alive."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            return read()
        except (OSError, ValueError):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    raise AssertionError(f"the run never {what}")


def wait_for_claim(run_dir: Path, proc, timeout=120) -> dict:
    """The lock file's holder, once the run has taken the directory."""
    return wait_for(lambda: json.loads((run_dir / LOCK).read_text()), proc, "locked its directory", timeout)


def one_error_line(r, code=2) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code and len(lines) == 1 and lines[0].startswith("ablate: error: "), r.stderr
    return lines[0]


# One Table 4 sweep that several tests read (a sweep with its baselines costs seconds of subprocesses): the row
# without predictor or BN, No Reg, seeds 0 and 1, an unknown optimizer beside sgd so that two of its four cells
# fail. +reg comes before +row: the CLI orders them.
TABLE4_CELL = ["+experiment=vicreg_table4", "+reg=none", "+row=simsiam_no_pred_no_bn", *TINY]
TABLE4_SWEEP = ["optim.name=bogus,sgd", "seed=0,1"]


@pytest.fixture(scope="session")
def gloo_runs(tmp_path_factory):
    """test_dist's ``one_and_two_processes`` of its GLOO_CASES (the six switches' methods, SimCLR, Barlow Twins),
    once a session: three interpreters for test_dist's and test_beyond's 1 == 2 processes checks, not six."""
    from test_dist import GLOO_CASES, one_and_two_processes

    return one_and_two_processes(tmp_path_factory.mktemp("gloo"), GLOO_CASES)


@pytest.fixture(scope="session")
def table4_sweep(tmp_path_factory):
    """(sweep dir, the finished ``python -m ablate -m`` process) of TABLE4_CELL x TABLE4_SWEEP, two cells at a time
    under hydra/launcher=parallel; its baselines are added once per seed."""
    root = tmp_path_factory.mktemp("table4")
    sweep = root / "m"
    r = run_ablate("-m", *TABLE4_CELL, *TABLE4_SWEEP, "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
                   f"hydra.sweep.dir={sweep}", cwd=root, timeout=600)
    return sweep, r

import json

import pytest
import torch
from hydra import compose, initialize_config_module

from ablate.config import TECHNIQUES

# Tiny model settings so every test trains in well under a second, on the CPU (device=auto would take a GPU
# where there is one, and these tests expect the CPU's behaviour: its kernels, precision and determinism).
TINY = ["backbone.widths=[4,8,8,16]", "model.head_width_mult=0.01", "train.batch_size=16",
        "data.train_size=64", "data.test_size=32", "eval.bank_size=64", "eval.linear.epochs=2",
        "train.epochs=1", "train.warmup_epochs=0", "device=cpu"]


def rows(run):
    """A run's metrics.jsonl rows without ``wall_s``: what two runs of one computation share."""
    return [{k: v for k, v in json.loads(line).items() if k != "wall_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def make_cfg(*overrides):
    with initialize_config_module("ablate.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


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


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: on a shared, loaded CPU two spinning OpenMP threads make tiny steps
    100x slower."""
    from ablate.bench import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def switch_overrides(on: dict) -> list[str]:
    options = {"ema": "cosine", "stop_grad": "target", "predictor": "mlp", "batchnorm": "heads",
               "var": "hinge", "cov": "offdiag"}
    return [f"{t}={options[t] if on[t] else 'none'}" for t in TECHNIQUES]

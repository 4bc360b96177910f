"""The config tree and its checks (ablate.config, ablate/conf): the sweep definitions expand to exactly Table 4's 24
cells and the 64 switch combinations, the data presets, and bad values as one-line errors."""

import itertools

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ablate.config import TECHNIQUES, ConfigError, check_config, conf_dir, techniques
from ablate.errors import AblateError
from ablate.report import reference

# VICReg Table 4, typed from the paper: method, ME, SG, PR, BN
PAPER_ROWS = [("byol", 1, 1, 1, 1), ("simsiam", 0, 1, 1, 1), ("simsiam", 0, 1, 1, 0), ("simsiam", 0, 1, 0, 0),
              ("vicreg", 0, 0, 1, 0), ("vicreg", 0, 0, 1, 1), ("vicreg", 0, 0, 0, 1), ("vicreg", 0, 0, 0, 0)]
PAPER_REGS = [(0, 0), (1, 0), (1, 1)]  # No Reg, Var Reg, Var/Cov Reg


def expand(experiment: str, *args: str) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches for ``-m +experiment=EXPERIMENT ARGS``."""
    params = yaml.safe_load((conf_dir() / "experiment" / f"{experiment}.yaml").read_text())["hydra"]["sweeper"]
    overrides = [f"{k}={v}" for k, v in params["params"].items()] + list(args)
    (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
    return jobs


def compose_all(experiment: str, jobs: list[list[str]]):
    with initialize_config_module("ablate.conf", version_base="1.3"):
        return [compose("config", overrides=[f"+experiment={experiment}", *job]) for job in jobs]


def test_table4_sweep_is_the_papers_24_cells():
    jobs = expand("vicreg_table4")
    cfgs = compose_all("vicreg_table4", jobs)
    got = [(c.method.name, *(int(v) for v in techniques(c).values())) for c in cfgs]
    expected = [(m, me, sg, pr, bn, var, cov) for (m, me, sg, pr, bn), (var, cov) in
                itertools.product(PAPER_ROWS, PAPER_REGS)]
    assert len(jobs) == 24 and sorted(got) == sorted(expected)
    assert {c.train.epochs for c in cfgs} == {15} and {c.data.name for c in cfgs} == {"shapes"}
    # the reference file shipped for the report holds the same rows
    ref = reference()
    assert [(r.method, *(int(r[t]) for t in TECHNIQUES[:4])) for _, r in ref.iterrows()] == PAPER_ROWS


def test_factorial_sweep_is_all_64_combinations():
    jobs = expand("factorial")
    cfgs = compose_all("factorial", jobs)
    combos = [tuple(techniques(c)[t] for t in TECHNIQUES) for c in cfgs]
    assert len(jobs) == 64 and set(combos) == set(itertools.product([True, False], repeat=6))
    assert {c.method.name for c in cfgs} == {"simsiam"}
    # `t=none` composes to the all-on config with `t: null` and nothing else changed, so tests that need many
    # combinations compose once and null the switches they turn off (test_method, test_compile)
    full = OmegaConf.to_container(cfgs[combos.index((True,) * 6)])
    for c, combo in zip(cfgs, combos):
        assert OmegaConf.to_container(c) == {**full, **{t: None for t, on in zip(TECHNIQUES, combo) if not on}}


def test_seeds_are_a_sweep_dimension():
    jobs = expand("vicreg_table4", "seed=0,1,2")
    assert len(jobs) == 72
    assert sorted({j for job in jobs for j in job if j.startswith("seed=")}) == ["seed=0", "seed=1", "seed=2"]


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_module("ablate.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=vicreg_table4", "hydra/launcher=slurm"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 1 and launcher.array_parallelism >= 24


def test_cifar10_cpu_defaults_to_torchvision(cfg_factory, tmp_path):
    cfg = cfg_factory("+method=simsiam", "scale=cifar10_cpu", f"data.root={tmp_path / 'nowhere'}")
    assert cfg.data.name == "cifar10" and not cfg.data.download
    with pytest.raises(AblateError, match="does not exist and data.download=false"):
        check_config(cfg)


def test_cifar10_jpeg_reads_the_environment(cfg_factory, tmp_path, monkeypatch):
    monkeypatch.delenv("ABLATE_CIFAR10_NPZ", raising=False)
    with pytest.raises(AblateError, match=r"data.path is not set.*ABLATE_CIFAR10_NPZ"):
        check_config(cfg_factory("+method=simsiam", "scale=cifar10_cpu", "data=cifar10_jpeg"))
    npz = tmp_path / "c.npz"
    npz.write_bytes(b"")
    monkeypatch.setenv("ABLATE_CIFAR10_NPZ", str(npz))
    cfg = cfg_factory("+method=simsiam", "scale=cifar10_cpu", "data=cifar10_jpeg")
    assert cfg.data.name == "npz" and cfg.data.path == str(npz) and list(cfg.data.mean) == [0.4913, 0.4821, 0.4465]
    check_config(cfg)


def test_unknown_geometry_is_one_line(cfg_factory):
    cfg = cfg_factory("+method=simsiam")
    cfg.reg_geometry = "ball"
    with pytest.raises(ConfigError, match="reg_geometry=ball is unknown"):
        check_config(cfg)

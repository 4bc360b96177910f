"""scale=cifar10_cpu reads torchvision's CIFAR-10 unless data=cifar10_jpeg names an offline npz; neither
reaches outside the checkout by default."""

import pytest

from ablate.config import check_config
from ablate.errors import AblateError


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

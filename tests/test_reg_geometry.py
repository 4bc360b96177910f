"""Where var/cov act (reg_geometry): raw projector outputs or sqrt(d) * z / ||z||, on hand-worked numbers."""

import math

import pytest
import torch
from conftest import TINY

from ablate.config import ConfigError, check_config
from ablate.losses import covariance, on_sphere, reg_geometry, variance
from ablate.method import JointEmbedding

RAY_U = torch.tensor([0.6, 0.8])
RAY_C = torch.tensor([1.0, 3.0, 5.0, 7.0])  # unbiased var 20/3


def test_on_sphere_worked_numbers():
    z = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    expect = math.sqrt(2) * torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    assert torch.allclose(on_sphere(z), expect)


def test_isotropic_embedding_meets_gamma_on_the_sphere():
    z = torch.randn(20000, 64, generator=torch.Generator().manual_seed(0)) * 7.0  # any scale
    std = on_sphere(z).std(dim=0)
    assert std.mean().item() == pytest.approx(1.0, abs=0.02)


def test_ray_zeroes_the_raw_variance_but_not_the_sphere_one():
    """A ray z_i = c_i u: on raw outputs the spread of the norms meets gamma (hinge 0); on the sphere every
    embedding is the same point sqrt(2) u, so each dimension's std is sqrt(eps) and the hinge is 1 - 0.01."""
    z = RAY_C[:, None] * RAY_U
    assert variance(z).item() == 0.0
    assert variance(on_sphere(z)).item() == pytest.approx(0.99, abs=1e-6)
    # raw covariance of the ray: C = (20/3) u u^T, off-diagonal 3.2 twice: (3.2^2 + 3.2^2) / 2 = 10.24;
    # on the sphere every row is equal, so it vanishes
    assert covariance(z).item() == pytest.approx(10.24, rel=1e-5)
    assert covariance(on_sphere(z)).item() == pytest.approx(0.0, abs=1e-10)


def test_auto_follows_the_invariance():
    assert reg_geometry("auto", "neg_cosine") == "sphere"
    assert reg_geometry("auto", "normalized_mse") == "sphere"
    assert reg_geometry("auto", "mse") == "raw"
    assert reg_geometry("raw", "neg_cosine") == "raw" and reg_geometry("sphere", "mse") == "sphere"


def test_geometry_changes_the_regularizer_terms_and_nothing_else(cfg_factory):
    x1, x2 = torch.randn(16, 3, 32, 32), torch.randn(16, 3, 32, 32)
    terms = {}
    for g in ("raw", "sphere", "auto"):
        torch.manual_seed(0)
        m = JointEmbedding(cfg_factory("+method=simsiam", "var=hinge", "cov=offdiag", f"reg_geometry={g}", *TINY))
        terms[g] = m(x1, x2)[1]
    assert torch.equal(terms["raw"][1], terms["sphere"][1])  # invariance unchanged
    assert terms["raw"][2] != terms["sphere"][2] and terms["raw"][3] != terms["sphere"][3]
    assert torch.equal(terms["auto"], terms["sphere"])
    torch.manual_seed(0)
    vic_auto = JointEmbedding(cfg_factory("+method=vicreg", *TINY))(x1, x2)[1]
    torch.manual_seed(0)
    vic_raw = JointEmbedding(cfg_factory("+method=vicreg", "reg_geometry=raw", *TINY))(x1, x2)[1]
    assert torch.equal(vic_auto, vic_raw)


def test_unknown_geometry_is_one_line(cfg_factory):
    cfg = cfg_factory("+method=simsiam")
    cfg.reg_geometry = "ball"
    with pytest.raises(ConfigError, match="reg_geometry=ball is unknown"):
        check_config(cfg)

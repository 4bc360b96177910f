"""Each loss term against numbers worked out by hand from the formulas in paper-notes.md, and where var/cov act
(reg_geometry): raw projector outputs or sqrt(d) * z / ||z||."""

import math

import pytest
import torch

from ablate.losses import covariance, mse, neg_cosine, normalized_mse, on_sphere, reg_geometry, variance


def test_normalized_mse_is_two_minus_two_cos():
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    z = torch.tensor([[4.0, 3.0], [0.0, 2.0]])
    # cos = 24/25 and 0 -> 2 - 2 cos = 0.08 and 2 -> mean 1.04
    assert normalized_mse(p, z).item() == pytest.approx(1.04, abs=1e-6)


def test_neg_cosine():
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    z = torch.tensor([[4.0, 3.0], [-1.0, 0.0]])
    # cos = 0.96 and -1 -> -(0.96 - 1) / 2 = 0.02
    assert neg_cosine(p, z).item() == pytest.approx(0.02, abs=1e-6)


def test_mse_follows_official_code_dividing_by_n_times_d():
    p = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    z = torch.tensor([[1.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    # squared errors 0,4,0,1,1,1 -> sum 7 over n*d = 6 (the paper's s divides by n only: 3.5)
    assert mse(p, z).item() == pytest.approx(7 / 6)


def test_variance_hinge_on_std():
    # column 0: values 0, 2 -> unbiased var 2, std sqrt(2 + eps) > 1 -> hinge 0
    # column 1: values 0, 1 -> var 0.5, std sqrt(0.5 + 1e-4) -> hinge 1 - 0.70718
    z = torch.tensor([[0.0, 0.0], [2.0, 1.0]])
    expected = (0.0 + (1 - math.sqrt(0.5 + 1e-4))) / 2
    assert variance(z, gamma=1.0, eps=1e-4).item() == pytest.approx(expected, rel=1e-6)


def test_variance_of_constant_embedding_is_gamma_minus_sqrt_eps():
    z = torch.ones(8, 4)
    assert variance(z).item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6)


def test_ray_is_a_trivial_minimum_of_cosine_invariance_plus_variance():
    """Why SimSiam without BN collapses with the variance term alone (report note): embeddings on one ray,
    z_i = c_i * u with c_i > 0, are identical in direction, so -cos is at its minimum -1, while the spread of
    the norms c_i keeps every dimension's std above gamma. MSE (VICReg) sees the norms and is not at 0."""
    u = torch.tensor([0.6, 0.8])
    c = torch.tensor([1.0, 3.0, 5.0, 7.0])  # unbiased var of c = 20/3; stds 0.6 and 0.8 x 2.582 > 1
    z1 = c[:, None] * u
    z2 = c.flip(0)[:, None] * u             # the other view: same direction, other norms
    assert neg_cosine(z1, z2).item() == pytest.approx(-1.0, abs=1e-6)
    assert variance(z1).item() == 0.0 and variance(z2).item() == 0.0
    # (c1 - c2)^2 = 36, 4, 4, 36 times |u|^2 = 1, summed 80 over n * d = 8 -> 10
    assert mse(z1, z2).item() == pytest.approx(10.0)


def test_covariance_off_diagonal_over_d():
    # 3 samples, 2 dims; centred columns a = (-1, 0, 1), b = (-2, 0, 2): cov_ab = (2 + 0 + 2) / 2 = 2
    z = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]])
    # off-diagonal entries (2, 2): squares sum 8, over d = 2 -> 4
    assert covariance(z).item() == pytest.approx(4.0)


def test_covariance_of_decorrelated_embedding_is_zero():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert covariance(z).item() == pytest.approx(0.0, abs=1e-7)


def test_vicreg_total_matches_official_main_vicreg(cfg_factory):
    """The runner's VICReg loss equals main_vicreg.py's forward, re-typed here independently."""
    from ablate.method import JointEmbedding

    cfg = cfg_factory("+method=vicreg", "backbone.widths=[4,4,4,4]", "model.head_width_mult=0.005")
    model = JointEmbedding(cfg)
    x = torch.randn(12, 10)
    y = torch.randn(12, 10) * 2 + 1
    loss, terms = model.loss(x, y, x, y, x, y)
    n, d = x.shape
    repr_loss = ((x - y) ** 2).sum() / (n * d)
    xc, yc = x - x.mean(0), y - y.mean(0)
    std_x = torch.sqrt(xc.var(0) + 0.0001)
    std_y = torch.sqrt(yc.var(0) + 0.0001)
    std_loss = torch.relu(1 - std_x).mean() / 2 + torch.relu(1 - std_y).mean() / 2
    cov_x, cov_y = xc.T @ xc / (n - 1), yc.T @ yc / (n - 1)
    off = lambda c: c.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()  # noqa: E731 (official helper)
    cov_loss = off(cov_x).pow(2).sum() / d + off(cov_y).pow(2).sum() / d
    official = 25 * repr_loss + 25 * std_loss + 1 * cov_loss
    assert loss.item() == pytest.approx(official.item(), rel=1e-5)
    assert terms.tolist()[1:4] == pytest.approx([repr_loss.item(), std_loss.item(), cov_loss.item()], rel=1e-5)
    assert terms.tolist()[4:] == [0.0, 0.0]  # negatives and xcorr: off in VICReg's preset


def test_byol_and_simsiam_symmetrized(cfg_factory):
    from ablate.method import JointEmbedding

    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    p1, p2 = torch.randn(6, 5), torch.randn(6, 5)
    cos = torch.nn.functional.cosine_similarity
    simsiam = JointEmbedding(cfg_factory("+method=simsiam", "backbone.widths=[4,4,4,4]"))
    expected = 0.5 * -cos(p1, z2).mean() + 0.5 * -cos(p2, z1).mean()
    assert simsiam.loss(z1, z2, p1, p2, z1, z2)[0].item() == pytest.approx(expected.item(), rel=1e-5)
    byol = JointEmbedding(cfg_factory("+method=byol", "backbone.widths=[4,4,4,4]"))
    # BYOL: L + L~ (sum over the two directions), each 2 - 2 cos
    expected = (2 - 2 * cos(p1, z2)).mean() + (2 - 2 * cos(p2, z1)).mean()
    assert byol.loss(z1, z2, p1, p2, z1, z2)[0].item() == pytest.approx(expected.item(), rel=1e-5)


def test_var_cov_weights_for_byol_and_simsiam_are_the_papers(cfg_factory):
    cfg = cfg_factory("+method=simsiam", "var=hinge", "cov=offdiag")
    assert (cfg.var.weight, cfg.cov.weight) == (1.0, 0.01)
    cfg = cfg_factory("+method=vicreg")
    assert (cfg.method.inv_weight, cfg.var.weight, cfg.cov.weight) == (25.0, 25.0, 1.0)


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

"""The optimizers and the LR schedule (ablate.optim): warmup then cosine, LARS against the official formula, the
fused SGD against torch's per-tensor SGD."""


import pytest
import torch
from omegaconf import OmegaConf

from ablate.optim import LARS, build_optimizer, lr_at


def test_lr_warmup_then_cosine():
    assert lr_at(0, 100, 10, 1.0, 0.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0, 0.002) == pytest.approx(0.002)


def test_lars_step_matches_official_formula_and_skips_excluded():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS([dict(params=[w], exclude=False), dict(params=[b], exclude=True)], lr=0.1, weight_decay=0.1,
               momentum=0.9, eta=0.02)
    w.grad = torch.tensor([1.0, 0.0])
    b.grad = torch.tensor([2.0])
    opt.step()
    dp = torch.tensor([1.0, 0.0]) + 0.1 * torch.tensor([3.0, 4.0])  # grad + wd * w = (1.3, 0.4)
    q = 0.02 * 5 / dp.norm()
    assert w.detach().tolist() == pytest.approx((torch.tensor([3.0, 4.0]) - 0.1 * q * dp).tolist())
    assert b.item() == pytest.approx(1.0 - 0.1 * 2.0)  # plain momentum SGD, no wd, no adaptation


def test_sgd_is_fused_on_a_cpu_and_gives_the_bits_of_torch_per_tensor_sgd():
    torch.manual_seed(0)
    shapes = [(16, 3, 3, 3), (16,), (64, 32)]
    params = [[torch.randn(s, requires_grad=True) for s in shapes] for _ in range(2)]
    for p, q in zip(*params):
        q.data.copy_(p.data)
    cfg = OmegaConf.create(dict(name="sgd", momentum=0.9, weight_decay=1e-4))
    fused = build_optimizer([dict(params=params[0], weight_decay=1e-4)], cfg, lr=0.05)
    plain = torch.optim.SGD([dict(params=params[1], weight_decay=1e-4)], lr=0.05, momentum=0.9, foreach=False)
    assert fused.defaults["fused"]
    for _ in range(5):
        grads = [torch.randn(s) for s in shapes]
        for opt, ps in ((fused, params[0]), (plain, params[1])):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(*params))

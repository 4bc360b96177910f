import math

import pytest
import torch

from ablate.ema import cosine_tau, make_target, update_momentum
from ablate.optim import LARS, lr_at


def test_cosine_tau_schedule_values():
    # tau_k = 1 - (1 - 0.99) * (cos(pi k / K) + 1) / 2
    assert cosine_tau(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_tau(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_tau(100, 100, 0.99) == pytest.approx(1.0)
    assert cosine_tau(25, 100, 0.996) == pytest.approx(1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2)


def test_update_momentum_values():
    online = torch.nn.Linear(2, 1)
    target = make_target(online)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[1.0, 2.0]]))
        target.weight.copy_(torch.tensor([[3.0, -2.0]]))
    update_momentum(online, target, 0.9)
    # 0.9 * target + 0.1 * online
    assert target.weight.flatten().tolist() == pytest.approx([2.8, -1.6])
    assert not target.weight.requires_grad


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

"""The EMA target (ablate.ema): BYOL's cosine tau schedule and the momentum update on worked numbers."""

import math

import pytest
import torch

from ablate.ema import cosine_tau, make_target, update_momentum


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

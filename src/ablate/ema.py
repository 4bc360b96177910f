"""Momentum (EMA) target helpers: plain functions, as in lightly."""

import copy
import math

import torch
from torch import nn


def cosine_tau(step: int, total_steps: int, base_tau: float, final_tau: float = 1.0) -> float:
    """BYOL's schedule: tau_k = final - (final - base) * (cos(pi k / K) + 1) / 2 (BYOL section 3.2)."""
    progress = min(step / max(total_steps, 1), 1.0)
    return final_tau - (final_tau - base_tau) * (math.cos(math.pi * progress) + 1) / 2


def make_target(online: nn.Module) -> nn.Module:
    """A frozen copy: its parameters receive no gradient and move only through ``update_momentum``."""
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online for parameters; buffers (BN statistics) are copied."""
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    torch._foreach_lerp_(t_params, o_params, 1.0 - tau)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)

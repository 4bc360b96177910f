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
def update_momentum(online: nn.Module, target: nn.Module, tau: float | torch.Tensor) -> None:
    """target <- tau * target + (1 - tau) * online for parameters; buffers (BN statistics) are copied.
    ``tau`` is a float (one multi-tensor lerp) or a 0-d float64 device tensor, which a compiled update reads as
    an input (a float would be a constant, recompiled whenever it changes): a lerp per tensor that inductor
    fuses, with the same weight 1 - tau rounded once to the parameters' dtype."""
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if isinstance(tau, torch.Tensor):
        weight = (1.0 - tau).to(t_params[0].dtype)
        for t, o in zip(t_params, o_params):
            t.lerp_(o, weight)
    else:
        torch._foreach_lerp_(t_params, o_params, 1.0 - tau)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)

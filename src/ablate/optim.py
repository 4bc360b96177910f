"""SGD and LARS, with biases and norm parameters excluded from weight decay and LARS adaptation, and the
linear-warmup + cosine learning rate."""

import math

import torch


class LARS(torch.optim.Optimizer):
    """LARS as in the official VICReg ``main_vicreg.py`` (You et al. 2017): the update is scaled by
    eta * ||w|| / ||g + wd w|| per tensor; groups with ``exclude=True`` get neither weight decay nor the
    scaling. No host synchronisation: the trust ratio stays on the device."""

    def __init__(self, params, lr, weight_decay=0.0, momentum=0.9, eta=0.02):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta,
                                      exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        # one multi-tensor kernel per op over the group (torch._foreach_*) instead of a Python loop of small
        # kernels per tensor: the optimizer step was a visible share of a small model's step
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if g["exclude"]:
                dps = grads
            else:
                dps = torch._foreach_add(grads, params, alpha=g["weight_decay"])
                param_norm = torch.stack(torch._foreach_norm(params))
                update_norm = torch.stack(torch._foreach_norm(dps))
                one = torch.ones_like(param_norm)
                q = torch.where(param_norm > 0.0,
                                torch.where(update_norm > 0, g["eta"] * param_norm / update_norm, one), one)
                torch._foreach_mul_(dps, list(q.unbind(0)))
            mus = []
            for p in params:
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mus.append(state["mu"])
            torch._foreach_mul_(mus, g["momentum"])
            torch._foreach_add_(mus, dps)
            torch._foreach_add_(params, mus, alpha=-g["lr"])


def param_groups(modules: dict, optim_cfg) -> list[dict]:
    """One group per (module, excluded?) pair. ``modules`` maps a name to a module; the name 'predictor'
    gets ``fixed_lr`` when the config asks for SimSiam's fixed predictor learning rate."""
    groups = []
    for name, module in modules.items():
        if module is None:
            continue
        params = [p for p in module.parameters() if p.requires_grad]
        regular = [p for p in params if p.ndim > 1 or not optim_cfg.exclude_bias_norm]
        excluded = [p for p in params if p.ndim <= 1 and optim_cfg.exclude_bias_norm]
        fixed = name == "predictor" and optim_cfg.predictor_fixed_lr
        for ps, exclude in ((regular, False), (excluded, True)):
            if ps:
                groups.append(dict(params=ps, exclude=exclude, fixed_lr=fixed, name=name,
                                   weight_decay=0.0 if exclude else optim_cfg.weight_decay))
    return groups


OPTIMIZERS = ("sgd", "lars")


def build_optimizer(groups, optim_cfg, lr: float):
    if optim_cfg.name == "lars":
        return LARS(groups, lr=lr, weight_decay=optim_cfg.weight_decay, momentum=optim_cfg.momentum,
                    eta=optim_cfg.eta)
    if optim_cfg.name == "sgd":
        # torch's fused kernel: one pass over each tensor instead of four multi-tensor ops, the same bits on a CPU
        fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
        return torch.optim.SGD(groups, lr=lr, momentum=optim_cfg.momentum,
                               weight_decay=optim_cfg.weight_decay, fused=fused or None)
    raise ValueError(f"unknown optimizer '{optim_cfg.name}'; choose optim.name= one of: {', '.join(OPTIMIZERS)}")


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, final_frac: float) -> float:
    """Linear warmup from 0 to base_lr, then cosine from base_lr to final_frac * base_lr."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    cos = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return base_lr * (final_frac + (1 - final_frac) * cos)


def set_lr(optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        if not g.get("fixed_lr"):
            g["lr"] = lr

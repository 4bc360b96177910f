"""SGD and LARS, with biases and norm parameters excluded from weight decay and LARS adaptation, and the
linear-warmup + cosine learning rate."""

import math

import torch


class LARS(torch.optim.Optimizer):
    """LARS as in the official VICReg ``main_vicreg.py`` (You et al. 2017): the update is scaled by
    eta * ||w|| / ||g + wd w|| per tensor; groups with ``exclude=True`` get neither weight decay nor the
    scaling. No host synchronisation: the trust ratio and the learning rate (a device tensor per group, see
    ``build_optimizer``) stay on the device, and the step compiles into one graph."""

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
            lr = g["lr"]
            if isinstance(lr, torch.Tensor):  # p - lr mu: the same bits as add_'s alpha on a CPU, and no .item()
                torch._foreach_addcmul_(params, mus, [lr.expand_as(p) for p in params], value=-1.0)
            else:
                torch._foreach_add_(params, mus, alpha=-lr)


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


def build_optimizer(groups, optim_cfg, lr: float, compiled: bool = False):
    """The optimizer over ``groups``, each group's learning rate a 0-d tensor on its parameters' device
    (``set_lr`` fills it in place): a schedule that changes it every step then neither recompiles a compiled
    step nor rules out CUDA graphs. ``compiled``: the step will run under torch.compile, which cannot trace
    torch's fused SGD kernel (torch.compiler.disable'd), so SGD takes its multi-tensor form there."""
    groups = [dict(g, lr=lr) for g in groups]
    if optim_cfg.name == "lars":
        opt = LARS(groups, lr=lr, weight_decay=optim_cfg.weight_decay, momentum=optim_cfg.momentum,
                   eta=optim_cfg.eta)
    elif optim_cfg.name == "sgd":
        # torch's fused kernel: one pass over each tensor instead of four multi-tensor ops, the same bits on a CPU
        fused = not compiled and all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
        opt = torch.optim.SGD(groups, lr=lr, momentum=optim_cfg.momentum, weight_decay=optim_cfg.weight_decay,
                              fused=fused or None, foreach=None if fused else True)
    else:
        raise ValueError(f"unknown optimizer '{optim_cfg.name}'; choose optim.name= one of: {', '.join(OPTIMIZERS)}")
    device_lrs(opt)
    opt.register_load_state_dict_post_hook(device_lrs)  # a checkpoint holds floats (older runs) or CPU tensors
    return opt


def device_lrs(optimizer, *_) -> None:
    """Each group's learning rate as a float32 0-d tensor of its own on its parameters' device (a fixed-lr
    group keeps its value while ``set_lr`` fills the others)."""
    for g in optimizer.param_groups:
        device = g["params"][0].device if g["params"] else "cpu"
        g["lr"] = torch.tensor(float(g["lr"]), dtype=torch.float32, device=device)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, final_frac: float) -> float:
    """Linear warmup from 0 to base_lr, then cosine from base_lr to final_frac * base_lr."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    cos = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return base_lr * (final_frac + (1 - final_frac) * cos)


def set_lr(optimizer, lr: float) -> None:
    """Write ``lr`` into every scheduled group's device tensor: a fill from a host float, no host read."""
    for g in optimizer.param_groups:
        if not g.get("fixed_lr"):
            g["lr"].fill_(lr)

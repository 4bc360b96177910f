"""The method: every switch of the ablation acts in this file (cf. VICReg's main_vicreg.py).

    z = projector(backbone(x))                       online branch, both views   [batchnorm: in the heads]
    p = predictor(z)              [predictor]        else p = z
    t = target(x) [ema] else z;   t = sg(t) [stop_grad]
    loss = w_inv * (D(p1, t2) + D(p2, t1)) / 2
         + w_var * (v(g(z1)) + v(g(z2))) / 2     [var]     (main_vicreg.py averages the branches)
         + w_cov * (c(g(z1)) + c(g(z2)))         [cov]
         + w_neg * u(z1, z2)                      [negatives]  NT-Xent's log-sum-exp over the 2n embeddings
         + w_xc * lambd * x(g(z1), g(z2))         [xcorr]      Barlow Twins' sum_{i != j} C_ij^2
    g = identity [reg_geometry=raw] or z -> sqrt(d) z/|z| [sphere]; auto: sphere for cosine invariances
    D is one of losses.INVARIANCE, NT-Xent's alignment and Barlow Twins' diagonal included; under torchrun
    every batch statistic (var, cov, negatives, the cross-correlation) is taken over the all-gathered batch
    after each optimizer step: target <- tau target + (1 - tau) online     [ema]
"""

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from .collective import gather
from .config import techniques
from .ema import cosine_tau, make_target, update_momentum
from .losses import (
    GLOBAL_BATCH,
    INVARIANCE,
    INVARIANCE_PARAMS,
    REG_GEOMETRIES,
    STANDARDIZED,
    covariance,
    ntxent_uniformity,
    reg_geometry,
    scale_free,
    variance,
    xcorr_offdiagonal,
)
from .models import build_encoder, build_predictor
from .stages import stage

TERMS = ("loss", "loss_inv", "loss_var", "loss_cov", "loss_neg", "loss_xcorr")


class JointEmbedding(nn.Module):
    """Online encoder, optional predictor, optional EMA target; ``forward`` returns the loss terms."""

    def __init__(self, cfg: DictConfig):
        super().__init__()
        on = techniques(cfg)
        mult = cfg.model.head_width_mult
        self.online = build_encoder(cfg.backbone, cfg.method, cfg.get("batchnorm"), mult)
        dim = self.online.dim
        self.predictor = build_predictor(cfg.predictor, cfg.get("batchnorm"), dim, mult) if on["predictor"] else None
        self.target = make_target(self.online) if on["ema"] else None
        # plain floats, not OmegaConf nodes: a compiled loss reads them as constants (a node's attribute access
        # is Python code that breaks the graph)
        self.ema = _floats(cfg.ema, "base_tau", "final_tau") if on["ema"] else None
        self.stop_grad = on["stop_grad"]
        self.invariance_name = cfg.method.invariance
        self.invariance = INVARIANCE[self.invariance_name]
        self.inv_params = {k: float(cfg.method[k]) for k in INVARIANCE_PARAMS.get(self.invariance_name, ())}
        self.inv_global = self.invariance_name in GLOBAL_BATCH
        self.scale_free = scale_free(self.invariance_name)  # the verdict reads collapse from the spread then
        self.standardized = self.invariance_name in STANDARDIZED  # ... or from the standardized z (Barlow)
        self.w_inv = float(cfg.method.inv_weight)
        self.var = _floats(cfg.var, "weight", "gamma", "eps") if on["var"] else None
        self.cov = _floats(cfg.cov, "weight") if on["cov"] else None
        self.geometry = reg_geometry(cfg.reg_geometry, cfg.method.invariance)
        neg, xc = cfg.get("negatives"), cfg.get("xcorr")  # plain floats: no OmegaConf lookup in the step
        self.neg = (float(neg.weight), float(neg.temperature)) if neg is not None else None
        self.xcorr = (float(xc.weight), float(xc.lambd)) if xc is not None else None
        off = {"loss_neg": self.neg is None, "loss_xcorr": self.xcorr is None}
        self.terms = tuple(t for t in TERMS if not off.get(t))  # the terms logged: none of a switch that is off
        self.dim = dim

    def trained_modules(self) -> dict:
        """What the optimizer updates, by name (the EMA target is not trained)."""
        return {"online": self.online, "predictor": self.predictor}

    def view(self, x):
        """One view's online embedding z, prediction p (z without a predictor) and target t (z without an EMA
        target), before stop-gradient. Views share no state but batch norm's running statistics."""
        _, z = self.online(x)
        with stage("heads"):
            p = self.predictor(z) if self.predictor is not None else z
        if self.target is None:
            return z, p, z
        with torch.no_grad(), stage("target"):  # the EMA copy never receives gradient, stop_grad or not
            return z, p, self.target(x)[1]

    def branches(self, x1, x2):
        """Online embeddings z, predictions p and targets t of both views, stop-gradient applied."""
        return self.stop_gradient(self.view(x1), self.view(x2))

    def stop_gradient(self, out1, out2):
        """Both views' ``view`` outputs (z, p, t) as the loss takes them, z1, z2, p1, p2, t1, t2, with t = sg(t)
        [stop_grad]."""
        (z1, p1, t1), (z2, p2, t2) = out1, out2
        if self.stop_grad:
            t1, t2 = t1.detach(), t2.detach()
        return z1, z2, p1, p2, t1, t2

    def loss_of_views(self, out1, out2):
        """The loss of both views' ``view`` outputs, stop-gradient applied: ``forward`` in one graph, and the
        split step (ablate.run.step), which computes each view's (z, p, t) on a worker of its own."""
        return self.loss(*self.stop_gradient(out1, out2))

    def loss(self, z1, z2, p1, p2, t1, t2):
        """Weighted sum of the switched-on terms, computed in fp32 (autocast off: it would run the covariance's
        matmul in bf16); also returns the terms before their weights (xcorr with its lambd, as Barlow writes it)."""
        with torch.autocast(z1.device.type, enabled=False), stage("loss"):
            return self._loss(*(t.float() for t in (z1, z2, p1, p2, t1, t2)))

    def _loss(self, z1, z2, p1, p2, t1, t2):
        if self.inv_global:  # Barlow's diagonal: C summed over ranks (main.py all_reduce) = C of the global batch
            p1, p2, t1, t2 = gather(p1), gather(p2), gather(t1), gather(t2)
        inv = 0.5 * (self.invariance(p1, t2, **self.inv_params) + self.invariance(p2, t1, **self.inv_params))
        loss = self.w_inv * inv
        var = cov = neg = xcorr = torch.zeros((), device=inv.device)
        if self.neg is not None:  # every other image of the global batch is a negative (gathered with gradients)
            neg = ntxent_uniformity(gather(z1), gather(z2), self.neg[1])
            loss = loss + self.neg[0] * neg
        if self.var is not None or self.cov is not None or self.xcorr is not None:  # global-batch statistics
            g = REG_GEOMETRIES[self.geometry]
            z1, z2 = gather(g(z1)), gather(g(z2))
        if self.xcorr is not None:
            xcorr = self.xcorr[1] * xcorr_offdiagonal(z1, z2)
            loss = loss + self.xcorr[0] * xcorr
        if self.var is not None:
            var = 0.5 * (variance(z1, self.var.gamma, self.var.eps) + variance(z2, self.var.gamma, self.var.eps))
            loss = loss + self.var.weight * var
        if self.cov is not None:
            cov = covariance(z1) + covariance(z2)
            loss = loss + self.cov.weight * cov
        return loss, torch.stack([t.detach() for t in (loss, inv, var, cov, neg, xcorr)])

    def forward(self, x1, x2):
        return self.loss_of_views(self.view(x1), self.view(x2))

    def target_tau(self, step: int, total_steps: int) -> float | None:
        """The EMA momentum at ``step`` on BYOL's cosine schedule (None: no target)."""
        if self.target is None:
            return None
        return cosine_tau(step, total_steps, self.ema.base_tau, self.ema.final_tau)

    def momentum_update(self, tau: float | None, tau_t: torch.Tensor | None = None, update=update_momentum) -> None:
        """target <- tau target + (1 - tau) online [ema]; nothing without a target. A compiled step passes
        ``tau_t`` (filled with tau) and ``update``, the compiled ``update_momentum``."""
        if self.target is None:
            return
        with stage("ema"):
            if tau_t is None:
                update_momentum(self.online, self.target, tau)
            else:
                update(self.online, self.target, tau_t.fill_(tau))

    def update_target(self, step: int, total_steps: int, tau_t: torch.Tensor | None = None,
                      update=update_momentum) -> float | None:
        """The EMA step after an optimizer step, tau on BYOL's cosine schedule; returns tau (None: no target).
        A compiled step passes ``tau_t``, a 0-d device tensor that receives tau and that ``update`` (the compiled
        ``update_momentum``) reads, so the update sees the same input at every step."""
        tau = self.target_tau(step, total_steps)
        self.momentum_update(tau, tau_t, update)
        return tau


def _floats(node, *keys) -> SimpleNamespace:
    """The named fields of a config node as plain floats."""
    return SimpleNamespace(**{k: float(node[k]) for k in keys})


class Baseline(nn.Module):
    """A reference run (``method.baseline``) that places the SSL cells on a scale: ``random`` is the online
    encoder at initialization (never stepped), ``supervised`` the same encoder trained with cross-entropy by a
    linear classifier on the backbone features h, averaged over the two augmented views the SSL runs see. The
    encoder is built first, as JointEmbedding builds it, so a seed gives the SSL runs' initial backbone; the
    projector only feeds the z diagnostics and is never trained."""

    def __init__(self, cfg: DictConfig, num_classes: int):
        super().__init__()
        self.kind = cfg.method.baseline
        self.online = build_encoder(cfg.backbone, cfg.method, cfg.get("batchnorm"), cfg.model.head_width_mult)
        self.dim = self.online.dim
        supervised = self.kind == "supervised"
        self.classifier = nn.Linear(self.online.backbone.out_dim, num_classes) if supervised else None
        self.predictor = self.target = self.geometry = None
        self.terms = TERMS[:4]
        self.invariance_name = self.scale_free = None  # no SSL loss
        self.standardized = False

    def trained_modules(self) -> dict:
        """The backbone and the classifier (``random`` builds an optimizer for the same code path, never steps)."""
        return {"backbone": self.online.backbone, "classifier": self.classifier}

    def forward(self, x1, x2, y):
        """Cross-entropy of both views' logits against the labels, averaged; the loss terms as TERMS orders
        them (no other term: zeros)."""
        ce = 0.5 * sum(F.cross_entropy(self.classifier(self.online.backbone(x)).float(), y) for x in (x1, x2))
        zero = torch.zeros((), device=ce.device)
        return ce, torch.stack([ce.detach(), *[zero] * (len(TERMS) - 1)])

    def update_target(self, step: int, total_steps: int, *_, **__) -> None:
        return None


def equivalences(cfg) -> list[str]:
    """Switch settings that compute the same thing as another setting (logged, and kept in summary.json)."""
    on = techniques(cfg)
    notes = []
    if on["ema"] and not on["stop_grad"]:
        notes.append("ema without stop_grad is the same computation as ema with stop_grad: the EMA target copy "
                     "receives no gradient (it moves only by the momentum update)")
    return notes

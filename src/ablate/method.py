"""The method: every switch of the ablation acts in this file (cf. VICReg's main_vicreg.py).

    z = projector(backbone(x))                       online branch, both views   [batchnorm: in the heads]
    p = predictor(z)              [predictor]        else p = z
    t = target(x) [ema] else z;   t = sg(t) [stop_grad]
    loss = w_inv * (D(p1, t2) + D(p2, t1)) / 2
         + w_var * (v(g(z1)) + v(g(z2))) / 2     [var]     (main_vicreg.py averages the branches)
         + w_cov * (c(g(z1)) + c(g(z2)))         [cov]
    g = identity [reg_geometry=raw] or z -> sqrt(d) z/|z| [sphere]; auto: sphere for cosine invariances
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
from .losses import INVARIANCE, REG_GEOMETRIES, covariance, reg_geometry, variance
from .models import build_encoder, build_predictor
from .stages import stage

TERMS = ("loss", "loss_inv", "loss_var", "loss_cov")


class JointEmbedding(nn.Module):
    """Online encoder, optional predictor, optional EMA target; ``forward`` returns the loss terms."""

    def __init__(self, cfg: DictConfig):
        super().__init__()
        on = techniques(cfg)
        mult = cfg.model.head_width_mult
        self.online = build_encoder(cfg.backbone, cfg.method, cfg.get("batchnorm"), mult)
        dim = [m for m in self.online.projector if isinstance(m, nn.Linear)][-1].out_features
        self.predictor = build_predictor(cfg.predictor, cfg.get("batchnorm"), dim, mult) if on["predictor"] else None
        self.target = make_target(self.online) if on["ema"] else None
        # plain floats, not OmegaConf nodes: a compiled loss reads them as constants (a node's attribute access
        # is Python code that breaks the graph)
        self.ema = _floats(cfg.ema, "base_tau", "final_tau") if on["ema"] else None
        self.stop_grad = on["stop_grad"]
        self.invariance = INVARIANCE[cfg.method.invariance]
        self.w_inv = float(cfg.method.inv_weight)
        self.var = _floats(cfg.var, "weight", "gamma", "eps") if on["var"] else None
        self.cov = _floats(cfg.cov, "weight") if on["cov"] else None
        self.geometry = reg_geometry(cfg.reg_geometry, cfg.method.invariance)
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
        (z1, p1, t1), (z2, p2, t2) = self.view(x1), self.view(x2)
        if self.stop_grad:
            t1, t2 = t1.detach(), t2.detach()
        return z1, z2, p1, p2, t1, t2

    def loss(self, z1, z2, p1, p2, t1, t2):
        """Weighted sum of the switched-on terms, computed in fp32 (autocast off: it would run the covariance's
        matmul in bf16); also returns the unweighted terms."""
        with torch.autocast(z1.device.type, enabled=False), stage("loss"):
            return self._loss(*(t.float() for t in (z1, z2, p1, p2, t1, t2)))

    def _loss(self, z1, z2, p1, p2, t1, t2):
        inv = 0.5 * (self.invariance(p1, t2) + self.invariance(p2, t1))
        loss = self.w_inv * inv
        var = cov = torch.zeros((), device=inv.device)
        if self.var is not None or self.cov is not None:  # statistics of the global batch under torchrun
            g = REG_GEOMETRIES[self.geometry]
            z1, z2 = gather(g(z1)), gather(g(z2))
        if self.var is not None:
            var = 0.5 * (variance(z1, self.var.gamma, self.var.eps) + variance(z2, self.var.gamma, self.var.eps))
            loss = loss + self.var.weight * var
        if self.cov is not None:
            cov = covariance(z1) + covariance(z2)
            loss = loss + self.cov.weight * cov
        return loss, torch.stack([loss.detach(), inv.detach(), var.detach(), cov.detach()])

    def forward(self, x1, x2):
        return self.loss(*self.branches(x1, x2))

    def update_target(self, step: int, total_steps: int, tau_t: torch.Tensor | None = None,
                      update=update_momentum) -> float | None:
        """The EMA step after an optimizer step, tau on BYOL's cosine schedule; returns tau (None: no target).
        A compiled step passes ``tau_t``, a 0-d device tensor that receives tau and that ``update`` (the compiled
        ``update_momentum``) reads, so the update sees the same input at every step."""
        if self.target is None:
            return None
        tau = cosine_tau(step, total_steps, self.ema.base_tau, self.ema.final_tau)
        with stage("ema"):
            if tau_t is None:
                update_momentum(self.online, self.target, tau)
            else:
                update(self.online, self.target, tau_t.fill_(tau))
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
        self.dim = [m for m in self.online.projector if isinstance(m, nn.Linear)][-1].out_features
        supervised = self.kind == "supervised"
        self.classifier = nn.Linear(self.online.backbone.out_dim, num_classes) if supervised else None
        self.predictor = self.target = self.geometry = None

    def trained_modules(self) -> dict:
        """The backbone and the classifier (``random`` builds an optimizer for the same code path, never steps)."""
        return {"backbone": self.online.backbone, "classifier": self.classifier}

    def forward(self, x1, x2, y):
        """Cross-entropy of both views' logits against the labels, averaged; the loss terms as TERMS orders
        them (no invariance, variance or covariance: zeros)."""
        ce = 0.5 * sum(F.cross_entropy(self.classifier(self.online.backbone(x)).float(), y) for x in (x1, x2))
        zero = torch.zeros((), device=ce.device)
        return ce, torch.stack([ce.detach(), zero, zero, zero])

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

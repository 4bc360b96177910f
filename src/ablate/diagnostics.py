"""Collapse diagnostics and evaluation protocols (definitions in docs/formulas.md, verdict in docs/diagnostics.md).

Public API, usable on embeddings from any training loop (tensors [n, d]):

- ``embedding_std(z)``: std of l2-normalized embeddings (SimSiam's monitor); about 1/sqrt(d) when isotropic.
- ``embedding_scale(z)``: raw spread sqrt(mean_j Var z_j); sees a collapse onto the origin.
- ``standardized_std(z)``: std of z as Barlow Twins' BatchNorm1d(affine=False) outputs it; 1 unless a
  dimension's variance falls below BN's eps. ``rankme(standardize(z))`` is the rank of its correlation matrix.
- ``rankme(z)``: RankMe effective rank (Garrido et al. 2023).
- ``spectrum(z)``: sorted eigenvalues of the embedding covariance.
- ``verdict(metrics, d, n, thresholds, scale_free, standardized)``: ``ok``, ``dimensional_collapse``, ``collapse`` or
  ``diverged``, with the reason.
- ``CollapseMonitor``: accumulates the newest embeddings batch by batch and reports all of the above.
"""

import math
from collections import deque
from importlib import resources

import torch
import torch.nn.functional as F

from .losses import standardize

__all__ = ["CollapseMonitor", "embedding_scale", "embedding_std", "rankme", "spectrum", "standardized_std", "verdict"]

KNN_PROTOCOL = ("kNN top-1 on the held-out set: k={k}, cosine similarity of frozen backbone features "
                "(eval view, no augmentation), votes weighted by exp(sim/{t}) (InstDisc / solo-learn), "
                "bank = {bank} training images")
LINEAR_PROTOCOL = ("linear probe top-1 on the held-out set: frozen backbone features of all {n} training "
                   "images (eval view, no augmentation), standardized, one linear layer trained with SGD "
                   "(momentum 0.9, lr {lr} cosine, batch {bs}, wd {wd}) for {epochs} epochs")


def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """SimSiam's monitor: std over the batch of each channel of z/||z||, averaged over channels.
    0 under complete collapse, about 1/sqrt(d) for an isotropic embedding."""
    return F.normalize(z.float(), dim=1).std(dim=0).mean()


def embedding_scale(z: torch.Tensor) -> torch.Tensor:
    """Spread of the raw embeddings: sqrt(mean_j Var(z_j)), the root mean square over dimensions of VICReg's
    S(z_j) (paper eq. 1, 1/(n-1) variance, no eps). 0 when every image maps to one vector, whichever vector;
    unlike ``embedding_std`` it also sees embeddings shrinking onto the origin, where normalizing them
    would blow their residual noise back up to unit length."""
    return z.float().var(dim=0).mean().sqrt()


def standardized_std(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Std over the batch of each dimension of z as Barlow Twins' loss sees it, BatchNorm1d(affine=False)'s
    output (losses.standardize), averaged over dimensions: sqrt(Var z_j / (Var z_j + eps)) with the biased
    variance. 1 for any spread well above BN's eps, whatever its size; 0 as it falls below eps, where the
    standardization zeroes the dimension and the cross-correlation C (so the loss's signal) vanishes."""
    var = z.double().var(dim=0, unbiased=False)
    return (var / (var + eps)).sqrt().mean().float()


def standardized_metrics(z: torch.Tensor) -> dict:
    """``z_bn_std`` and ``rank_z_bn``: the spread and RankMe of z standardized as Barlow Twins' loss sees it."""
    return {"z_bn_std": float(standardized_std(z)), "rank_z_bn": float(rankme(standardize(z.double())))}


def singular_values(z: torch.Tensor) -> torch.Tensor:
    """Singular values of ``z`` in float64, descending, from the smaller Gram matrix's eigenvalues (clamped at
    0: rounding can leave a null direction's slightly negative). Equal to ``torch.linalg.svdvals`` to about
    1e-8 of the largest; the smallest lose relative precision, which RankMe's eps of 1e-7 hides."""
    z = z.double()
    gram = z.T @ z if z.shape[0] >= z.shape[1] else z @ z.T
    return torch.linalg.eigvalsh(gram).flip(0).clamp_min(0).sqrt()


def rankme(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalized singular values (+eps), on the
    embedding matrix without centering (Roy & Vetterli's effective rank). The singular values are the square
    roots of the eigenvalues of the smaller Gram matrix (Z^T Z or Z Z^T, float64): an eigendecomposition of a
    d x d matrix instead of an SVD of the n x d one (10000 x 2048 at GPU scale, each epoch)."""
    s = singular_values(z)
    p = s / s.sum() + eps
    return torch.exp(-(p * torch.log(p)).sum()).float()


def spectrum(z: torch.Tensor) -> torch.Tensor:
    """Sorted eigenvalues (= singular values) of the embedding covariance matrix (Jing et al. 2022)."""
    z = z.double() - z.double().mean(dim=0)
    cov = z.T @ z / max(len(z) - 1, 1)
    return torch.linalg.eigvalsh(cov).flip(0).clamp_min(0).float()


def view_agreement(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Share of the embeddings' spread that the two views of each image hold in common:
    2 tr Cov(z1, z2) / (tr Cov(z1) + tr Cov(z2)), Lin's concordance coefficient without its location term,
    summed over dimensions. 1 when both views of every image land on one vector, about 0 when the spread is
    augmentation noise: an embedding can meet the variance hinge with spread no invariance term ties to the
    image (a cosine loss is blind to how far along a ray each view lies)."""
    a, b = z1.double() - z1.double().mean(0), z2.double() - z2.double().mean(0)
    return (2 * (a * b).sum() / ((a * a).sum() + (b * b).sum())).float()


def class_share(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Share of the embeddings' spread explained by the class means: between-class over total sum of squares
    (eta squared), 0 for spread unrelated to the labels, 1 when each class maps to one vector."""
    z = z.double()
    k = int(y.max()) + 1
    means = torch.zeros(k, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, y, z)
    means /= torch.bincount(y, minlength=k).clamp_min(1).unsqueeze(1)
    centre = z.mean(0)
    return ((means[y] - centre).pow(2).sum() / (z - centre).pow(2).sum()).float()


def cone(z: torch.Tensor) -> dict:
    """Where the embeddings lie relative to the origin (Zhang et al. 2022 split them into centre and residual):
    ``mean_to_spread`` ||mean|| / sqrt(tr Cov), ``min_cos_to_mean`` the smallest cosine of an embedding to the
    mean direction (near 1: all of them within a narrow cone around it, a ray when the spread is along it),
    ``top_share`` the top principal direction's share of the variance (1 for a line) and ``top_cos_to_mean``
    its |cosine| to the mean direction, plus ``top_dir`` itself."""
    z = z.double()
    centre = z.mean(0)
    dev = z - centre
    _, s, vh = torch.linalg.svd(dev, full_matrices=False)
    top = vh[0]
    return {"mean_to_spread": float(centre.norm() / dev.pow(2).sum(1).mean().sqrt()),
            "min_cos_to_mean": float(F.cosine_similarity(z, centre.expand_as(z), dim=1).min()),
            "top_share": float(s[0] ** 2 / s.pow(2).sum()),
            "top_cos_to_mean": float((top @ centre).abs() / centre.norm()),
            "top_dir": top}


@torch.no_grad()
def knn_top1(bank, bank_y, query, query_y, num_classes: int, k: int = 200, t: float = 0.1,
             chunk: int = 1024) -> torch.Tensor:
    """Weighted kNN classifier accuracy (fraction in [0, 1]), as a device scalar."""
    bank = F.normalize(bank.float(), dim=1)
    query = F.normalize(query.float(), dim=1)
    k = min(k, len(bank))
    correct = torch.zeros((), device=query.device)
    for i in range(0, len(query), chunk):
        sim, idx = (query[i:i + chunk] @ bank.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes, device=query.device)
        # exp((sim - max) / t): each query's weights scaled by one factor, so the same vote, without the
        # overflow of exp(sim / t) at small t (1 / 0.01 = 100 exceeds float32's exp range at sim = 1)
        votes.scatter_add_(1, bank_y[idx], ((sim - sim[:, :1]) / t).exp())
        correct += (votes.argmax(1) == query_y[i:i + chunk]).sum()
    return correct / len(query)


def linear_probe(train_h, train_y, test_h, test_y, num_classes: int, epochs: int = 100, batch_size: int = 256,
                 lr: float = 0.1, weight_decay: float = 0.0, seed: int = 0) -> float:
    """Top-1 (fraction) of a linear classifier trained on frozen, standardized features."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    mean, std = train_h.mean(0), train_h.std(0) + 1e-6
    train_h, test_h = (train_h - mean) / std, (test_h - mean) / std
    head = torch.nn.Linear(train_h.shape[1], num_classes).to(train_h.device)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = max(len(train_h) // batch_size, 1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(train_h), generator=gen).to(train_h.device)
            for s in range(steps_per_epoch):
                idx = order[s * batch_size:(s + 1) * batch_size]
                loss = F.cross_entropy(head(train_h[idx]), train_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    with torch.no_grad():
        return (head(test_h).argmax(1) == test_y).float().mean().item()


def verdict(metrics: dict, d: int, n: int, thresholds, scale_free: bool = True,
            standardized: bool = False) -> tuple[str, str]:
    """Label-free verdict from the final diagnostics; thresholds are the config's ``verdict`` node.

    ``collapse``: every image mapped to nearly one vector, read in the geometry the invariance compares: the
    std of l2-normalized embeddings for the cosine losses (``scale_free``: BYOL, SimSiam, SimCLR's NT-Xent), the
    raw spread against its value at initialization for VICReg's MSE (else the normalized std).
    ``dimensional_collapse``: RankMe(z) below a share of min(d, n). Why each test: docs/diagnostics.md.
    ``standardized`` (Barlow Twins, whose loss sees z only through a per-dimension standardization and so is
    blind to each dimension's mean and scale: a healthy embedding may sit far from the origin, which fools the
    normalized std, or shrink under weight decay, which fools the raw spread): collapse is ``z_bn_std`` (the
    spread the standardization leaves, ``standardized_std``) below ``collapse_std_ratio``, and the rank is
    ``rank_z_bn``, RankMe of the standardized z (the correlation matrix the loss decorrelates).
    """
    return read_verdict(metrics, d, n, thresholds, scale_free, standardized)[:2]


def read_verdict(metrics: dict, d: int, n: int, thresholds, scale_free: bool = True,
                 standardized: bool = False) -> tuple[str, str, str | None]:
    """``verdict``'s label and reason, and the metric that decided a collapse or dimensional_collapse (None for
    ok and diverged): the criterion ``settled`` watches."""
    loss = metrics.get("loss")
    if loss is not None and not math.isfinite(loss):
        return "diverged", f"non-finite loss ({loss})", None
    if standardized:
        return _standardized_verdict(metrics, d, n, thresholds)
    std_ratio = metrics["z_std"] / metrics["z_std_ref"]
    shrink = thresholds.get("collapse_scale_ratio")
    raw = not scale_free and shrink is not None and metrics.get("z_scale") is not None and metrics.get("z_scale_init")
    if raw:
        scale_ratio = metrics["z_scale"] / metrics["z_scale_init"]
        if not math.isfinite(scale_ratio) or scale_ratio < shrink:
            return "collapse", f"z_scale/z_scale_init = {scale_ratio:.3g} < {shrink}", "z_scale"
    elif not math.isfinite(std_ratio) or std_ratio < thresholds.collapse_std_ratio:
        return "collapse", f"z_std/z_std_ref = {std_ratio:.3g} < {thresholds.collapse_std_ratio}", "z_std"
    line = thresholds.get("collapse_rank")
    if line is not None and metrics["rank_z"] < line:
        return "collapse", f"rank_z = {metrics['rank_z']:.3g} < {line}", "rank_z"
    dim_limit = thresholds.dim_collapse_rank_frac * min(d, n)
    if metrics["rank_z"] < dim_limit:
        return "dimensional_collapse", f"rank_z = {metrics['rank_z']:.3g} < {dim_limit:.3g}", "rank_z"
    return "ok", (f"z_std/z_std_ref = {std_ratio:.3g}, rank_z = {metrics['rank_z']:.3g} "
                  f"(of d = {d})"), None


# A collapse verdict is unsettled when the metric that decided it rose by more than this share over the last
# evaluation (docs/diagnostics.md, "A verdict still moving").
UNSETTLED_RISE = 0.1


def settled(metrics: dict, before: dict | None, d: int, n: int, thresholds, scale_free: bool = True,
            rise: float = UNSETTLED_RISE, standardized: bool = False) -> tuple[bool | None, str]:
    """Whether the verdict on ``metrics`` (the last evaluation) has settled, and why: a ``collapse`` or
    ``dimensional_collapse`` whose deciding metric (z_std, z_scale or rank_z) rose by more than ``rise``
    (relative) from ``before`` (the evaluation before the last, or the initialization's) is still moving out of
    the state it names. ok and diverged are settled; None when there is nothing to compare with."""
    label, _, key = read_verdict(metrics, d, n, thresholds, scale_free, standardized)
    if key is None:
        return True, f"{label}: no collapse criterion met" if label == "ok" else f"{label}: final"
    old, new = (before or {}).get(key), metrics.get(key)
    if old is None or new is None or not (math.isfinite(old) and math.isfinite(new)) or old <= 0:
        return None, f"{label} read from {key}, with no earlier {key} to compare"
    change = new / old - 1
    moved = f"{key} {old:.3g} -> {new:.3g} ({change:+.0%}) over the last evaluation"
    if change > rise:
        return False, f"{label} read from {key}, but {moved}, more than +{rise:.0%}: train longer to settle it"
    return True, f"{moved}, at most +{rise:.0%}"


def _standardized_verdict(metrics: dict, d: int, n: int, thresholds) -> tuple[str, str, str | None]:
    """``verdict`` in Barlow Twins' geometry: the spread and rank of the standardized embeddings."""
    spread, rank = metrics["z_bn_std"], metrics["rank_z_bn"]
    if not math.isfinite(spread) or spread < thresholds.collapse_std_ratio:
        return "collapse", f"z_bn_std = {spread:.3g} < {thresholds.collapse_std_ratio}", "z_bn_std"
    line = thresholds.get("collapse_rank")
    if line is not None and rank < line:
        return "collapse", f"rank_z_bn = {rank:.3g} < {line}", "rank_z_bn"
    dim_limit = thresholds.dim_collapse_rank_frac * min(d, n)
    if rank < dim_limit:
        return "dimensional_collapse", f"rank_z_bn = {rank:.3g} < {dim_limit:.3g}", "rank_z_bn"
    return "ok", f"z_bn_std = {spread:.3g}, rank_z_bn = {rank:.3g} (of d = {d})", None


def default_thresholds():
    """The verdict thresholds of the packaged config (``verdict`` node of conf/config.yaml)."""
    from omegaconf import OmegaConf

    return OmegaConf.load(str(resources.files("ablate") / "conf" / "config.yaml")).verdict


class CollapseMonitor:
    """Collapse diagnostics for your own training loop: ``update(z)`` with each batch of embeddings,
    ``report()`` when you want a reading.

    Keeps the newest ``max_samples`` embeddings (detached, float32, on the CPU), so memory stays bounded
    however long it runs. ``scale_free`` says which geometry the loss compares embeddings in, as for the
    runner's verdict: True for cosine losses (BYOL, SimSiam: collapse is ``z_std`` far below 1/sqrt(d)), False
    for MSE-type losses (VICReg: collapse is ``z_scale`` far below its initial value ``z_scale_init``, given
    here or measured on the first update); ``standardized`` for Barlow Twins (``z_bn_std`` and ``rank_z_bn``,
    see ``verdict``). ``thresholds`` defaults to the packaged config's ``verdict`` node.
    """

    def __init__(self, dim: int | None = None, max_samples: int = 4096, z_scale_init: float | None = None,
                 scale_free: bool = True, thresholds=None, standardized: bool = False):
        if max_samples < 2:
            raise ValueError(f"max_samples={max_samples} must be >= 2 (a spread needs two embeddings)")
        self.dim, self.max_samples, self.z_scale_init = dim, max_samples, z_scale_init
        self.scale_free, self.standardized = scale_free, standardized
        self.thresholds = thresholds if thresholds is not None else default_thresholds()
        self._chunks, self._n = deque(), 0

    def update(self, z: torch.Tensor) -> None:
        """Add a batch of embeddings [n, d] (or [d] for one); the oldest beyond ``max_samples`` are dropped."""
        z = z.detach().float().cpu()
        if z.dim() == 1:
            z = z.unsqueeze(0)
        if z.dim() != 2:
            raise ValueError(f"embeddings must be [n, d], got shape {tuple(z.shape)}")
        if self.dim is None:
            self.dim = z.shape[1]
        elif z.shape[1] != self.dim:
            raise ValueError(f"embeddings of dimension {z.shape[1]}, the monitor holds dimension {self.dim}")
        if self.z_scale_init is None and len(z) > 1:
            self.z_scale_init = float(embedding_scale(z))
        z = z[-self.max_samples:].clone()  # a copy: a view would keep the caller's whole tensor alive
        self._chunks.append(z)
        self._n += len(z)
        while self._n - len(self._chunks[0]) >= self.max_samples:
            self._n -= len(self._chunks.popleft())

    def embeddings(self) -> torch.Tensor:
        """The (at most ``max_samples``) newest embeddings held, oldest first."""
        if not self._chunks:
            return torch.empty(0, self.dim or 0)
        return torch.cat(list(self._chunks))[-self.max_samples:]

    def report(self) -> dict:
        """``z_std``, ``z_std_ref`` (1/sqrt(d)), ``z_scale``, ``z_scale_init``, ``rank_z``, ``n`` and the
        ``verdict`` with its ``reason`` on the embeddings held (``standardized``: ``z_bn_std``, ``rank_z_bn`` too)."""
        z = self.embeddings()
        if len(z) < 2:
            raise ValueError(f"the monitor holds {len(z)} embedding(s); update() it with at least 2 first")
        m = {"z_std": float(embedding_std(z)), "z_std_ref": 1 / math.sqrt(z.shape[1]),
             "z_scale": float(embedding_scale(z)), "z_scale_init": self.z_scale_init, "n": len(z)}
        if not torch.isfinite(z).all():
            return m | {"rank_z": float("nan"), "verdict": "diverged", "reason": "non-finite embeddings"}
        m["rank_z"] = float(rankme(z))
        if self.standardized:
            m |= standardized_metrics(z)
        m["verdict"], m["reason"] = verdict(m, z.shape[1], len(z), self.thresholds, self.scale_free,
                                            self.standardized)
        return m

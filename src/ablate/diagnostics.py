"""Collapse diagnostics and evaluation protocols (definitions in docs/formulas.md, verdict in docs/diagnostics.md)."""

import math

import torch
import torch.nn.functional as F

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


def rankme(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalized singular values (+eps), on the
    embedding matrix without centering (Roy & Vetterli's effective rank)."""
    s = torch.linalg.svdvals(z.double())
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
        votes.scatter_add_(1, bank_y[idx], (sim / t).exp())
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


def verdict(metrics: dict, d: int, n: int, thresholds, scale_free: bool = True) -> tuple[str, str]:
    """Label-free verdict from the final diagnostics; thresholds are the config's ``verdict`` node.

    ``collapse``: every image mapped to nearly one vector, read in the geometry the invariance compares: the
    std of l2-normalized embeddings for the cosine losses (``scale_free``), the raw spread against its value at
    initialization for VICReg's MSE (else the normalized std). ``dimensional_collapse``: RankMe(z) below a
    share of min(d, n). Why each test, and what each one misses: docs/diagnostics.md.
    """
    loss = metrics.get("loss")
    if loss is not None and not math.isfinite(loss):
        return "diverged", f"non-finite loss ({loss})"
    std_ratio = metrics["z_std"] / metrics["z_std_ref"]
    shrink = thresholds.get("collapse_scale_ratio")
    raw = not scale_free and shrink is not None and metrics.get("z_scale") is not None and metrics.get("z_scale_init")
    if raw:
        scale_ratio = metrics["z_scale"] / metrics["z_scale_init"]
        if not math.isfinite(scale_ratio) or scale_ratio < shrink:
            return "collapse", f"z_scale/z_scale_init = {scale_ratio:.3g} < {shrink}"
    elif not math.isfinite(std_ratio) or std_ratio < thresholds.collapse_std_ratio:
        return "collapse", f"z_std/z_std_ref = {std_ratio:.3g} < {thresholds.collapse_std_ratio}"
    line = thresholds.get("collapse_rank")
    if line is not None and metrics["rank_z"] < line:
        return "collapse", f"rank_z = {metrics['rank_z']:.3g} < {line}"
    dim_limit = thresholds.dim_collapse_rank_frac * min(d, n)
    if metrics["rank_z"] < dim_limit:
        return "dimensional_collapse", f"rank_z = {metrics['rank_z']:.3g} < {dim_limit:.3g}"
    return "ok", (f"z_std/z_std_ref = {std_ratio:.3g}, rank_z = {metrics['rank_z']:.3g} "
                  f"(of d = {d})")

"""Loss terms as small functions of tensors; the method (method.py, whose docstring is the loss in pseudo-code)
composes them, and none of them detaches anything. Their conventions, and where they follow the official code
rather than the papers' text, are stated once in docs/formulas.md ("Loss conventions and method presets");
each function cites its paper equation or reference code.
"""

import math

import torch
import torch.nn.functional as F


def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL: squared distance of l2-normalized vectors, 2 - 2 cos(p, z), batch mean (BYOL eq. 2)."""
    return (F.normalize(p, dim=-1) - F.normalize(z, dim=-1)).pow(2).sum(-1).mean()


def neg_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam: D(p, z) = -cos(p, z), batch mean (SimSiam eq. 1)."""
    return -F.cosine_similarity(p, z, dim=-1).mean()


def mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """VICReg: element-wise mean squared error, F.mse_loss as in main_vicreg.py."""
    return F.mse_loss(p, z)


def ntxent_alignment(p: torch.Tensor, z: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent's positive-pair part, -cos(p, z) / tau, batch mean (SimCLR eq. 1, the log's numerator)."""
    return -F.cosine_similarity(p, z, dim=-1).mean() / temperature


def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins' ``nn.BatchNorm1d(d, affine=False)`` in training mode: (z - mean) / sqrt(biased var + eps)."""
    z = z - z.mean(dim=0)
    return z / torch.sqrt(z.pow(2).mean(dim=0) + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Barlow Twins' C = bn(z1)^T bn(z2) / n (d x d), main.py's ``c`` over the whole (global) batch."""
    return standardize(z1).T @ standardize(z2) / len(z1)


def barlow_diagonal(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Barlow Twins' invariance, sum_i (1 - C_ii)^2 (main.py ``on_diag``); needs the global batch."""
    return (1 - torch.diagonal(cross_correlation(p, z))).pow(2).sum()


INVARIANCE = {"normalized_mse": normalized_mse, "neg_cosine": neg_cosine, "mse": mse,
              "ntxent_align": ntxent_alignment, "barlow_diag": barlow_diagonal}
INVARIANCE_PARAMS = {"ntxent_align": ("temperature",)}  # read from the method node, passed as keywords
GLOBAL_BATCH = {"barlow_diag"}  # batch statistics inside: computed on the all-gathered batch under torchrun
# blind to the embeddings' norms; mse is not, nor is barlow_diag (per-dimension standardization, not the sphere)
STANDARDIZED = {"barlow_diag"}  # sees z standardized per dimension: blind to each dimension's mean and scale
SCALE_FREE = {"normalized_mse", "neg_cosine", "ntxent_align"}


def ntxent_uniformity(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent's negatives: over the 2n embeddings of both views, mean over anchors i of
    log sum_{k != i} exp(cos(z_i, z_k) / tau), the denominator of SimCLR eq. 1 (positive included)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    return torch.logsumexp(sim, dim=1).mean()


def xcorr_offdiagonal(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Barlow Twins' redundancy reduction, sum_{i != j} C_ij^2 (main.py ``off_diag``, before lambd)."""
    c = cross_correlation(z1, z2)
    return (c - torch.diag(torch.diagonal(c))).pow(2).sum()


def scale_free(invariance: str) -> bool:
    """Whether the invariance ``invariance`` (an INVARIANCE name) is blind to the embeddings' norms: the
    verdict then reads collapse from their spread, and var/cov act on the sphere under ``reg_geometry=auto``."""
    return invariance in SCALE_FREE


def variance(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on the per-dimension std over the batch (VICReg eq. 1-2, main_vicreg.py's std_loss)."""
    z = z - z.mean(dim=0)
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariance entries divided by d, covariance with 1/(n-1) (VICReg eq. 3-4,
    main_vicreg.py's cov_loss)."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)
    off_diag = cov - torch.diag(torch.diagonal(cov))
    return off_diag.pow(2).sum() / d


def on_sphere(z: torch.Tensor) -> torch.Tensor:
    """sqrt(d) * z / ||z||: the embeddings as a cosine invariance sees them (directions only), scaled so that an
    isotropic embedding has per-dimension std about 1 and so meets the hinge's gamma = 1. The paper leaves the
    geometry of var/cov unstated for BYOL and SimSiam (paper-notes, Table 4 details); this is one reading."""
    return math.sqrt(z.shape[1]) * F.normalize(z, dim=1)


REG_GEOMETRIES = {"raw": lambda z: z, "sphere": on_sphere}


def reg_geometry(name: str, invariance: str) -> str:
    """The geometry var/cov act in: ``auto`` is the one the invariance compares, sphere for the cosine losses
    (BYOL, SimSiam), raw for VICReg's MSE."""
    if name == "auto":
        return "sphere" if scale_free(invariance) else "raw"
    return name

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


INVARIANCE = {"normalized_mse": normalized_mse, "neg_cosine": neg_cosine, "mse": mse}
SCALE_FREE = {"normalized_mse", "neg_cosine"}  # blind to the embeddings' norms; mse is not


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

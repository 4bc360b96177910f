"""Loss terms as small functions of tensors. The runner composes them; none of them detaches anything.

Conventions (docs/formulas.md):
- invariance distances per method: BYOL, mean over the batch of ||p/|p| - z/|z|||^2 (= 2 - 2 cos, BYOL
  eq. 2); SimSiam, -cos(p, z) averaged over the batch (SimSiam eq. 1); VICReg, ``F.mse_loss`` (divided by
  n * d), as the official ``main_vicreg.py`` (the paper's s(Z, Z') divides by n only).
- variance and covariance follow ``main_vicreg.py``: v(Z) = mean_j relu(gamma - sqrt(Var(z_j) + eps))
  (paper eq. 1-2), c(Z) = (1/d) sum_{i != j} C(Z)_ij^2 with 1/(n-1) covariance (paper eq. 3-4). The runner
  averages v over the two branches and sums c over them, exactly as ``main_vicreg.py`` does.
"""

import math

import torch
import torch.nn.functional as F


def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL: squared distance of l2-normalized vectors, 2 - 2 cos(p, z), batch mean."""
    return (F.normalize(p, dim=-1) - F.normalize(z, dim=-1)).pow(2).sum(-1).mean()


def neg_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam: D(p, z) = -cos(p, z), batch mean."""
    return -F.cosine_similarity(p, z, dim=-1).mean()


def mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """VICReg: element-wise mean squared error, F.mse_loss as in main_vicreg.py."""
    return F.mse_loss(p, z)


INVARIANCE = {"normalized_mse": normalized_mse, "neg_cosine": neg_cosine, "mse": mse}
SCALE_FREE = {"normalized_mse", "neg_cosine"}  # blind to the embeddings' norms; mse is not


def variance(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on the per-dimension std over the batch: mean_j relu(gamma - sqrt(Var(z_j) + eps))."""
    z = z - z.mean(dim=0)
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariance entries divided by d, covariance with 1/(n-1)."""
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
        return "sphere" if invariance in SCALE_FREE else "raw"
    return name

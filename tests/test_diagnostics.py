import math

import pytest
import torch
from omegaconf import OmegaConf

from ablate.diagnostics import embedding_std, knn_top1, linear_probe, rankme, spectrum, verdict

THRESH = OmegaConf.create({"collapse_std_ratio": 0.1, "collapse_rank": 1.5, "dim_collapse_rank_frac": 0.05})


def test_constant_embeddings_std_zero_rank_one():
    z = torch.ones(500, 64) * torch.randn(1, 64)
    assert embedding_std(z).item() == pytest.approx(0.0, abs=1e-6)
    assert rankme(z).item() == pytest.approx(1.0, abs=1e-3)


def test_isotropic_gaussian_std_and_rank():
    d = 64
    z = torch.randn(20000, d)
    assert embedding_std(z).item() == pytest.approx(1 / math.sqrt(d), rel=0.03)
    assert rankme(z).item() > 0.97 * d


@pytest.mark.parametrize("k", [1, 5, 20])
def test_rank_k_embeddings(k):
    z = torch.randn(20000, k) @ torch.linalg.qr(torch.randn(64, k))[0].T  # orthonormal k-frame in 64-d
    assert rankme(z).item() == pytest.approx(k, rel=0.05)
    s = spectrum(z)
    assert (s[:k] > 0.5).all() and (s[k:] < 1e-6).all()
    assert torch.all(s[:-1] >= s[1:])  # sorted, largest first


def test_knn_on_known_inputs():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    bank_y = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[1.0, 0.05], [0.05, 1.0], [1.0, 0.0]])
    query_y = torch.tensor([0, 1, 1])
    # k = 2: the two nearest of each query share its side; the third query is labelled wrong on purpose
    assert knn_top1(bank, bank_y, query, query_y, 2, k=2).item() == pytest.approx(2 / 3)


def test_linear_probe_separable_and_random():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=g)
    y = (x[:, 0] > 0).long()
    assert linear_probe(x[:400], y[:400], x[400:], y[400:], 2, epochs=50) > 0.9
    y_rand = torch.randint(0, 2, (600,), generator=g)
    assert linear_probe(x[:400], y_rand[:400], x[400:], y_rand[400:], 2, epochs=20) < 0.7


def test_verdicts():
    ref = 1 / 8
    base = {"z_std_ref": ref, "loss": 0.1}
    assert verdict({**base, "z_std": 0.001, "rank_z": 1.0}, 64, 1000, THRESH)[0] == "collapse"
    assert verdict({**base, "z_std": ref, "rank_z": 1.2}, 64, 1000, THRESH)[0] == "collapse"
    # a line is a one-dimensional subspace: complete collapse only where collapse_rank asks for it
    off = OmegaConf.merge(THRESH, {"collapse_rank": None})
    assert verdict({**base, "z_std": ref, "rank_z": 1.2}, 64, 1000, off)[0] == "dimensional_collapse"
    assert verdict({**base, "z_std": 0.05 * ref, "rank_z": 30.0}, 64, 1000, off)[0] == "collapse"
    assert verdict({**base, "z_std": ref, "rank_z": 2.5}, 64, 1000, THRESH)[0] == "dimensional_collapse"
    assert verdict({**base, "z_std": ref, "rank_z": 30.0}, 64, 1000, THRESH)[0] == "ok"
    assert verdict({**base, "loss": float("nan"), "z_std": ref, "rank_z": 30.0}, 64, 1000, THRESH)[0] == "diverged"

"""The collapse diagnostics (ablate.diagnostics): std, scale, RankMe, spectrum, kNN, linear probe and the verdict
on worked numbers; CollapseMonitor from a plain PyTorch loop, and the README's example as written."""

import contextlib
import io
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from ablate import diagnostics
from ablate.diagnostics import (
    CollapseMonitor,
    embedding_scale,
    embedding_std,
    knn_top1,
    linear_probe,
    rankme,
    settled,
    spectrum,
    verdict,
)

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


def test_embedding_scale_on_worked_numbers():
    # per-dimension variance with 1/(n-1): dim 0 {1, 3} -> 2, dim 1 {2, 6} -> 8; sqrt of their mean = sqrt(5)
    assert embedding_scale(torch.tensor([[1.0, 2.0], [3.0, 6.0]])).item() == pytest.approx(math.sqrt(5))
    assert embedding_scale(torch.ones(100, 8) * torch.randn(1, 8)).item() == pytest.approx(0.0, abs=1e-6)
    assert embedding_scale(3 * torch.randn(20000, 16)).item() == pytest.approx(3.0, rel=0.02)


def test_collapse_onto_the_origin_is_seen_only_through_the_raw_scale():
    # isotropic directions, norms shrunk a thousandfold: SimSiam's monitor reads a healthy embedding
    z0 = torch.randn(4000, 64)
    z = 1e-3 * z0
    assert embedding_std(z).item() == pytest.approx(1 / 8, rel=0.05)
    m = {"z_std": embedding_std(z).item(), "z_std_ref": 1 / 8, "rank_z": rankme(z).item(), "loss": 1e-6,
         "z_scale": embedding_scale(z).item(), "z_scale_init": embedding_scale(z0).item()}
    on = OmegaConf.merge(THRESH, {"collapse_scale_ratio": 0.1})
    v, why = verdict(m, 64, 4000, on, scale_free=False)  # VICReg's MSE: the origin is a trivial minimum
    assert v == "collapse" and why.startswith("z_scale/z_scale_init = 0.001 < 0.1")
    assert verdict(m, 64, 4000, on, scale_free=True)[0] == "ok"  # a cosine loss never sees the norms
    assert verdict(m, 64, 4000, OmegaConf.merge(on, {"collapse_scale_ratio": None}), scale_free=False)[0] == "ok"
    # a healthy VICReg embedding that grew from its initialization, and a run with no initial scale recorded
    assert verdict({**m, "z_scale": 2.0, "z_scale_init": 0.3}, 64, 4000, on, scale_free=False)[0] == "ok"
    assert verdict({**m, "z_scale_init": None}, 64, 4000, on, scale_free=False)[0] == "ok"


def test_vicreg_line_reads_the_same_on_either_side_of_the_origin():
    # worked numbers: a = (1, 3) along u = (1/2, 1/2, 1/2, 1/2) is a ray; minus its mean, (-1, 1) u, the same
    # line across the origin. Normalized: u twice (std 0), or -u and u (per-channel std of -1/2, 1/2 = sqrt(1/2)).
    # Raw spread of both: per-dimension variance of (1/2, 3/2) = 1/2, so z_scale = sqrt(1/2).
    ray = torch.tensor([[1.0], [3.0]]) * torch.full((4,), 0.5)
    line = ray - ray.mean(dim=0)
    assert embedding_std(ray).item() == pytest.approx(0.0, abs=1e-7)
    assert embedding_std(line).item() == pytest.approx(math.sqrt(0.5))
    assert embedding_scale(ray).item() == pytest.approx(math.sqrt(0.5))
    assert embedding_scale(line).item() == pytest.approx(math.sqrt(0.5))
    on = OmegaConf.merge(THRESH, {"collapse_rank": None, "collapse_scale_ratio": 0.1})
    m = {z: {"z_std": embedding_std(v).item(), "z_std_ref": 0.5, "rank_z": 1.0, "loss": 0.4,
             "z_scale": embedding_scale(v).item(), "z_scale_init": 0.3} for z, v in (("ray", ray), ("line", line))}
    # VICReg's loss cannot tell them apart (a common offset cancels in MSE, variance and covariance): a line
    assert verdict(m["ray"], 64, 1000, on, scale_free=False) == verdict(m["line"], 64, 1000, on, scale_free=False)
    assert verdict(m["ray"], 64, 1000, on, scale_free=False)[0] == "dimensional_collapse"
    # a cosine loss sees one direction in the ray: complete collapse; the line through the origin is two
    assert verdict(m["ray"], 64, 1000, on, scale_free=True)[0] == "collapse"
    assert verdict(m["line"], 64, 1000, on, scale_free=True)[0] == "dimensional_collapse"
    # with no initial spread recorded, VICReg falls back to the normalized monitor
    assert verdict({**m["ray"], "z_scale_init": None}, 64, 1000, on, scale_free=False)[0] == "collapse"


def test_initial_scale_leaves_model_and_random_state_alone(cfg_factory):
    from conftest import TINY

    from ablate.data import load_data
    from ablate.run.loop import build_runner, initial_scale

    cfg = cfg_factory("+method=vicreg", *TINY)
    data = load_data(cfg.data, cfg.eval, cfg.seed)
    model, _ = build_runner(cfg, data, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    scale = initial_scale(model, data, cfg.data.image_size, cfg)
    assert scale > 0 and torch.equal(rng, torch.get_rng_state()) and model.online.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN buffers included


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


def test_a_collapse_whose_criterion_still_rises_is_unsettled():
    """Worked numbers for the rule (docs/diagnostics.md, "A verdict still moving"): VICReg's raw scale at
    z_scale_init = 1.0 reads collapse below 0.1; from 0.04 to 0.05 it rose 25% (> 10%): unsettled; from 0.05 to
    0.053, 6%: settled; the same for the normalized std of a cosine loss (ref 1/8, collapse below 0.0125)."""
    on = OmegaConf.merge(THRESH, {"collapse_scale_ratio": 0.1, "collapse_rank": None})
    last = {"z_std": 0.1, "z_std_ref": 1 / 8, "rank_z": 30.0, "loss": 0.1, "z_scale": 0.05, "z_scale_init": 1.0}
    assert verdict(last, 64, 1000, on, scale_free=False)[0] == "collapse"
    ok, why = settled(last, {"z_scale": 0.04}, 64, 1000, on, scale_free=False)
    assert ok is False and "z_scale 0.04 -> 0.05 (+25%)" in why
    assert settled({**last, "z_scale": 0.053}, {"z_scale": 0.05}, 64, 1000, on, scale_free=False)[0] is True
    assert settled(last, {"z_scale": 0.06}, 64, 1000, on, scale_free=False)[0] is True  # still falling
    assert settled(last, {"z_scale": 0.0455}, 64, 1000, on, scale_free=False)[0] is True  # +9.9%
    assert settled(last, {"z_scale": 0.045}, 64, 1000, on, scale_free=False)[0] is False  # +11%
    cosine = {**last, "z_std": 0.01}
    assert settled(cosine, {"z_std": 0.008}, 64, 1000, on)[0] is False  # +25% of the normalized std
    assert settled(cosine, {"z_std": 0.0095}, 64, 1000, on)[0] is True  # +5%
    # dimensional collapse reads rank_z (limit 0.05 * 64 = 3.2); ok and diverged are settled; nothing to compare
    dim = {**last, "z_scale": 1.0, "rank_z": 2.0}
    assert settled(dim, {"rank_z": 1.5}, 64, 1000, on, scale_free=False)[0] is False  # +33%
    assert settled(dim, {"rank_z": 1.9}, 64, 1000, on, scale_free=False)[0] is True
    assert settled({**last, "z_scale": 1.0}, {"z_scale": 0.1}, 64, 1000, on, scale_free=False) == (
        True, "ok: no collapse criterion met")
    assert settled({**last, "loss": float("nan")}, None, 64, 1000, on)[0] is True
    assert settled(last, None, 64, 1000, on, scale_free=False)[0] is None


README = Path(__file__).resolve().parents[1] / "README.md"


def test_public_api_is_listed():
    assert set(diagnostics.__all__) == {"CollapseMonitor", "embedding_std", "embedding_scale", "rankme", "spectrum",
                                        "standardized_std", "verdict"}
    for name in diagnostics.__all__:
        assert f"``{name}" in diagnostics.__doc__


def test_mse_between_views_without_regularizer_collapses():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    data = torch.randn(1024, 16)
    raw, cosine = CollapseMonitor(scale_free=False, max_samples=512), CollapseMonitor(max_samples=512)
    with torch.no_grad():
        raw.update(net(data[:512]))
    before = raw.report()
    assert before["verdict"] == "ok" and before["z_scale"] == pytest.approx(before["z_scale_init"])
    for _ in range(200):
        x = data[torch.randint(0, len(data), (128,))]
        z1, z2 = net(x + torch.randn_like(x)), net(x + torch.randn_like(x))
        loss = F.mse_loss(z1, z2)  # invariance alone: the trivial solution is one vector for every input
        opt.zero_grad()
        loss.backward()
        opt.step()
        raw.update(z1)
        cosine.update(z1)
    r, c = raw.report(), cosine.report()
    assert r["verdict"] == "collapse" and r["reason"].startswith("z_scale/z_scale_init")
    assert r["z_scale"] < 0.1 * r["z_scale_init"] and r["n"] == 512
    assert c["verdict"] == "collapse" and c["reason"].startswith("z_std/z_std_ref")
    assert not any(t.requires_grad for t in raw._chunks)


def test_isotropic_embeddings_are_ok_and_memory_is_bounded():
    torch.manual_seed(0)
    monitor = CollapseMonitor(dim=64)
    batches = [torch.randn(1000, 64) for _ in range(10)]
    for z in batches:
        monitor.update(z)
    held = monitor.embeddings()
    assert torch.equal(held, torch.cat(batches)[-4096:]) and sum(len(c) for c in monitor._chunks) < 4096 + 1000
    r = monitor.report()
    assert r["verdict"] == "ok" and r["n"] == 4096 and r["rank_z"] > 60
    assert r["z_std"] == pytest.approx(r["z_std_ref"], rel=0.05) and r["z_std_ref"] == 1 / 8
    with pytest.raises(ValueError, match="dimension 32"):
        monitor.update(torch.randn(4, 32))
    with pytest.raises(ValueError, match="at least 2"):
        CollapseMonitor().report()
    nan = CollapseMonitor()
    nan.update(torch.full((8, 4), float("nan")))
    assert nan.report()["verdict"] == "diverged"


def test_readme_example_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    block = next(b for b in blocks if "CollapseMonitor" in b)
    expected = [line.split("#")[1].strip() for line in block.splitlines() if line.startswith("print(")]
    assert expected, "the README example states what it prints in a comment"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), {})
    assert out.getvalue().split() == expected

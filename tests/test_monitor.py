"""CollapseMonitor from a plain PyTorch loop: a model trained to collapse reads 'collapse', isotropic embeddings
read 'ok', memory stays bounded; the README's example block runs as written and prints what it says."""

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ablate import diagnostics
from ablate.diagnostics import CollapseMonitor

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

"""The method (ablate.method): every technique switch changes the computation it names, all 64 combinations compose
and train, reg_geometry changes only the regularizer, and the two baselines (random, supervised)."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY, make_cfg, switched_cfg

from ablate.config import TECHNIQUES, ConfigError, check_config, techniques
from ablate.method import Baseline, JointEmbedding, equivalences
from ablate.models import count_bn
from ablate.run.checkpoint import load_checkpoint
from ablate.run.loop import train


def _views(n=16):
    return torch.randn(n, 3, 32, 32), torch.randn(n, 3, 32, 32)


def test_presets_set_the_papers_switches(cfg_factory):
    expect = {
        "byol": dict(ema=True, stop_grad=True, predictor=True, batchnorm=True, var=False, cov=False),
        "simsiam": dict(ema=False, stop_grad=True, predictor=True, batchnorm=True, var=False, cov=False),
        "vicreg": dict(ema=False, stop_grad=False, predictor=False, batchnorm=True, var=True, cov=True),
    }
    for method, on in expect.items():
        assert techniques(cfg_factory(f"+method={method}")) == on


def test_tilde_and_none_turn_a_technique_off(cfg_factory):
    for t in TECHNIQUES:
        base = techniques(cfg_factory("+method=byol", "var=hinge", "cov=offdiag"))
        assert base[t]
        for off in (f"~{t}", f"{t}=none"):
            on = techniques(cfg_factory("+method=byol", "var=hinge", "cov=offdiag", off))
            assert not on[t] and all(on[o] for o in TECHNIQUES if o != t)


def test_no_predictor_removes_the_predictor(cfg_factory):
    with_pred = JointEmbedding(cfg_factory("+method=simsiam", *TINY))
    without = JointEmbedding(cfg_factory("+method=simsiam", "~predictor", *TINY))
    assert isinstance(with_pred.predictor, torch.nn.Module)
    assert without.predictor is None
    z1, z2, p1, p2, *_ = without.branches(*_views())
    assert p1 is z1 and p2 is z2


def test_batchnorm_switch_adds_and_removes_bn_in_heads(cfg_factory):
    simsiam = JointEmbedding(cfg_factory("+method=simsiam", *TINY))
    # SimSiam projector: BN after both hidden layers and a non-affine BN on the output; predictor: 1 BN
    assert count_bn(simsiam.online.projector) == 3
    assert not simsiam.online.projector[-1].affine
    assert count_bn(simsiam.predictor) == 1
    byol = JointEmbedding(cfg_factory("+method=byol", *TINY))
    assert count_bn(byol.online.projector) == 1 and count_bn(byol.predictor) == 1
    vicreg = JointEmbedding(cfg_factory("+method=vicreg", "predictor=mlp", *TINY))
    assert count_bn(vicreg.online.projector) == 2  # no BN on the expander output
    assert count_bn(vicreg.predictor) == 1
    for method in ("simsiam", "byol", "vicreg"):
        m = JointEmbedding(cfg_factory(f"+method={method}", "predictor=mlp", "~batchnorm", *TINY))
        assert count_bn(m.online.projector) == 0 and count_bn(m.predictor) == 0
        assert count_bn(m.online.backbone) > 0  # the backbone keeps its own BN


def test_expander_output_bias_follows_the_reference_code(cfg_factory):
    # main_vicreg.py ends the expander in Linear(bias=False), SimSiam freezes that bias, BYOL keeps it; with BN
    # off the hidden layers regain their biases but the output layer does not
    for method, bias in (("vicreg", False), ("simsiam", False), ("byol", True)):
        for bn in ([], ["~batchnorm"]):
            proj = JointEmbedding(cfg_factory(f"+method={method}", *bn, *TINY)).online.projector
            linears = [m for m in proj if isinstance(m, torch.nn.Linear)]
            assert (linears[-1].bias is not None) == bias
            assert all((m.bias is not None) == bool(bn) for m in linears[:-1])


def test_ema_target_is_a_frozen_copy(cfg_factory):
    m = JointEmbedding(cfg_factory("+method=byol", *TINY))
    assert m.target is not None and all(not p.requires_grad for p in m.target.parameters())
    assert JointEmbedding(cfg_factory("+method=byol", "~ema", *TINY)).target is None


def _param_grads(model, loss):
    params = [p for p in model.online.parameters()]
    return torch.autograd.grad(loss, params, allow_unused=True)


@pytest.mark.parametrize("method", ["simsiam", "vicreg"])
def test_stop_grad_blocks_the_target_branch(cfg_factory, method):
    """With stop_grad the loss gradient equals the one with the targets replaced by constants; without it,
    gradient also flows through the target branch."""
    x1, x2 = _views()
    for sg in (True, False):
        model = JointEmbedding(cfg_factory(f"+method={method}", f"stop_grad={'target' if sg else 'none'}",
                                           "var=none", "cov=none", *TINY))
        z1, z2, p1, p2, t1, t2 = model.branches(x1, x2)
        assert t1.requires_grad is (not sg) and t2.requires_grad is (not sg)
        full = _param_grads(model, model.loss(z1, z2, p1, p2, t1, t2)[0])
        z1, z2, p1, p2, t1, t2 = model.branches(x1, x2)  # same inputs, same graph, built again
        const = _param_grads(model, model.loss(z1, z2, p1, p2, t1.detach(), t2.detach())[0])
        same = all(torch.allclose(a, b, atol=1e-7) for a, b in zip(full, const) if a is not None)
        assert same is sg


def test_ema_target_receives_no_gradient_with_or_without_stop_grad(cfg_factory):
    x1, x2 = _views()
    for sg in ("target", "none"):
        model = JointEmbedding(cfg_factory("+method=byol", f"stop_grad={sg}", *TINY))
        loss, _ = model(x1, x2)
        loss.backward()
        assert all(p.grad is None for p in model.target.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.online.parameters())
    cfg = cfg_factory("+method=byol", "stop_grad=none")
    assert len(equivalences(cfg)) == 1 and "same computation" in equivalences(cfg)[0]


def test_var_and_cov_switches_change_the_loss(cfg_factory):
    x1, x2 = _views()
    losses = {}
    for var, cov in itertools.product(("hinge", "none"), ("offdiag", "none")):
        torch.manual_seed(0)
        m = JointEmbedding(cfg_factory("+method=vicreg", f"var={var}", f"cov={cov}", *TINY))
        torch.manual_seed(0)
        loss, terms = m(x1, x2)
        losses[(var, cov)] = loss.item()
        assert (terms[2].item() != 0) is (var == "hinge")
        assert (terms[3].item() != 0) is (cov == "offdiag")
    assert len(set(losses.values())) == 4


ALL = list(itertools.product((False, True), repeat=6))


@pytest.mark.parametrize("method,geometry", [("simsiam", "raw"), ("simsiam", "sphere")])
def test_all_64_combinations_compose_and_train_a_step(method, geometry):
    """In every combination each switch changes what it names, and one step moves the online weights (and the
    EMA target part of the way towards them)."""
    assert len(ALL) == 64
    x1, x2 = _views(8)
    for bits in ALL:
        on = dict(zip(TECHNIQUES, bits))
        cfg = switched_cfg(method, on, *TINY)
        cfg.reg_geometry = geometry
        assert techniques(cfg) == on
        if on["var"]:
            cfg.var.gamma = 100.0  # every dimension's std falls below it: the term is non-zero when on
        model = JointEmbedding(cfg)
        assert (model.predictor is not None) is on["predictor"] and (model.target is not None) is on["ema"]
        assert (count_bn(model.online.projector) > 0) is on["batchnorm"]
        z1, z2, p1, p2, t1, t2 = model.branches(x1, x2)
        assert (p1 is not z1) is on["predictor"]
        assert t1.requires_grad is (not on["ema"] and not on["stop_grad"])  # a gradient path to the target
        loss, terms = model.loss(z1, z2, p1, p2, t1, t2)
        assert torch.isfinite(loss)
        assert (terms[2].item() != 0) is on["var"] and (terms[3].item() != 0) is on["cov"]
        before = [p.detach().clone() for p in model.online.parameters()]
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert (model.update_target(0, 10) is not None) is on["ema"]
        assert any(not torch.equal(a, p) for a, p in zip(before, model.online.parameters())), on
        with torch.no_grad():  # the target is the online branch itself unless the EMA copy lags behind it
            z1, _, _, _, t1, _ = model.branches(x1, x2)
        assert torch.equal(t1, z1) is not on["ema"], on


def test_geometry_changes_the_regularizer_terms_and_nothing_else(cfg_factory):
    x1, x2 = torch.randn(16, 3, 32, 32), torch.randn(16, 3, 32, 32)
    terms = {}
    for g in ("raw", "sphere", "auto"):
        torch.manual_seed(0)
        m = JointEmbedding(cfg_factory("+method=simsiam", "var=hinge", "cov=offdiag", f"reg_geometry={g}", *TINY))
        terms[g] = m(x1, x2)[1]
    assert torch.equal(terms["raw"][1], terms["sphere"][1])  # invariance unchanged
    assert terms["raw"][2] != terms["sphere"][2] and terms["raw"][3] != terms["sphere"][3]
    assert torch.equal(terms["auto"], terms["sphere"])
    torch.manual_seed(0)
    vic_auto = JointEmbedding(cfg_factory("+method=vicreg", *TINY))(x1, x2)[1]
    torch.manual_seed(0)
    vic_raw = JointEmbedding(cfg_factory("+method=vicreg", "reg_geometry=raw", *TINY))(x1, x2)[1]
    assert torch.equal(vic_auto, vic_raw)


def _bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().numpy().tobytes()


def test_random_takes_no_step_and_keeps_its_initial_parameters(tmp_path):
    cfg = make_cfg("+method=random", *TINY, "seed=3")
    summary = train(cfg, tmp_path)
    assert summary["status"] == "complete" and summary["baseline"] == "random" and summary["verdict"] is None
    assert "baseline" in summary["verdict_reason"] and summary["epochs_completed"] == 0
    assert 0 <= summary["metrics"]["linear_top1"] <= 100 and "no optimizer step" in summary["protocol"]["baseline"]
    state = load_checkpoint(tmp_path)
    assert state["step"] == 0
    torch.manual_seed(3)
    fresh = Baseline(cfg, summary["num_classes"])
    trained = state["model"]
    for name, p in fresh.named_parameters():
        assert _bytes(trained[name]) == _bytes(p), name
    # BN running statistics were estimated (buffers), and the backbone is the SSL runs' initial one
    means = [k for k in trained if k.endswith("running_mean")]
    assert means and any(trained[k].abs().sum() > 0 for k in means)
    torch.manual_seed(3)
    ssl = JointEmbedding(make_cfg("+method=simsiam", *TINY, "seed=3"))
    for name, p in ssl.online.backbone.named_parameters():
        assert _bytes(trained[f"online.backbone.{name}"]) == _bytes(p), name
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in rows] == [(0, 0)]
    assert train(cfg, tmp_path)["wall_s"] == summary["wall_s"]  # finished: left as it is


def _separable_npz(path, n_train=128, n_test=64, seed=0):
    """Two classes told apart by brightness, which no crop, flip or colour jitter of the recipe undoes."""
    g = np.random.default_rng(seed)

    def split(n):
        y = g.integers(0, 2, n)
        x = np.where(y[:, None, None, None] == 1, 215, 40) + g.integers(-25, 26, (n, 16, 16, 3))
        return x.clip(0, 255).astype(np.uint8), y.astype(np.int64)

    (xtr, ytr), (xte, yte) = split(n_train), split(n_test)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


def test_supervised_learns_on_a_separable_fixture(tmp_path):
    _separable_npz(tmp_path / "sep.npz")
    tiny = [o for o in TINY if not o.startswith("data.")]
    cfg = make_cfg("+method=supervised", *tiny, "data=npz", f"data.path={tmp_path / 'sep.npz'}", "data.image_size=16",
                   "data.num_classes=2", "eval.test_size=64", "train.epochs=8", "train.batch_size=32", "optim.lr=2.0",
                   "train.log_every=1")
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "complete" and summary["baseline"] == "supervised" and summary["verdict"] is None
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0]["loss"], rows[-1]["loss"]
    # cross-entropy of two balanced classes starts near ln 2; labels that do not match their images stay there
    assert abs(first - math.log(2)) < 0.35 and last < 0.15, (first, last)
    assert summary["metrics"]["linear_top1"] > 95 and "cross-entropy" in summary["protocol"]["baseline"]


@pytest.mark.parametrize("overrides, message", [
    (["+method=supervised", "data=folder", "data.stream=true"], "use data.stream=false"),
    (["+method=supervised", "data=stl10"], "use data.ssl_split=train"),
    (["+method=random", "predictor=mlp"], "takes no switch; drop predictor"),
    (["+method=random", "method.baseline=linear"], "method.baseline=linear is unknown"),
])
def test_bad_baseline_input_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as e:
        check_config(make_cfg(*overrides))
    assert "\n" not in str(e.value)

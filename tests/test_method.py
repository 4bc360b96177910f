"""Every technique switch changes the computation it names, and all 64 combinations compose and train."""

import itertools

import pytest
import torch
from conftest import TINY, switch_overrides

from ablate.config import TECHNIQUES, techniques
from ablate.method import JointEmbedding, equivalences
from ablate.models import count_bn


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
def test_all_64_combinations_compose_and_train_a_step(cfg_factory, method, geometry):
    """In every combination each switch changes what it names, and one step moves the online weights (and the
    EMA target part of the way towards them)."""
    assert len(ALL) == 64
    x1, x2 = _views(8)
    for bits in ALL:
        on = dict(zip(TECHNIQUES, bits))
        cfg = cfg_factory(f"+method={method}", *switch_overrides(on), f"reg_geometry={geometry}", *TINY)
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

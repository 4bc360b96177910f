"""train.compile: one graph per part of the step for every switch setting, lr and tau as device tensors, and the
compiled step's loss curve equal to the eager one within float tolerance."""

import pytest
import torch
from conftest import TINY, make_cfg, switched_cfg

from ablate.config import TECHNIQUES, ConfigError, techniques
from ablate.data import load_data
from ablate.ema import update_momentum
from ablate.method import JointEmbedding
from ablate.optim import build_optimizer, param_groups, set_lr
from ablate.run.compiled import combinations, compile_mode, forward_graphs, graph_counts, switch_overrides, whole
from ablate.run.step import build_runner, optimizer_for

CPU = torch.device("cpu")
ALL_OFF, ALL_ON = dict.fromkeys(TECHNIQUES, False), dict.fromkeys(TECHNIQUES, True)
METHODS = ("byol", "simsiam", "vicreg")  # the three invariances and both optimizers (LARS, SGD)


def test_compile_modes():
    assert compile_mode(False, CPU) is None and compile_mode(True, CPU) == "default"
    assert compile_mode("reduce-overhead", torch.device("cuda", 0)) == "reduce-overhead"
    with pytest.raises(ConfigError, match="CUDA graphs"):
        compile_mode("reduce-overhead", CPU)
    with pytest.raises(ConfigError, match="unknown"):
        compile_mode("fast", CPU)


def test_combinations_are_the_64_switch_settings():
    combos = combinations()
    assert len(combos) == 64 and len({tuple(c.values()) for c in combos}) == 64
    assert switch_overrides(ALL_OFF) == [f"{t}=none" for t in TECHNIQUES]


def _id(x):
    return x if isinstance(x, str) else "".join("01"[v] for v in x.values())


# every switch on and off at least once, and all four var/cov pairs (the loss's branches), over the three methods'
# invariances and both optimizers: each part of the step (forward, optimizer, EMA update) on the TINY model
COVERING = [("vicreg", ALL_OFF), ("byol", ALL_ON),
            ("simsiam", {**ALL_OFF, "ema": True, "predictor": True, "var": True}),
            ("vicreg", {**ALL_OFF, "stop_grad": True, "batchnorm": True, "cov": True}),
            ("simclr", None), ("barlowtwins", None)]  # the negatives and xcorr switches, in their presets


@pytest.mark.parametrize("method,on", COVERING, ids=lambda x: x if isinstance(x, str) else _id(x or {}))
def test_forward_loss_optimizer_and_ema_each_trace_as_one_graph(method, on):
    cfg = make_cfg(f"+method={method}", *TINY, *(switch_overrides(on) if on else []))
    model = JointEmbedding(cfg)
    opt = optimizer_for(model, cfg.optim, 0.1, compiled=True)
    x1, x2 = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    counts = graph_counts(model, opt, x1, x2)
    assert set(counts) == {"forward", "optimizer", *(["ema"] if on and on["ema"] else [])}
    assert whole(counts), counts


@pytest.mark.parametrize("i", range(64), ids=lambda i: _id(combinations()[i]))
def test_every_switch_setting_traces_its_forward_and_loss_as_one_graph(i):
    """All 64 on/off settings of the six switches, each on one of the three methods in turn (so each method meets
    both settings of every switch): the forward with its loss, which the switches change, is one graph with no
    break. The backbone, the same module in every setting, is one conv stage here (a quarter of the trace); the
    covering settings above trace the whole step of the TINY model."""
    on = combinations()[i]
    cfg = switched_cfg(METHODS[i % 3], on, *TINY, "backbone.widths=[8]")
    assert techniques(cfg) == on
    assert forward_graphs(JointEmbedding(cfg), torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)) == (1, 0)


def test_lr_is_a_device_tensor_filled_in_place_and_survives_a_checkpoint():
    cfg = make_cfg("+method=simsiam", *TINY, "optim.predictor_fixed_lr=true")
    model = JointEmbedding(cfg)
    opt = build_optimizer(param_groups(model.trained_modules(), cfg.optim), cfg.optim, 0.05)
    lrs = [g["lr"] for g in opt.param_groups]
    assert all(isinstance(t, torch.Tensor) and t.dim() == 0 for t in lrs) and len({id(t) for t in lrs}) == len(lrs)
    set_lr(opt, 0.0123)
    assert all(g["lr"] is t for g, t in zip(opt.param_groups, lrs))  # the same tensors: a compiled step keeps its graph
    got = [(g["fixed_lr"], float(g["lr"])) for g in opt.param_groups]
    assert any(fixed for fixed, _ in got) and not all(fixed for fixed, _ in got)
    assert all(v == pytest.approx(0.05 if fixed else 0.0123) for fixed, v in got)
    state = opt.state_dict()
    for g in state["param_groups"]:
        g["lr"] = 0.2  # a checkpoint written before lr became a tensor
    opt.load_state_dict(state)
    assert all(isinstance(g["lr"], torch.Tensor) and float(g["lr"]) == pytest.approx(0.2) for g in opt.param_groups)


def test_ema_update_with_a_device_tau_matches_the_float_one_to_the_bit():
    online = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.BatchNorm1d(5))
    a, b = (torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.BatchNorm1d(5)) for _ in range(2))
    b.load_state_dict(a.state_dict())
    update_momentum(online, a, 0.9931)
    update_momentum(online, b, torch.tensor(0.9931, dtype=torch.float64))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a[0].weight, online[0].weight)


def _curve(method: str, compile: bool, steps: int = 4) -> torch.Tensor:
    cfg = make_cfg(f"+method={method}", *TINY, "device=cpu", f"train.compile={str(compile).lower()}")
    torch.manual_seed(0)
    data = load_data(cfg.data, cfg.eval, cfg.seed)
    _, stepper = build_runner(cfg, data, CPU)
    assert (stepper.compiled is not None) == compile
    batches = stepper.epoch_batches(data.ssl_x)
    return torch.stack([stepper(next(batches)) for _ in range(steps)]), stepper


@pytest.mark.parametrize("method", ["byol", "simsiam"])  # LARS with the EMA target; SGD
def test_compiled_step_gives_the_eager_loss_curve(method, monkeypatch, one_thread):
    """The compiled step (forward + loss, AOTAutograd's backward, optimizer, EMA update, lr and tau read from
    device tensors) against the eager one. The suite traces with the aot_eager backend, which runs the captured
    graphs without inductor's C++ build (minutes on a loaded 2-core CPU); scripts/gpu_check.sh compiles with
    inductor on CUDA."""
    eager, _ = _curve(method, False)
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, **kw: real(fn, backend="aot_eager", **kw))
    compiled, stepper = _curve(method, True)
    torch._dynamo.reset()
    assert stepper.step == 4 and torch.isfinite(compiled).all()
    assert torch.allclose(compiled, eager, rtol=1e-4, atol=1e-5), (compiled[:, 0], eager[:, 0])
    assert not torch.equal(eager[0], eager[-1])  # the curve moves: the steps train

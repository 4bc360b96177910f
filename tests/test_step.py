"""The training step (ablate.run.step): bf16 autocast covers the encoder and heads only, the runner falls back to
fp32 on a CPU without native bf16, and a run is deterministic for a given precision."""

import pytest
import torch
from conftest import TINY

from ablate import method as method_module
from ablate.data import load_data
from ablate.diagnostics import linear_probe
from ablate.run import hardware as precision
from ablate.run.loop import build_runner, evaluate

CPU = torch.device("cpu")


def _runner(cfg_factory, *overrides):
    cfg = cfg_factory("+method=byol", "var=hinge", "cov=offdiag", *TINY, *overrides)
    data = load_data(cfg.data, cfg.eval, cfg.seed)
    torch.manual_seed(cfg.seed)
    model, stepper = build_runner(cfg, data, CPU)
    return cfg, data, model, stepper


@pytest.mark.parametrize("flags,expect", [({"avx2", "fma"}, "fp32"), ({"avx512f", "avx512_bf16"}, "bf16")])
def test_the_runner_falls_back_to_fp32_without_native_bf16(cfg_factory, monkeypatch, flags, expect):
    monkeypatch.setattr(precision, "cpu_info", lambda: ("test cpu", flags, 2.0))
    _, _, _, stepper = _runner(cfg_factory, "train.precision=auto")
    assert stepper.precision == expect and stepper.bf16 is (expect == "bf16")
    assert stepper.mem_format == torch.channels_last


def test_bf16_autocast_covers_the_encoder_not_the_loss_diagnostics_ema_or_probe(cfg_factory, monkeypatch):
    cfg, data, model, stepper = _runner(cfg_factory, "train.precision=bf16")
    seen = []
    model.online.backbone.register_forward_hook(lambda m, i, o: seen.append(("backbone", o.dtype)))
    cov = method_module.covariance

    def covariance(z):
        out = cov(z)
        seen.append(("cov", z.dtype, torch.is_autocast_enabled("cpu"), (z.T @ z).dtype, out.dtype))
        return out

    monkeypatch.setattr(method_module, "covariance", covariance)
    terms = stepper(data.ssl_x[: stepper.batch_size])
    assert ("backbone", torch.bfloat16) in seen
    assert ("cov", torch.float32, False, torch.float32, torch.float32) in seen
    assert terms.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in (*model.online.parameters(), *model.target.parameters()))
    seen.clear()
    _, (bank_h, test_h, test_z) = evaluate(model, data, cfg.data.image_size, cfg)
    assert seen and all(s == ("backbone", torch.float32) for s in seen)
    assert bank_h.dtype == test_h.dtype == test_z.dtype == torch.float32
    acc = linear_probe(bank_h, data.bank_y, test_h, data.test_y, data.num_classes, 1, 32, 0.1, 0.0, 0)
    assert 0 <= acc <= 1


@pytest.mark.parametrize("prec", ["fp32", "bf16", "fp32 compile_aug"])
def test_a_run_is_deterministic_for_a_given_precision(cfg_factory, prec):
    prec, *compiled = prec.split()
    results = []
    for _ in range(2):
        _, data, model, stepper = _runner(cfg_factory, f"train.precision={prec}",
                                          f"train.compile_aug={bool(compiled)}")
        assert stepper.compile_aug is bool(compiled)
        torch.manual_seed(1)
        terms = [stepper(b) for b, _ in zip(stepper.epoch_batches(data.ssl_x), range(3))]
        results.append((torch.stack(terms), [p.detach().clone() for p in model.online.parameters()]))
    (t1, p1), (t2, p2) = results
    assert torch.equal(t1, t2) and all(torch.equal(a, b) for a, b in zip(p1, p2))

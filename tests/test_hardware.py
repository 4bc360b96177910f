"""train.precision: bf16 autocast covers the encoder and heads only, ``auto`` falls back to fp32 on a CPU without
native bf16, and a run is deterministic for a given precision."""

import pytest
import torch
from conftest import TINY

from ablate import method as method_module
from ablate.data import load_data
from ablate.diagnostics import linear_probe
from ablate.run import hardware as precision
from ablate.run.loop import build_runner, evaluate

CPU = torch.device("cpu")


def test_auto_is_bf16_only_where_the_cpu_multiplies_bf16():
    assert precision.resolve("auto", CPU, {"avx2", "fma"}) == "fp32"
    assert precision.resolve("auto", CPU, {"avx512f", "avx512_bf16"}) == "bf16"
    assert precision.resolve("auto", CPU, {"amx_bf16", "amx_tile"}) == "bf16"
    assert precision.resolve("auto", CPU, {"asimd", "bf16"}) == "bf16"  # Arm FEAT_BF16
    assert precision.resolve("bf16", CPU, {"avx2"}) == "bf16"  # asked for: kept, emulated
    assert precision.resolve("fp32", CPU, {"amx_bf16"}) == "fp32"
    assert precision.channels_last("auto", CPU, "bf16") and precision.channels_last("auto", CPU, "fp32")
    assert not precision.channels_last("auto", torch.device("mps"), "fp32")
    assert not precision.channels_last(False, CPU, "bf16") and precision.channels_last(True, CPU, "fp32")
    with pytest.raises(ValueError, match="choose one of: auto, fp32, bf16"):
        precision.resolve("fp16", CPU)


def test_peak_is_cores_times_clock_times_flop_per_cycle():
    avx2 = precision.peak_flops({"isa": ["avx2", "fma"], "ghz": 2.5, "cores": 2})
    assert avx2["fp32_flop_per_cycle"] == 32 and avx2["fp32_tflops"] == pytest.approx(2 * 2.5e9 * 32 / 1e12)
    assert avx2["bf16_tflops"] is None
    avx512 = precision.peak_flops({"isa": ["avx2", "avx512f", "avx512_bf16"], "ghz": 2.0, "cores": 4}, fma_units=1)
    assert avx512["fp32_tflops"] == pytest.approx(4 * 2e9 * 32 / 1e12)
    assert avx512["bf16_tflops"] == pytest.approx(2 * avx512["fp32_tflops"])
    # Zen 4 decodes AVX-512 but runs it on 256-bit pipes: the AVX2 rate, and bf16 dot products at twice that
    zen4 = precision.peak_flops({"isa": ["avx2", "avx512f", "avx512_bf16"], "ghz": 2.5, "cores": 2,
                                 "cpu_id": "AuthenticAMD family 25 model 17 stepping 1"})
    assert zen4["fp32_flop_per_cycle"] == 32 and zen4["fp32_tflops"] == pytest.approx(avx2["fp32_tflops"])
    assert zen4["bf16_tflops"] == pytest.approx(2 * avx2["fp32_tflops"])
    zen5 = precision.peak_flops({"isa": ["avx2", "avx512f"], "ghz": 2.5, "cores": 2,
                                 "cpu_id": "AuthenticAMD family 26 model 2 stepping 0"})
    assert zen5["fp32_flop_per_cycle"] == 64


def test_cpu_id_names_the_core_a_vm_model_name_hides(tmp_path, monkeypatch):
    cpuinfo = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
               "model name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: fpu avx2 fma hypervisor\n\n"
               "processor\t: 1\nvendor_id\t: Other\ncpu family\t: 6\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: real_open(tmp_path / "cpuinfo", *a, **k)
                        if f == "/proc/cpuinfo" else real_open(f, *a, **k))
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    precision.cpuinfo_fields.cache_clear()
    try:
        assert precision.cpu_id() == "AuthenticAMD family 25 model 17 stepping 1"
        (tmp_path / "cpuinfo").write_text("processor\t: 0\nFeatures\t: asimd\n")  # Arm: no family
        precision.cpuinfo_fields.cache_clear()
        assert precision.cpu_id() is None
    finally:
        precision.cpuinfo_fields.cache_clear()


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


def test_compile_aug_auto_needs_a_cpu_a_compiler_and_a_long_enough_run(cfg_factory, monkeypatch):
    enough = precision.COMPILE_AUG_MIN_IMAGES
    monkeypatch.setattr(precision, "cxx_available", lambda: True)
    assert precision.compile_aug("auto", CPU, enough) and not precision.compile_aug("auto", CPU, enough - 1)
    assert not precision.compile_aug("auto", torch.device("cuda"), enough)
    assert precision.compile_aug(True, torch.device("cuda"), 1) and not precision.compile_aug(False, CPU, enough)
    with pytest.raises(ValueError, match="train.compile_aug=maybe"):
        precision.compile_aug("maybe", CPU, enough)
    # the runner counts both views of every step: 20 epochs x 4 steps x 16 images x 2 views = 2560
    monkeypatch.setattr(precision, "COMPILE_AUG_MIN_IMAGES", 2560)
    assert _runner(cfg_factory, "train.epochs=20", "train.compile_aug=auto")[3].compile_aug
    assert not _runner(cfg_factory, "train.epochs=19", "train.compile_aug=auto")[3].compile_aug
    assert not _runner(cfg_factory, "train.epochs=20")[3].compile_aug  # off by default
    monkeypatch.setattr(precision, "cxx_available", lambda: False)
    assert not _runner(cfg_factory, "train.epochs=20", "train.compile_aug=auto")[3].compile_aug


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

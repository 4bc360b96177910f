"""Host facts (ablate.run.hardware): where ``auto`` picks bf16, channels_last and compiled colour ops, the peak
FLOP/s of a CPU, and the cpu_id a VM's model name hides."""

import pytest
import torch
from test_step import _runner

from ablate.run import hardware as precision

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

"""What a training step computes in: ``train.precision``, ``train.channels_last`` and ``train.compile_aug``
resolved for the device.

bf16 autocast pays only where the hardware multiplies bf16 natively: CUDA GPUs with bf16 support, CPUs with
AVX512_BF16 or AMX (x86) or FEAT_BF16 (Arm). Elsewhere torch emulates it and it is slower than fp32, so
``auto`` falls back to fp32 there. Autocast covers the encoder, heads and predictor; the loss terms, the
diagnostics, the EMA update and the linear probe run in fp32 (docs/performance.md, "bf16 only where native").
"""

import functools
import os

import torch

from ..config import check_value

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve", "bf16")
NATIVE_BF16 = ("avx512_bf16", "amx_bf16", "bf16")  # /proc/cpuinfo names; "bf16" is Arm's FEAT_BF16


@functools.cache
def cpuinfo_fields() -> dict[str, str]:
    """The first value of each key of /proc/cpuinfo (the first processor's, on x86), read once per process;
    empty where unreadable."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip():
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_info() -> tuple[str, frozenset[str], float | None]:
    """(model name, instruction-set flags, clock in GHz or None) from /proc/cpuinfo; empty where unreadable."""
    fields = cpuinfo_fields()
    flags = (fields.get("flags") or fields.get("Features") or "").split()  # Arm names them Features
    try:
        mhz = float(fields["cpu MHz"])
    except (KeyError, ValueError):
        mhz = None
    return fields.get("model name", "unknown"), frozenset(flags), (mhz / 1000 if mhz else None)


def cpu_id() -> str | None:
    """Vendor, family, model and stepping from /proc/cpuinfo ("AuthenticAMD family 25 model 17 stepping 1"):
    names the core where the model name does not (a VM's "AMD EPYC"), so a reader can tell what the hardware
    could do from what the flags, which a hypervisor may mask, let it do."""
    fields = cpuinfo_fields()
    if "cpu family" not in fields:
        return None
    return (f"{fields.get('vendor_id', '?')} family {fields['cpu family']} model {fields.get('model', '?')} "
            f"stepping {fields.get('stepping', '?')}")


def native_bf16(device: torch.device, flags: set[str] | None = None) -> bool:
    """Whether ``device`` multiplies bf16 in hardware (CUDA: torch says so; CPU: an instruction-set flag)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(set(NATIVE_BF16) & (cpu_info()[1] if flags is None else flags))


def resolve(precision: str, device: torch.device, flags: set[str] | None = None) -> str:
    """``fp32`` or ``bf16``: ``auto`` is bf16 where the device has native bf16, else fp32; an explicit value
    is kept (bf16 on a CPU without it runs, emulated and slower)."""
    check_value("train.precision", precision)  # the one check of the value (config.RULES)
    if precision == "auto":
        return "bf16" if native_bf16(device, flags) else "fp32"
    return precision


def channels_last(value, device: torch.device, precision: str) -> bool:
    """``auto``: on for CUDA and CPUs (cuDNN and oneDNN convolutions run faster in NHWC, in fp32 and bf16;
    docs/performance.md, "Channels last"), off elsewhere (MPS)."""
    check_value("train.channels_last", value)  # the one check of the value (config.RULES)
    if value == "auto":
        return device.type in ("cuda", "cpu")
    return bool(value)


# Views a run must augment for ``auto`` to compile (docs/performance.md, "The compile switches"): the fused colour ops
# save about 16 us a view, so 100k views repay about a compile from inductor's cache (1.7-1.9 s), not a cold
# one (about 12 s).
COMPILE_AUG_MIN_IMAGES = 100_000


def cxx_available() -> bool:
    """Whether inductor finds the C++ compiler it builds CPU kernels with."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return bool(get_cpp_compiler())
    except Exception:  # noqa: BLE001 - no compiler, or an inductor without this helper
        return False


def compile_aug(value, device: torch.device, images: int) -> bool:
    """``train.compile_aug``: ``auto`` compiles the colour ops (``augment.compiled_colour_ops``) on a CPU with a
    C++ compiler when the run augments at least ``COMPILE_AUG_MIN_IMAGES`` images (both views counted); an
    explicit true or false is kept."""
    check_value("train.compile_aug", value)  # the one check of the value (config.RULES)
    if value == "auto":
        return device.type == "cpu" and images >= COMPILE_AUG_MIN_IMAGES and cxx_available()
    return value


def deterministic_kernels() -> None:
    """``train.deterministic`` on a CPU: deterministic kernels, without the NaN fill of every new tensor that
    torch adds to them (``torch.utils.deterministic.fill_uninitialized_memory``). The fill only exposes ops that
    read memory they never wrote, changes no result (``tests/test_cli.py``) and costs a write pass over every
    new tensor (docs/performance.md, "Deterministic kernels without the NaN fill")."""
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False


def host() -> dict:
    """The machine a figure or a run comes from: CPU model and id, whether a hypervisor runs it, the
    instruction-set flags that matter and the kernels torch dispatches to, clock, cores, torch threads, the load
    average, torch and CUDA device. Runs are deterministic per CPU and threads."""
    model, flags, ghz = cpu_info()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu": model, "cpu_id": cpu_id(), "hypervisor": "hypervisor" in flags,
            "isa": [f for f in ISA_FLAGS if f in flags], "kernels": torch.backends.cpu.get_cpu_capability(),
            "ghz": ghz, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "loadavg": [round(x, 2) for x in load],
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # None: the OpenMP runtime's default
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


# FLOP per cycle per core of fused multiply-adds: lanes x 2 (multiply and add) x FMA units. The unit count is
# not in /proc/cpuinfo; 2 is right for recent Intel server cores and AMD Zen 2-5, 1 for older or smaller cores.
LANES_FP32 = (("avx512f", 16), ("avx2", 8), ("asimd", 4))
# Cores that decode AVX-512 but execute it on 256-bit pipes, two passes per instruction: 8 fp32 lanes a cycle.
# AMD family 25 (0x19) is Zen 3 and Zen 4; only Zen 4 has AVX-512. Zen 5 (family 26) has 512-bit pipes.
HALF_WIDTH_AVX512 = ("AuthenticAMD family 25 ",)


def fp32_lanes(info: dict) -> int:
    """fp32 lanes per FMA unit and cycle: the widest SIMD the flags show, halved on a core that runs AVX-512
    on 256-bit pipes (``cpu_id``)."""
    lanes = next((n for flag, n in LANES_FP32 if flag in info["isa"]), 1)
    if lanes == 16 and (info.get("cpu_id") or "").startswith(HALF_WIDTH_AVX512):
        return 8
    return lanes


def peak_flops(info: dict, fma_units: int = 2) -> dict:
    """The CPU's theoretical peak from ``host()``: cores x clock x FLOP/cycle, fp32 and (native only) bf16."""
    lanes = fp32_lanes(info)
    per_cycle = lanes * 2 * fma_units
    ghz, cores = info.get("ghz"), info.get("cores") or 1
    fp32 = cores * ghz * 1e9 * per_cycle if ghz else None
    # AVX512_BF16's vdpbf16ps: two bf16 products per fp32 lane, so twice the fp32 rate; AMX is far above both
    bf16 = 2 * fp32 if fp32 and "avx512_bf16" in info["isa"] else None
    return {"fp32_flop_per_cycle": per_cycle, "fma_units": fma_units, "fp32_tflops": fp32 and fp32 / 1e12,
            "bf16_tflops": bf16 and bf16 / 1e12, "formula": f"{cores} cores x {ghz} GHz x {per_cycle} FLOP/cycle "
            f"({lanes} fp32 lanes x 2 x {fma_units} FMA units)"}

"""`python -m ablate.bench` end to end on a tiny setting: every sub-benchmark runs and its JSON line holds the
figures other tools read. No timing assertions: speed goals live in the benchmark output."""

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

TINY = ["--rounds", "1", "--warmup", "0", "--steps", "1", "--images", "64", "--aug-batch", "32", "--workers", "1",
        "backbone.widths=[4,8,8,16]", "model.head_width_mult=0.01", "train.batch_size=16", "data.train_size=64",
        "data.test_size=32", "eval.bank_size=64", "device=cpu"]
ROOT = Path(__file__).resolve().parents[1]


def bench(capsys, *args) -> subprocess.CompletedProcess:
    """``python -m ablate.bench ARGS`` in this process (a subprocess would add only the interpreter's start): its
    output; a failure raises."""
    from ablate.bench import main

    capsys.readouterr()
    main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["ablate.bench", *args], 0, out.out, out.err)


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_bench_all_prints_each_table_and_the_final_json_line(capsys):
    r = bench(capsys, "all", "--method", "byol", *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = _json_lines(r.stdout)
    assert [x["bench"] for x in lines] == ["aug", "step", "epoch", "all"]
    assert r.stdout.strip().splitlines()[-1].startswith('{"bench": "all"')  # the JSON line ends the output
    final = lines[-1]
    for key in ("speedup_vs_torchvision", "speedup_vs_kornia", "overhead_vs_bare", "speedup_vs_reference"):
        assert math.isfinite(final[key]) and final[key] > 0, key
    aug, step, epoch = lines[:3]
    for line in lines:  # what the figures were measured on
        m = line["machine"]
        assert m["cores"] >= 1 and len(m["loadavg"]) == 3 and m["torch_threads"] >= 1 and isinstance(m["isa"], list)
        assert isinstance(m["hypervisor"], bool) and "cpu_id" in m and m["kernels"]
    if lines[0]["machine"]["loadavg"][0] > lines[0]["machine"]["cores"] / 2:
        assert "warning: load average" in r.stderr
    assert aug["suite_img_s"] > 0 and aug["torchvision_img_s"] > 0 and aug["kornia_img_s"] > 0
    assert aug["speedup_vs_torchvision"] == pytest.approx(aug["suite_img_s"] / aug["torchvision_img_s"])
    assert aug["torchvision_threads"] == epoch["reference_threads"]
    assert step["method"] == "byol" and step["batch"] == 16
    assert epoch["images"] == 64 and epoch["flops_per_step"] > 0 and epoch["peak_mem_mb"] > 0
    assert epoch["speedup_vs_reference"] == pytest.approx(epoch["reference_epoch_s"] / epoch["epoch_s"])
    assert epoch["model_only_epoch_s"] > 0
    assert epoch["reference_workers"] == 1  # TINY's --workers; its main process gets the cores that leaves
    assert epoch["reference_threads"] == max(1, epoch["machine"]["torch_threads"] - 1)
    assert epoch["speedup_ceiling"] == pytest.approx(epoch["reference_epoch_s"] / epoch["model_only_epoch_s"])
    assert epoch["reference_model_only_epoch_s"] > 0
    assert epoch["reference_model_share"] == pytest.approx(
        epoch["reference_model_only_epoch_s"] / epoch["reference_epoch_s"])
    assert epoch["thread_speedup"] == pytest.approx(
        epoch["reference_model_only_epoch_s"] / epoch["model_only_epoch_s"])
    assert epoch["compile_aug"] is False and not aug["compile_aug"]  # too short a run to repay a compile
    assert epoch["compile"] is False  # train.compile's default: the step eager
    if "peak_fraction" in epoch:  # a CPU whose peak the flags give
        assert epoch["peak_fraction"] == pytest.approx(epoch["tflops"] / epoch["fp32_peak_tflops"])
        assert epoch["model_only_peak_fraction"] == pytest.approx(
            epoch["peak_fraction"] * epoch["epoch_s"] / epoch["model_only_epoch_s"])
    if epoch["precision"] == "bf16" and "avx512_bf16" in epoch["machine"]["isa"]:  # native bf16: its own peak
        assert "peak_fraction" not in epoch and epoch["bf16_peak_tflops"] > 0
        assert epoch["bf16_peak_fraction"] == pytest.approx(epoch["tflops"] / epoch["bf16_peak_tflops"])
        assert epoch["model_only_bf16_peak_fraction"] == pytest.approx(
            epoch["bf16_peak_fraction"] * epoch["epoch_s"] / epoch["model_only_epoch_s"])
    for name in ("suite", "torchvision", "kornia", "runner (Stepper)", "bare loop", "reference (torchvision"):
        assert name in r.stdout


def test_bench_aug_times_compiled_colour_ops_beside_eager_ones(capsys):
    r = bench(capsys, "aug", "--no-kornia", *TINY, "train.compile_aug=true")
    assert r.returncode == 0, r.stderr[-2000:]
    (aug,) = _json_lines(r.stdout)
    assert aug["compile_aug"] is True and aug["compile_s"] > 0 and "suite, eager colour ops" in r.stdout
    assert aug["compile_speedup"] == pytest.approx(aug["suite_img_s"] / aug["suite_eager_img_s"])
    assert aug["speedup_vs_torchvision_eager"] == pytest.approx(aug["suite_eager_img_s"] / aug["torchvision_img_s"])


def test_bench_profile_splits_the_step_into_stages_in_fp32_and_bf16(capsys):
    r = bench(capsys, "profile", "--method", "byol", *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    (line,) = _json_lines(r.stdout)
    assert line["bench"] == "profile" and line["batch"] == 16
    for prec in ("fp32", "fp32_other_layout", "bf16"):
        p = line[prec]
        # byol with its EMA target: every stage ran; the stages and the rest add up to the step
        assert set(p["stages_s"]) == {"aug", "backbone", "heads", "target", "loss", "backward", "optimizer", "ema",
                                      "other"}
        assert all(v > 0 for k, v in p["stages_s"].items() if k != "other"), p["stages_s"]
        assert sum(p["stages_s"].values()) == pytest.approx(p["step_s"], rel=1e-6) or p["stages_s"]["other"] == 0
        assert p["flops_per_step"] > 0 and p["tflops"] > 0
    assert line["bf16"]["channels_last"] and line["bf16"]["precision"] == "bf16"
    assert line["fp32_other_layout"]["channels_last"] is not line["fp32"]["channels_last"]
    assert line["other_layout_speedup"] == pytest.approx(line["fp32"]["step_s"] / line["fp32_other_layout"]["step_s"])
    assert line["bf16_speedup"] == pytest.approx(line["fp32"]["step_s"] / line["bf16"]["step_s"])
    if line["machine"]["ghz"]:
        assert line["peak"]["fp32_tflops"] > 0 and 0 < line["fp32_peak_fraction"]
        assert line["peak"]["sgemm_tflops"] > 0 and "fp32 matrix product (2048^3)" in r.stdout
        assert line["fp32_sgemm_fraction"] == pytest.approx(line["fp32"]["tflops"] / line["peak"]["sgemm_tflops"])
        turbo = line["peak"]["sgemm_tflops"] > line["peak"]["fp32_tflops"]  # a clock above the nominal one
        assert ("above the stated peak" in r.stdout) is turbo
    for stage in ("backbone", "backward", "optimizer", "step"):
        assert f"\n{stage}" in r.stdout
    ops = line["fp32"]["ops"]  # the fp32 step by op class; the other two are not broken down
    assert set(ops) == {"conv", "matmul", "norm_act", "other"} and "ops" not in line["bf16"]
    assert sum(o["share"] for o in ops.values()) == pytest.approx(1) and all(o["s"] > 0 for o in ops.values())
    assert ops["conv"]["tflops"] > 0 and ops["matmul"]["tflops"] > 0 and ops["norm_act"]["tflops"] is None
    assert "by op (torch profiler" in r.stdout


@pytest.mark.parametrize("name,cls", [
    ("aten::mkldnn_convolution", "conv"), ("aten::convolution_backward", "conv"), ("aten.convolution", "conv"),
    ("aten::_slow_conv2d_forward", "conv"), ("aten::conv_depthwise2d", "conv"), ("aten::cudnn_convolution", "conv"),
    ("aten::_convert_indices_from_coo_to_csr", "other"), ("aten::mm", "matmul"), ("aten.addmm", "matmul"),
    ("aten::bmm", "matmul"), ("aten::native_batch_norm_backward", "norm_act"), ("aten::threshold_backward", "norm_act"),
    ("aten::clamp_min_", "norm_act"), ("aten::clamp_", "other"), ("aten::grid_sampler_2d", "other"),
    ("autograd::engine::evaluate_function: ConvolutionBackward0", "other")])
def test_op_class_sorts_profiler_events_and_flop_counter_ops(name, cls):
    from ablate.bench import op_class

    assert op_class(name) == cls


@pytest.mark.parametrize("args,name", [(["--rounds", "0"], "--rounds"), (["--aug-batch", "0"], "--aug-batch"),
                                       (["--images", "-1"], "--images"), (["--steps", "-3"], "--steps"),
                                       (["--workers", "-1"], "--workers"), (["nonsense"], "nonsense")])
def test_bench_rejects_bad_arguments_in_one_line(args, name, capsys):
    from ablate import bench

    with pytest.raises(SystemExit) as e:
        bench.main(["aug", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and name in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.default_threads  # the machine's thread count: more than one where the machine has the cores
def test_the_reference_main_process_gets_the_cores_its_workers_leave():
    from argparse import Namespace

    from ablate.bench import reference_threads

    cpu, cuda, n = torch.device("cpu"), torch.device("cuda"), torch.get_num_threads()
    assert reference_threads(Namespace(ref_threads=0, workers=0), cpu) == n  # no workers: every thread
    assert reference_threads(Namespace(ref_threads=0, workers=n + 3), cpu) == 1  # never fewer than one
    if n > 1:
        assert reference_threads(Namespace(ref_threads=0, workers=1), cpu) == n - 1
    assert reference_threads(Namespace(ref_threads=3, workers=2), cpu) == 3  # --ref-threads wins
    assert reference_threads(Namespace(ref_threads=0, workers=2), cuda) == n  # a GPU loop's threads feed it


class _Compiled(torch.nn.Module):
    """What the test's torch.compile returns: the module, counting the calls that go through the compiled form."""

    def __init__(self, module):
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, *args):
        self.calls += 1
        return self.module(*args)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def test_under_train_compile_the_peer_loops_step_through_a_compiled_model_too(monkeypatch, capsys):
    """The runner's step compiled and the peers' eager would credit the compile to the suite: `step`'s bare loop
    runs through the runner's compiled forward, and `epoch`'s reference compiles its own copy of the model."""
    from ablate import bench

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(_Compiled(module)) or compiled[-1])
    bench.main(["step", *TINY, "train.compile=true"])
    modules = lambda: [c for c in compiled if isinstance(c.module, torch.nn.Module)]  # noqa: E731 - not opt/EMA steps
    (runner,) = modules()
    assert runner.calls == 3  # one step each: the runner, the bare loop, the bare loop on precomputed views
    compiled.clear()
    bench.main(["epoch", *TINY, "train.compile=true"])
    runner, reference = modules()
    assert reference.module is not runner.module and type(reference.module) is type(runner.module)
    assert runner.calls == reference.calls > 0  # the same steps an epoch on either side, two sides each
    assert _json_lines(capsys.readouterr().out)[-1]["compile"] is True

"""``python -m ablate.bench {aug,step,epoch,profile,graphs,all}``: the suite's speed against the way peers do the same work.

Each sub-benchmark runs both sides in one process, alternating (warmup, then A B A B ...), so a machine
shared with other jobs slows both alike; it prints a table and ends with one JSON line of its figures.
A ``speedup_*`` above 1 means the suite is faster; ``overhead_vs_bare`` is the runner's step time over a
plain loop's.

    aug    two-view augmentation: the suite's batched ops vs torchvision's PIL transforms in a DataLoader
           with every core as a worker (its main process on the cores they leave), and vs kornia's per-sample
           augmentation (same recipe, same images); the suite's colour ops as a run of the config gets them
           (``train.compile_aug``), and eager too
    step   the runner's training step (ablate.run.step.Stepper) vs a bare loop doing the same augmentation,
           forward, backward and optimizer step on the same model and batch
    epoch  an end-to-end two-view epoch of the runner vs the peer-library loop (torchvision transforms in a
           DataLoader, then the same model, optimizer and batch size; its main process on the cores its
           workers leave, its fastest setting on a CPU), and each side's steps alone on precomputed views, which
           say what bounds each loop; under ``train.compile`` both sides' models run compiled
    graphs the compiled step's graph and break counts (forward + loss, optimizer, EMA update) for all 64
           settings of the six switches: 1/0 each means ``train.compile`` traces every part whole
    profile  the runner's step split by stage (augmentation, backbone, heads, EMA target, loss, backward,
           optimizer, EMA update) in fp32 and in bf16 autocast, with achieved FLOP/s against the CPU's peak;
           on a CPU the fp32 step by op class too (convolutions, matrix products, batch norm and ReLU, the
           rest), with each class's FLOP rate (``all`` runs aug, step and epoch)

Trailing ``key=value`` arguments are Hydra overrides of the run config (default ``+method=simsiam``,
``scale=cpu``: the embedded shapes data, small CNN, 32 px), e.g. ``data=npz data.path=...`` for CIFAR-10.
"""

import argparse
import contextlib
import copy
import itertools
import json
import os
import re
import resource
import statistics
import sys
import time

import numpy as np
import torch

from .augment import colour_ops, two_views
from .config import check_config
from .data import load_data
from .errors import AblateError
from .method import TERMS
from .run.cli import check_overrides
from .run.dist import pick_device
from .run.hardware import host, peak_flops
from .run.step import build_runner, lookahead, optimizer_for
from .stages import STAGES, recording


def compose_cfg(method: str, overrides: list[str]):
    from hydra import compose, initialize_config_module

    with initialize_config_module("ablate.conf", version_base="1.3"):
        return compose("config", overrides=[f"+method={method}", *overrides])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def alternate(sides: dict, rounds: int, warmup: int, device) -> dict:
    """Run every side's callable ``warmup`` times, then ``rounds`` times in turn; seconds per call."""
    times = {k: [] for k in sides}
    for r in range(warmup + rounds):
        for name, fn in sides.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def table(title: str, rows: list[tuple]) -> None:
    print(f"\n{title}")
    print(f"{'side':<34}{'median s':>10}{'min s':>10}{'images/s':>12}{'ratio':>8}")
    for name, ts, n_img, ratio in rows:
        print(f"{name:<34}{statistics.median(ts):>10.4f}{min(ts):>10.4f}{n_img / statistics.median(ts):>12.0f}"
              f"{ratio:>8.2f}")


def reference_threads(args, device) -> int:
    """Torch threads of a DataLoader side's main process: ``--ref-threads``, or on a CPU the cores its
    workers leave (at least one), the setting that ran the epoch's reference fastest (docs/performance.md, "The
    reference at its best")."""
    if args.ref_threads:
        return args.ref_threads
    if device.type != "cpu":
        return torch.get_num_threads()
    return max(1, torch.get_num_threads() - args.workers)


@contextlib.contextmanager
def torch_threads(n: int):
    """Torch's intra-op threads set to ``n`` inside the block, restored after it."""
    own = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(own)


# ------------------------------------------------------------------------------------- peer pipelines
def torchvision_views(aug, size: int, mean, std):
    """The suite's recipe as torchvision per-image transforms, one Compose per view (as solo-learn/lightly)."""
    import torchvision.transforms as T

    def view(v):
        ops = [T.RandomResizedCrop(size, scale=tuple(aug.crop_scale), ratio=tuple(aug.crop_ratio)),
               T.RandomHorizontalFlip(aug.flip_p),
               T.RandomApply([T.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue)], p=aug.jitter_p),
               T.RandomGrayscale(aug.gray_p)]
        if aug.blur_p[v] > 0:
            k = 2 * int(0.05 * size) + 1
            ops.append(T.RandomApply([T.GaussianBlur(k, tuple(aug.blur_sigma))], p=aug.blur_p[v]))
        if aug.solarize_p[v] > 0:
            ops.append(T.RandomSolarize(128, p=aug.solarize_p[v]))
        ops += [T.ToTensor(), T.Normalize(mean.tolist(), std.tolist())]
        return T.Compose(ops)

    return view(0), view(1)


class TwoViewDataset(torch.utils.data.Dataset):
    """uint8 HWC arrays turned into PIL images per item, as torchvision's CIFAR10 dataset does."""

    def __init__(self, images_nchw: torch.Tensor, views):
        self.arrays = images_nchw.permute(0, 2, 3, 1).contiguous().numpy()
        self.views = views

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.arrays[i])
        return self.views[0](img), self.views[1](img)


def torchvision_loader(images, aug, size, mean, std, batch, workers, shuffle=False, drop_last=False):
    ds = TwoViewDataset(images.cpu(), torchvision_views(aug, size, mean.cpu(), std.cpu()))
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=shuffle, drop_last=drop_last,
                                       num_workers=workers, persistent_workers=workers > 0,
                                       pin_memory=torch.cuda.is_available())


def kornia_views(aug, size: int, mean, std):
    """The same recipe with kornia.augmentation (per-sample parameters, batched), one pipeline per view."""
    import kornia.augmentation as K

    def view(v):
        ops = [K.RandomResizedCrop((size, size), scale=tuple(aug.crop_scale), ratio=tuple(aug.crop_ratio)),
               K.RandomHorizontalFlip(p=aug.flip_p),
               K.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue, p=aug.jitter_p),
               K.RandomGrayscale(p=aug.gray_p)]
        if aug.blur_p[v] > 0:
            k = 2 * int(0.05 * size) + 1
            ops.append(K.RandomGaussianBlur((k, k), tuple(aug.blur_sigma), p=aug.blur_p[v]))
        if aug.solarize_p[v] > 0:
            ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=aug.solarize_p[v]))
        ops.append(K.Normalize(mean, std))
        return torch.nn.Sequential(*ops)

    return view(0), view(1)


# -------------------------------------------------------------------------------------- benchmarks
def bench_aug(cfg, data, device, args) -> dict:
    images = data.ssl_x[: args.images] if args.images else data.ssl_x
    n, bs, size, aug = len(images), args.aug_batch, cfg.data.image_size, cfg.aug
    mean, std = data.mean, data.std
    batches = [images[i:i + bs] for i in range(0, n, bs)]
    colour = build_runner(cfg, data, device)[1].colour  # the colour ops a run of this config uses

    def suite(colour=colour):
        for b in batches:
            two_views(b, aug, size, mean, std, colour)

    compiled = colour is not colour_ops
    if compiled:  # the first call compiles (one graph per view and batch shape); timed apart from the rounds
        t0 = time.perf_counter()
        suite()
        compile_s = time.perf_counter() - t0
    loader = torchvision_loader(images, aug, size, mean, std, bs, args.workers)
    tv_threads = reference_threads(args, device)

    def tv():
        with torch_threads(tv_threads):
            for x1, x2 in loader:
                x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)

    if not args.no_kornia:
        try:
            k1, k2 = (v.to(device) for v in kornia_views(aug, size, mean, std))
        except ImportError:
            print("ablate.bench: kornia is not installed (pip install -e '.[bench]'); its side is left out",
                  file=sys.stderr)
            args.no_kornia = True

    def kornia():
        with torch.no_grad():
            for b in batches:
                x = b.float().div(255)
                k1(x), k2(x)

    sides = {"suite": suite, "torchvision": tv, "kornia": kornia}
    if compiled:
        sides["suite, eager colour ops"] = lambda: suite(colour_ops)
    if args.no_kornia:
        del sides["kornia"]
    t = alternate(sides, args.rounds, args.warmup, device)
    med = {k: statistics.median(v) for k, v in t.items()}
    table(f"aug: two views of {n} uint8 {size}px images, batch {bs}, {torch.get_num_threads()} torch threads, "
          f"{device}; torchvision: {args.workers} DataLoader workers, {tv_threads} threads",
          [(k, t[k], n, med[k] / med["suite"]) for k in t])
    out = {"bench": "aug", "images": n, "batch": bs, "workers": args.workers, "torchvision_threads": tv_threads,
           "suite_img_s": n / med["suite"], "torchvision_img_s": n / med["torchvision"],
           "speedup_vs_torchvision": med["torchvision"] / med["suite"], "compile_aug": compiled}
    if compiled:
        eager = med["suite, eager colour ops"]
        out.update(suite_eager_img_s=n / eager, speedup_vs_torchvision_eager=med["torchvision"] / eager,
                   compile_speedup=eager / med["suite"], compile_s=compile_s)
    if "kornia" in med:
        out.update(kornia_img_s=n / med["kornia"], speedup_vs_kornia=med["kornia"] / med["suite"])
    return out


def plain_step(model, opt, x1, x2, bf16: bool, tau) -> torch.Tensor:
    """The baselines' training step, as a peer library writes it: forward under autocast, backward, optimizer
    step, EMA update at ``tau``. Returns the loss."""
    with torch.autocast(x1.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss, _ = model(x1, x2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    model.momentum_update(tau)
    return loss


def bench_step(cfg, data, device, args) -> dict:
    model, stepper = build_runner(cfg, data, device)
    batch = data.ssl_x[: stepper.batch_size]
    # the bare loop: the same model, its own optimizer of the same kind over the same groups
    opt = optimizer_for(model, cfg.optim, stepper.base_lr)
    aug, size, mean, std = cfg.aug, cfg.data.image_size, data.mean, data.std
    fmt, bf16 = stepper.mem_format, stepper.bf16
    views = [v.contiguous(memory_format=fmt) for v in two_views(batch, aug, size, mean, std)]

    def bare(x1, x2):  # through the runner's forward: compiled too under train.compile
        plain_step(stepper.forward, opt, x1, x2, bf16, 0.99)

    def runner():  # as the training loop: each step told the next one's batch
        with stepper.main_threads():
            for i in range(args.steps):
                stepper(batch, batch if i < args.steps - 1 else None)

    def bare_loop():
        for _ in range(args.steps):
            x1, x2 = two_views(batch, aug, size, mean, std, stepper.colour)
            bare(x1.contiguous(memory_format=fmt), x2.contiguous(memory_format=fmt))

    def bare_no_aug():
        for _ in range(args.steps):
            bare(*views)

    t = alternate({"runner (Stepper)": runner, "bare loop": bare_loop, "bare loop, views precomputed": bare_no_aug},
                  args.rounds, args.warmup, device)
    med = {k: statistics.median(v) for k, v in t.items()}
    n = args.steps * len(batch)
    table(f"step: {args.steps} steps of batch {len(batch)}, {cfg.method.name}, {cfg.backbone.name}, "
          f"{cfg.optim.name}, {device}", [(k, t[k], n, med[k] / med["bare loop"]) for k in t])
    r, b, b0 = med["runner (Stepper)"], med["bare loop"], med["bare loop, views precomputed"]
    return {"bench": "step", "method": cfg.method.name, "batch": len(batch), "steps": args.steps,
            "runner_step_s": r / args.steps, "bare_step_s": b / args.steps, "overhead_vs_bare": r / b,
            "overhead_vs_bare_no_aug": r / b0, "aug_share_of_step": max(0.0, (b - b0) / b),
            "view_parallel": stepper.view_parallel}


def flop_counts(model, x1, x2) -> dict[str, float]:
    """FLOPs of one forward + backward of the two views by op, e.g. ``aten.convolution`` (torch's FLOP
    counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model)
    with FlopCounterMode(display=False) as fc:
        loss, _ = probe(x1, x2)
        loss.backward()
    return {str(op): float(n) for op, n in fc.get_flop_counts()["Global"].items()}


def step_flops(model, x1, x2) -> float:
    return sum(flop_counts(model, x1, x2).values())


OP_CLASSES = {"conv": "convolutions", "matmul": "matrix products", "norm_act": "batch norm and ReLU",
              "other": "the rest"}


def op_class(name: str) -> str:
    """The class of a profiler event or FLOP-counter op (``aten::mkldnn_convolution``, ``aten.mm``)."""
    op = re.sub(r"^aten(::|\.)", "", name)
    if re.search(r"conv(olution|[123]d|_)", op):
        return "conv"
    if op in ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear"):
        return "matmul"
    if "batch_norm" in op or op in ("relu", "relu_", "clamp_min", "clamp_min_", "threshold_backward"):
        return "norm_act"
    return "other"


def op_breakdown(stepper, batch, steps: int, flops: dict[str, float]) -> dict:
    """Seconds a step by op class, each op's own time in torch's profiler (on a CPU, its wall time on the calling
    thread, intra-op threads included), and the FLOP rate of the classes that do the arithmetic: whether a step
    is bound by its convolutions or by what surrounds them."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            stepper(batch)
    secs = dict.fromkeys(OP_CLASSES, 0.0)
    for event in prof.key_averages():
        secs[op_class(event.key)] += event.self_cpu_time_total / 1e6 / steps
    work = dict.fromkeys(OP_CLASSES, 0.0)
    for op, n in flops.items():
        work[op_class(op)] += n
    total = sum(secs.values())
    return {k: {"s": secs[k], "share": secs[k] / total,
                "tflops": work[k] / secs[k] / 1e12 if work[k] and secs[k] else None} for k in OP_CLASSES}


def bench_epoch(cfg, data, device, args) -> dict:
    torch.manual_seed(cfg.seed)
    model, stepper = build_runner(cfg, data, device)
    images = data.ssl_x
    n_img = stepper.steps_per_epoch * stepper.batch_size
    aug, size, mean, std = cfg.aug, cfg.data.image_size, data.mean, data.std
    fmt, bf16 = stepper.mem_format, stepper.bf16
    ref_threads = reference_threads(args, device)
    x1, x2 = (v.contiguous(memory_format=fmt) for v in two_views(images[: stepper.batch_size], aug, size, mean, std))
    flops_step = step_flops(model, x1, x2)

    def runner():
        running = torch.zeros(len(TERMS), device=device)
        with stepper.main_threads():
            for batch, upcoming in lookahead(stepper.epoch_batches(images)):
                running += stepper(batch, upcoming)
        running.tolist()  # one host read per epoch, as the runner's log interval allows

    def model_only():  # the same steps on one batch's views, precomputed: what the model alone costs an epoch
        running = torch.zeros(len(TERMS), device=device)
        with stepper.main_threads():
            for _ in range(stepper.steps_per_epoch):
                running += stepper.update(x1, x2)
        running.tolist()

    sides = {"runner (device data + batched aug)": runner}
    if not args.no_reference:
        sides["runner, views precomputed (model only)"] = model_only
        ref_model = copy.deepcopy(model)
        opt = optimizer_for(ref_model, cfg.optim, stepper.base_lr)
        loader = torchvision_loader(images, aug, size, mean, std, stepper.batch_size, args.workers,
                                    shuffle=True, drop_last=True)

        tau = ref_model.target_tau(0, 1)
        ref_forward = torch.compile(ref_model) if stepper.compile else ref_model  # as the runner's step

        def reference(batches):
            with torch_threads(ref_threads):
                total = torch.zeros((), device=device)
                for r1, r2 in batches:
                    r1 = r1.to(device, non_blocking=True).contiguous(memory_format=fmt)
                    r2 = r2.to(device, non_blocking=True).contiguous(memory_format=fmt)
                    total += plain_step(ref_forward, opt, r1, r2, bf16, tau).detach()
                total.item()

        sides["reference (torchvision DataLoader)"] = lambda: reference(loader)
        # its step alone on its threads: the reference with a loader that costs nothing
        sides["reference, views precomputed"] = lambda: reference(itertools.repeat((x1, x2), stepper.steps_per_epoch))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = alternate(sides, args.rounds, args.warmup, device)
    med = {k: statistics.median(v) for k, v in t.items()}
    runner_s = med["runner (device data + batched aug)"]
    table(f"epoch: {n_img} images ({cfg.data.name}, {size}px), batch {stepper.batch_size}, {cfg.method.name}, "
          f"{cfg.backbone.name}, {device}" + ("" if args.no_reference else
                                                f"; reference: {args.workers} workers, {ref_threads} threads"),
          [(k, t[k], n_img, med[k] / runner_s) for k in t])
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        dev_name = torch.cuda.get_device_name(device)
    else:  # the process's peak resident set (Linux reports KiB)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        dev_name = "cpu"
    out = {"bench": "epoch", "method": cfg.method.name, "backbone": cfg.backbone.name, "data": cfg.data.name,
           "device": dev_name, "images": n_img, "batch": stepper.batch_size, "epoch_s": runner_s,
           "runner_img_s": n_img / runner_s, "peak_mem_mb": peak_mb, "flops_per_step": flops_step,
           "tflops": flops_step * stepper.steps_per_epoch / runner_s / 1e12, "precision": stepper.precision,
           "channels_last": fmt == torch.channels_last, "compile": stepper.compile,
           "compile_aug": stepper.compile_aug, "view_parallel": stepper.view_parallel}
    peak = peak_flops(host(), args.fma_units) if device.type == "cpu" else {}
    if peak.get("fp32_tflops") and not bf16:
        out.update(fp32_peak_tflops=peak["fp32_tflops"], peak_fraction=out["tflops"] / peak["fp32_tflops"])
    if peak.get("bf16_tflops") and bf16:  # against native bf16's own peak, not fp32's
        out.update(bf16_peak_tflops=peak["bf16_tflops"], bf16_peak_fraction=out["tflops"] / peak["bf16_tflops"])
    if not args.no_reference:
        ref_s = med["reference (torchvision DataLoader)"]
        model_s = med["runner, views precomputed (model only)"]
        # the reference trains the same model in the same precision and format, so free data and augmentation
        # would give the runner at most ref_s / model_s
        out.update(reference_epoch_s=ref_s, reference_img_s=n_img / ref_s, speedup_vs_reference=ref_s / runner_s,
                   model_only_epoch_s=model_s, speedup_ceiling=ref_s / model_s, reference_workers=args.workers,
                   reference_threads=ref_threads)
        # where the reference's workers hide its augmentation, its epoch is its step on its threads, and the
        # ceiling is what the runner's extra threads buy on the same step: at most threads / reference_threads
        ref_model_s = med["reference, views precomputed"]
        out.update(reference_model_only_epoch_s=ref_model_s, reference_model_share=ref_model_s / ref_s,
                   thread_speedup=ref_model_s / model_s)
        for key in ("peak_fraction", "bf16_peak_fraction"):
            if key in out:
                out[f"model_only_{key}"] = out[key] * runner_s / model_s
    print(f"{cfg.method.name}: {n_img / runner_s:.0f} images/s, epoch {runner_s:.2f} s, peak memory "
          f"{peak_mb:.0f} MiB, {out['tflops']:.3f} TFLOP/s ({dev_name})")
    return out


def profile_step(cfg, data, device, args, ops: bool = False) -> dict:
    """Median seconds per step, stage by stage (ablate.stages), of the runner built from ``cfg``; with ``ops``
    on a CPU, by op class as well (``op_breakdown``). The stages are those of the sequential step
    (``train.view_parallel=false``): split over two workers they overlap."""
    torch.manual_seed(cfg.seed)
    cfg = copy.deepcopy(cfg)
    cfg.train.view_parallel = False
    model, stepper = build_runner(cfg, data, device)
    batch = data.ssl_x[: stepper.batch_size]
    x1, x2 = (v.contiguous(memory_format=stepper.mem_format) for v in two_views(batch, cfg.aug, cfg.data.image_size,
                                                                                  data.mean, data.std))
    counts = flop_counts(model, x1, x2)
    flops = sum(counts.values())
    for _ in range(args.warmup * args.steps):
        stepper(batch)
    rounds = []
    for _ in range(args.rounds):
        with recording(device) as rec:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                stepper(batch)
            sync(device)
            rounds.append({**rec, "step": time.perf_counter() - t0})
    med = {k: statistics.median(r.get(k, 0.0) for r in rounds) / args.steps for k in ("step", *STAGES)}
    med["other"] = max(0.0, med["step"] - sum(med[k] for k in STAGES))
    out = {"step_s": med["step"], "stages_s": {k: med[k] for k in (*STAGES, "other")}, "precision": stepper.precision,
           "channels_last": stepper.mem_format == torch.channels_last, "flops_per_step": flops,
           "tflops": flops / med["step"] / 1e12, "batch": stepper.batch_size}
    if ops and device.type == "cpu":
        out["ops"] = op_breakdown(stepper, batch, args.steps, counts)
    return out


def sgemm_tflops(device, n: int = 2048, reps: int = 5) -> float:
    """The best rate of an n x n x n fp32 matrix product on ``device``: what its BLAS reaches, a practical
    ceiling next to the theoretical peak (a dense layer cannot beat it; a step of convolutions and
    memory-bound normalization stays below it)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(reps + 1):  # the first warms the BLAS up
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def bench_profile(cfg, data, device, args) -> dict:
    """Where a runner step goes, stage by stage, in fp32 with the memory format ``train.channels_last=auto``
    gives it, in fp32 with the other one, and in bf16 autocast; achieved FLOP/s against the device's peak."""
    info = host()
    peak = peak_flops(info, args.fma_units) if device.type == "cpu" else {}
    prof = {}
    for name, precision, layout in (("fp32", "fp32", "auto"), ("fp32_other_layout", "fp32", "flip"),
                                    ("bf16", "bf16", "auto")):
        c = copy.deepcopy(cfg)
        c.train.precision = precision
        if layout == "flip":
            c.train.channels_last = not prof["fp32"]["channels_last"]
        prof[name] = profile_step(c, data, device, args, ops=name == "fp32")
    names = list(prof)
    print(f"profile: {args.steps} steps x {args.rounds} rounds of batch {prof['fp32']['batch']}, {cfg.method.name}, "
          f"{cfg.backbone.name}, {device}; ms per step (share of the step)")
    label = {n: f"{prof[n]['precision']} {'NHWC' if prof[n]['channels_last'] else 'NCHW'}" for n in names}
    print(f"{'stage':<10}" + "".join(f"{label[n]:>18}" for n in names))
    for k in (*STAGES, "other", "step"):
        cells = [(prof[n]["stages_s"][k] if k != "step" else prof[n]["step_s"], prof[n]["step_s"]) for n in names]
        print(f"{k:<10}" + "".join(f"{1e3 * t:>11.1f} ({t / step:4.0%})" for t, step in cells))
    for n in names:
        p, key = prof[n], f"{prof[n]['precision']}_tflops"
        frac = p["tflops"] / peak[key] if peak.get(key) else None
        print(f"{label[n]}: {p['tflops']:.4f} TFLOP/s achieved" + (f", {frac:.0%} of the {peak[key]:.3f} TFLOP/s "
                                                                   f"peak" if frac else ""))
    if "ops" in prof["fp32"]:
        parts = []
        for k, o in prof["fp32"]["ops"].items():
            rate = f", {o['tflops']:.4f} TFLOP/s" if o["tflops"] else ""
            rate += f", {o['tflops'] / peak['fp32_tflops']:.0%} of the peak" if rate and peak.get("fp32_tflops") else ""
            parts.append(f"{OP_CLASSES[k]} {1e3 * o['s']:.1f} ms ({o['share']:.0%}{rate})")
        print(f"{label['fp32']} by op (torch profiler, each op's own time a step): " + "; ".join(parts))
    if peak:
        print(f"peak fp32: {peak['formula']}; bf16: " + ("2 x fp32 (AVX512_BF16)" if peak["bf16_tflops"] else
                                                        "no native bf16 on this CPU (emulated)"))
    if peak.get("fp32_tflops"):
        peak["sgemm_tflops"] = sgemm_tflops(device)
        print(f"fp32 matrix product (2048^3): {peak['sgemm_tflops']:.4f} TFLOP/s, "
              f"{peak['sgemm_tflops'] / peak['fp32_tflops']:.0%} of the peak; the fp32 step reaches "
              f"{prof['fp32']['tflops'] / peak['sgemm_tflops']:.0%} of it")
        if peak["sgemm_tflops"] > peak["fp32_tflops"]:
            print("  above the stated peak: the cores run faster than the nominal clock /proc/cpuinfo gives (turbo), "
                  "so fractions of the stated peak overstate; the matrix product's rate is the firmer ceiling")
    f = prof["fp32"]
    out = {"bench": "profile", "method": cfg.method.name, "backbone": cfg.backbone.name, "batch": f["batch"], **prof,
           "bf16_speedup": f["step_s"] / prof["bf16"]["step_s"],
           "other_layout_speedup": f["step_s"] / prof["fp32_other_layout"]["step_s"], "peak": peak}
    if peak.get("fp32_tflops"):
        out.update(fp32_peak_fraction=f["tflops"] / peak["fp32_tflops"], fp32_sgemm_fraction=f["tflops"] /
                   peak["sgemm_tflops"])
    return out


def bench_graphs(cfg, data, device, args) -> dict:
    """Graphs and graph breaks that torch.compile's tracer (``torch._dynamo.explain``) finds in the compiled
    step's three parts, for each of the 64 on/off settings of the six switches on ``--method``'s preset (the
    run config's model, a batch of 8): ``train.compile`` keeps each part one graph with no break."""
    from .method import JointEmbedding
    from .run.compiled import combinations, graph_counts, switch_overrides, whole

    rows, size = [], cfg.data.image_size
    print(f"{'switches on':<44}{'forward':>9}{'optimizer':>11}{'ema':>7}  (graphs/breaks)")
    for on in combinations():
        c = compose_cfg(args.method, [*args.overrides, *switch_overrides(on)])
        torch.manual_seed(c.seed)
        model = JointEmbedding(c).to(device)
        opt = optimizer_for(model, c.optim, 0.1, compiled=True)
        x1, x2 = (torch.randn(8, 3, size, size, device=device) for _ in range(2))
        counts = graph_counts(model, opt, x1, x2)
        names = ",".join(t for t, v in on.items() if v) or "(none)"
        cells = ["/".join(map(str, counts[part])) if part in counts else "-" for part in ("forward", "optimizer", "ema")]
        print(f"{names:<44}{cells[0]:>9}{cells[1]:>11}{cells[2]:>7}", flush=True)
        rows.append({"switches": on, **{k: list(v) for k, v in counts.items()}, "whole": whole(counts)})
    n_whole = sum(r["whole"] for r in rows)
    print(f"{n_whole}/{len(rows)} settings compile as one graph per part with no break ({cfg.method.name}, {device})")
    return {"bench": "graphs", "method": cfg.method.name, "device": str(device), "combinations": len(rows),
            "whole": n_whole, "rows": rows}


BENCHES = {"aug": bench_aug, "step": bench_step, "epoch": bench_epoch, "profile": bench_profile,
           "graphs": bench_graphs}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m ablate.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=[*BENCHES, "all"])
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the run config, e.g. data=npz data.path=...")
    p.add_argument("--method", default="simsiam", choices=["byol", "simsiam", "vicreg"])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per side (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds per side first")
    p.add_argument("--steps", type=int, default=10, help="training steps per round (step)")
    p.add_argument("--images", type=int, default=0, help="images per aug round (0 = the whole training set)")
    p.add_argument("--aug-batch", type=int, default=256, help="batch size of the aug benchmark")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="DataLoader workers of the peer side")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the main process (0 = torch's default)")
    p.add_argument("--ref-threads", type=int, default=0, help="aug, epoch: torch threads of the DataLoader side's main "
                                                              "process (0 = on a CPU the threads its workers leave, "
                                                              "at least 1)")
    p.add_argument("--no-kornia", action="store_true", help="skip the kornia side of aug")
    p.add_argument("--no-reference", action="store_true", help="epoch: time the runner only (GPU script)")
    p.add_argument("--fma-units", type=int, default=2, help="profile, epoch: FMA units per core for the peak (2 for recent "
                                                            "x86 server cores; docs/performance.md, The peak)")
    args = p.parse_intermixed_args(argv)
    bad = [o for o in args.overrides if "=" not in o and not o.startswith("~")]
    if bad:
        p.exit(2, f"ablate.bench: error: {' '.join(bad)} is not an override; write key=value or ~group\n")
    for name, low in (("rounds", 1), ("steps", 1), ("aug_batch", 1), ("warmup", 0), ("workers", 0), ("images", 0),
                      ("threads", 0), ("ref_threads", 0), ("fma_units", 1)):
        if getattr(args, name) < low:
            p.exit(2, f"ablate.bench: error: --{name.replace('_', '-')}={getattr(args, name)} must be >= {low}\n")
    if args.threads:
        torch.set_num_threads(args.threads)
    info = host()  # what the figures were measured on: under load they are not an idle machine's
    if info["loadavg"][0] > (info["cores"] or 1) / 2:
        print(f"ablate.bench: warning: load average {info['loadavg'][0]} on {info['cores']} cores: other jobs "
              f"share this machine, so absolute figures are low and ratios noisy; measure on an idle machine "
              f"before quoting them", file=sys.stderr)
    try:  # the run's own checks, before any compute: a bad override is one line and exit 2
        check_overrides([f"+method={args.method}", *args.overrides])
        cfg = compose_cfg(args.method, args.overrides)
        check_config(cfg)
    except AblateError as e:
        p.exit(2, f"ablate.bench: error: {e}\n")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    data = load_data(cfg.data, cfg.eval, cfg.seed).to(device)
    which = ["aug", "step", "epoch"] if args.which == "all" else [args.which]
    results = {}
    for name in which:
        res = {**BENCHES[name](cfg, data, device, args), "machine": info}
        print(json.dumps(res), flush=True)
        results[name] = res
        results.update({k: v for k, v in res.items() if k.startswith(("speedup", "overhead"))})
    if len(which) > 1:  # the headline figures, then each benchmark's own
        keys = ("speedup_vs_torchvision", "speedup_vs_kornia", "overhead_vs_bare", "speedup_vs_reference")
        print(json.dumps({"bench": "all", **{k: results[k] for k in keys if k in results}, **results, "machine": info}),
              flush=True)


if __name__ == "__main__":
    sys.exit(main())

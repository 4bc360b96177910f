"""On a CUDA GPU (skipped without one; scripts/gpu_check.sh runs them): a training step queues its kernels
without waiting on the device, and the compiled step (CUDA graphs included) trains like the eager one."""

import pytest
import torch
from conftest import TINY, make_cfg

from ablate.data import load_data
from ablate.run.step import build_runner

pytestmark = pytest.mark.cuda


def _runner(method: str, *overrides):
    cfg = make_cfg(f"+method={method}", *TINY, "device=cuda", "train.log_every=1000", *overrides)
    torch.manual_seed(0)
    data = load_data(cfg.data, cfg.eval, cfg.seed).to(torch.device("cuda"))
    _, stepper = build_runner(cfg, data, torch.device("cuda"))
    return stepper, data


@pytest.mark.parametrize("method,compile", [("byol", "false"), ("simsiam", "false"), ("vicreg", "false"),
                                            ("byol", "true"), ("vicreg", "reduce-overhead")])
def test_training_steps_never_wait_on_the_gpu(method, compile):
    """torch.cuda.set_sync_debug_mode('error') raises at any host sync (an .item(), a host-to-device copy of a
    Python list, a boolean mask's nonzero): the steps between two log_every reads have none."""
    stepper, data = _runner(method, f"train.compile={compile}")
    batches = stepper.epoch_batches(data.ssl_x)
    stepper(next(batches))  # the first step compiles and lets cudnn pick its kernels
    stepper(next(batches))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches:
            terms = stepper(batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(terms).all()


@pytest.mark.parametrize("compile", ["true", "reduce-overhead"])
def test_compiled_step_on_cuda_gives_the_eager_loss_curve(compile):
    curves = {}
    for mode in ("false", compile):
        stepper, data = _runner("byol", f"train.compile={mode}", "train.precision=fp32")
        curves[mode] = torch.stack([stepper(b) for b in stepper.epoch_batches(data.ssl_x)]).cpu()
    assert torch.allclose(curves[compile], curves["false"], rtol=1e-3, atol=1e-4), curves

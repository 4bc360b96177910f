"""torch.distributed for ``torchrun --nproc_per_node=N -m ablate ...``: one model, N shards of each batch.

Every rank holds the whole dataset and takes its slice of each global batch (one permutation, broadcast from
rank 0). Gradients are averaged by DistributedDataParallel; batch statistics (batch norm, the variance and
covariance terms) are taken over the global batch, so N ranks at batch B/N train the same model as one
process at batch B. Without a process group every helper is the identity.
"""

import os

import torch
import torch.distributed as dist
from torch import nn

from ..collective import gather, mean, world  # noqa: F401  (the run's view of the process group)
from .launch import check_launch  # torch-free, so the command line checks it before importing torch


def setup(cfg) -> bool:
    """Join the process group torchrun (or a multi-task submitit job) describes: NCCL on GPUs, gloo on CPUs.
    Returns True when this call created the group (and so should destroy it)."""
    if "WORLD_SIZE" not in os.environ and os.environ.get("SUBMITIT_EXECUTOR") and \
            int(os.environ.get("SLURM_NTASKS", "1")) > 1:  # hydra/launcher=submitit_slurm with tasks_per_node > 1
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    check_launch()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    cuda = str(cfg.device) != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


def pick_device(name="auto") -> torch.device:
    """This rank's GPU under torchrun (unless ``name`` is cpu), else ``name``: auto is cuda when available."""
    if world()[1] > 1 and str(name) != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class GatherBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch where nn.SyncBatchNorm does not run (CPU, gloo): normalize the
    gathered batch and keep this rank's slice. Same parameters and buffers as the layer it replaces."""

    def _check_input_dim(self, x):
        pass

    def forward(self, x):
        rank, n_ranks = world()
        if not self.training or n_ranks == 1:
            return super().forward(x)
        n = len(x)
        return super().forward(gather(x))[rank * n:(rank + 1) * n]


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every batch norm layer normalizes over the global batch: nn.SyncBatchNorm on GPUs, GatherBatchNorm
    elsewhere. Parameters are shared with the old layers, so requires_grad (the frozen EMA copy) is kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GatherBatchNorm):
        new = GatherBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, sync_batchnorm(child, device))
    return module


def broadcast_order(order: torch.Tensor) -> torch.Tensor:
    if world()[1] > 1:
        dist.broadcast(order, 0)
    return order


def broadcast_object(obj):
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order (the RNG states a checkpoint keeps per rank)."""
    if world()[1] == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out

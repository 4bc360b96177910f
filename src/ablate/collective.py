"""The collectives the loss needs under torchrun: global-batch statistics with gradients (main_vicreg.py's
FullGatherLayer). Without a process group each one is the identity, so a single process never touches
torch.distributed."""

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class FullGatherLayer(torch.autograd.Function):
    """all_gather that passes gradients back, as main_vicreg.py: each rank's slice receives the sum of the
    gradients every rank's loss sends it (DDP then averages, which gives the gradient of the mean loss)."""

    @staticmethod
    def forward(ctx, x):
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x)
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        all_gradients = torch.stack(grads)
        dist.all_reduce(all_gradients)
        return all_gradients[dist.get_rank()]


def gather(x: torch.Tensor) -> torch.Tensor:
    """The global batch, differentiable; ``x`` itself in a single process."""
    return torch.cat(FullGatherLayer.apply(x)) if world()[1] > 1 else x


def mean(t: torch.Tensor) -> torch.Tensor:
    """Average over ranks (a copy); ``t`` itself in a single process."""
    if world()[1] == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()

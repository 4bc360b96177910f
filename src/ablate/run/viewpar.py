"""The two views of a CPU step on two workers at once (``train.view_parallel``).

A joint-embedding step is two passes, one per view, that meet only in the loss. On a CPU the sequential step
splits every op of both passes over one team of threads; here each view's augmentation, forward and backward
run on a worker of their own, each with half the threads, and only the loss, the optimizer and the EMA update
run between them. The computation is the sequential step's: the workers share the parameters, so the two views'
gradients add up in them (two terms, so in either order to the bit), and batch norm's running statistics, which
every forward in training mode updates, are merged in view order (``merge_bn``). Given the next batch, each
worker augments its view of it while the main thread steps the optimizer (``Stepper.split_step``). Why and how
much it pays: docs/performance.md, "Views in parallel" and "The lookahead".
"""

import copy
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import torch
from torch import nn

from ..config import check_value
from ..errors import ConfigError

_BN = nn.modules.batchnorm._BatchNorm


def shared_replica(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that holds the original's parameters (so gradients and updates are shared) and
    buffers of its own."""
    replica = copy.deepcopy(module)
    for mine, theirs in zip(replica.modules(), module.modules()):
        for name, p in theirs._parameters.items():
            mine._parameters[name] = p
    return replica


def unsupported(model: nn.Module) -> str | None:
    """Why ``model`` cannot take the split step, or None."""
    if not hasattr(model, "view"):
        return f"{type(model).__name__} has no per-view pass"
    if any(m.momentum is None for m in model.modules() if isinstance(m, _BN) and m.track_running_stats):
        return "a batch norm layer keeps a cumulative average (momentum None), which has no per-view merge"
    return None


def resolve(value, device: torch.device, model: nn.Module, compiled: bool, compiled_aug: bool,
            processes: int) -> bool:
    """``train.view_parallel``: ``auto`` splits the step on a CPU with at least two torch threads, in one process,
    for a joint-embedding model in eager mode; ``true`` where it cannot run is a one-line error."""
    check_value("train.view_parallel", value)  # the one check of the value (config.RULES)
    if value is False:
        return False
    why = ("it runs on a CPU only" if device.type != "cpu"
           else "it needs at least 2 torch threads" if torch.get_num_threads() < 2
           else "train.compile=true compiles the whole step" if compiled
           else "train.compile_aug=true: compiled colour ops are not called from two threads at once" if compiled_aug
           else f"{processes} processes split the batch already" if processes > 1
           else unsupported(model))
    if why and value is True:
        raise ConfigError(f"train.view_parallel=true cannot run here: {why}; use train.view_parallel=auto or false")
    return why is None


class ViewWorkers:
    """Two persistent threads with ``threads`` torch threads each, one per view (view v's tasks run on thread v,
    in the order they are submitted), and the replica the second view runs on."""

    def __init__(self, model: nn.Module, threads: int):
        self.model, self.replica, self.threads = model, shared_replica(model), threads
        bns = [(a, b) for a, b in zip(model.modules(), self.replica.modules())
               if isinstance(a, _BN) and a.track_running_stats]
        for _, b in bns:
            b.momentum = 1.0  # the replica's running statistics become the second view's batch statistics
        # merge_bn's operands, grouped by momentum once: one multi-tensor op per group, not five ops per layer
        self.bn_groups = []
        for m in sorted({a.momentum for a, _ in bns}):
            pairs = [(a, b) for a, b in bns if a.momentum == m]
            self.bn_groups.append((m, [t for a, _ in pairs for t in (a.running_mean, a.running_var)],
                                   [t for _, b in pairs for t in (b.running_mean, b.running_var)],
                                   [a.num_batches_tracked for a, _ in pairs]))
        self.pools = [ThreadPoolExecutor(1, thread_name_prefix=f"ablate-view{v}") for v in (0, 1)]

        def init():
            torch.get_num_threads()  # torch sets a thread's count at its first parallel op: do that first
            torch.set_num_threads(threads)

        for f in [pool.submit(init) for pool in self.pools]:
            f.result()

    def submit(self, fn) -> list[Future]:
        """[fn(0, model), fn(1, replica)] queued on the views' threads; their futures."""
        return [pool.submit(fn, v, net) for v, (pool, net) in enumerate(zip(self.pools, (self.model, self.replica)))]

    def map(self, fn) -> list:
        """``submit``, then wait: the two results; an exception in either is raised here."""
        return [f.result() for f in self.submit(fn)]

    @torch.no_grad()
    def merge_bn(self) -> None:
        """running <- (1 - m) running + m batch_2 for every batch norm: the second view's update applied after the
        first's, as two forwards in turn apply them (``nn.BatchNorm``'s running-average rule; the replica ran with
        momentum 1, so its running statistics are the second view's batch mean and unbiased variance)."""
        for m, mine, second, counts in self.bn_groups:
            torch._foreach_mul_(mine, 1 - m)
            torch._foreach_add_(mine, second, alpha=m)
            torch._foreach_add_(counts, 1)

    @contextmanager
    def main_threads(self):
        """The main thread's own ops (loss, optimizer, EMA) on as many threads as a worker: a bigger team's idle
        threads would spin beside the workers and slow them."""
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

"""One optimisation step and its strategies: the views in turn (``Stepper.update``) or each view on a CPU worker
of its own (``Stepper.split_step``, ablate.run.viewpar). Every switch acts in the method; a step only asks the
method for each view's (z, p, t) and hands them back to the method's loss."""

import itertools
from contextlib import nullcontext

import torch
from omegaconf import DictConfig

from ..augment import apply_view, colour_ops, compiled_colour_ops, draw_view, two_views
from ..config import ConfigError
from ..data import FolderStream
from ..method import Baseline, JointEmbedding
from ..optim import build_optimizer, lr_at, param_groups, set_lr
from ..stages import stage
from . import dist as D
from .compiled import CompiledParts, compile_mode
from .hardware import channels_last, compile_aug, resolve
from .viewpar import ViewWorkers
from .viewpar import resolve as view_parallel


def optimizer_for(model: JointEmbedding | Baseline, optim_cfg, lr: float, compiled: bool = False):
    """The configured optimizer over the model's trained modules (online encoder and predictor; the EMA target
    is not trained)."""
    return build_optimizer(param_groups(model.trained_modules(), optim_cfg), optim_cfg, lr, compiled)


class Stepper:
    """One optimisation step: batched augmentation on the device, forward under autocast, backward, optimizer
    step, EMA update. Returns the loss terms as a device tensor (no host sync)."""

    def __init__(self, model: JointEmbedding, cfg: DictConfig, data, device: torch.device, n_train: int):
        self.model, self.cfg, self.device = model, cfg, device
        self.mean, self.std, self.size = data.mean, data.std, cfg.data.image_size
        self.precision = resolve(cfg.train.precision, device)
        self.mem_format = memory_format(cfg, device)
        self.bf16 = self.precision == "bf16"
        self.rank, self.world = D.world()
        self.batch_size = cfg.train.batch_size
        self.local_batch, self.steps_per_epoch = split_batches(self.batch_size, self.world, n_train)
        self.total = cfg.train.epochs * self.steps_per_epoch
        self.warmup = cfg.train.warmup_epochs * self.steps_per_epoch
        self.base_lr = cfg.optim.lr * self.batch_size / 256  # the linear scaling rule (schedule: ``schedule``)
        mode = compile_mode(cfg.train.compile, device)
        self.opt = optimizer_for(model, cfg.optim, self.base_lr, compiled=mode is not None)
        self.compile = mode is not None
        self.forward = wrap_forward(model, device, self.world)
        self.compiled = CompiledParts(self.forward, self.opt, device, mode) if self.compile else None
        if self.compile:
            self.forward = self.compiled.forward
        self.compile_aug = compile_aug(cfg.train.compile_aug, device, 2 * self.total * self.local_batch)
        self.colour = compiled_colour_ops() if self.compile_aug else colour_ops
        self.workers = view_workers(cfg, device, model, self.compile, self.compile_aug, self.world)
        self.step, self.lr, self.tau = 0, None, None
        self.queued = None  # (upcoming batch, its views' futures) under train.view_parallel

    @property
    def channels_last(self) -> bool:
        """Whether the model and its inputs run in NHWC (``train.channels_last`` resolved)."""
        return self.mem_format == torch.channels_last

    @property
    def view_parallel(self) -> bool:
        """Whether each view's pass runs on a worker of its own (``train.view_parallel`` resolved)."""
        return self.workers is not None

    def main_threads(self):
        """Around a loop of steps: under ``train.view_parallel`` the main thread keeps a worker's thread count
        (ablate.viewpar), also for the batch gathers between the steps."""
        return self.workers.main_threads() if self.workers is not None else nullcontext()

    def epoch_batches(self, images):
        """A fresh permutation on the device, cut into full batches of uint8 images (this rank's slice of
        each under torchrun: rank 0's permutation is everyone's)."""
        bs, lo = self.batch_size, self.rank * self.local_batch
        if isinstance(images, FolderStream):  # decoded by DataLoader workers in an order all ranks share
            seed = int(D.broadcast_order(torch.randint(0, 2**62, (1,), device=self.device)).item())
            yield from images.epoch_batches(seed, bs, lo, self.local_batch, self.steps_per_epoch)
            return
        order = D.broadcast_order(torch.randperm(len(images), device=images.device))
        for s in range(self.steps_per_epoch):
            yield self.batch(images, order[s * bs + lo:s * bs + lo + self.local_batch])

    def batch(self, images, idx):
        return images[idx]

    def __call__(self, images: torch.Tensor, upcoming: torch.Tensor | None = None) -> torch.Tensor:
        """One step on a uint8 batch. ``upcoming``, the batch of the next call when the caller knows it
        (``lookahead``), lets the split step augment its views while this step's optimizer runs."""
        if self.workers is not None:
            queued, self.queued = self.queued, None
            if queued is not None and queued[0] is not images:
                raise RuntimeError("Stepper called with a batch other than the upcoming one it was given, whose "
                                   "random parameters are drawn already")
            views = queued[1] if queued is not None else self.workers.submit(self.augmenter(images))
            return self.split_step(lambda v: views[v].result(), upcoming)
        with stage("aug"):
            views = two_views(images, self.cfg.aug, self.size, self.mean, self.std, self.colour)
        return self.update(*views)

    def augmenter(self, images: torch.Tensor):
        """Both views' random parameters drawn now, in the sequential step's order; the returned ``fn(v, _)``
        augments view v from them (on its worker)."""
        draws = [draw_view(len(images), self.cfg.aug, v, images.device) for v in (0, 1)]
        return lambda v, _: apply_view(images, draws[v], self.size, self.mean, self.std, self.colour)

    def update(self, x1: torch.Tensor, x2: torch.Tensor, *labels: torch.Tensor) -> torch.Tensor:
        """The step on two given views (the distributed test feeds identical views to 1 and N processes), and
        their labels for the supervised baseline."""
        if self.workers is not None:
            return self.split_step(lambda v: (x1, x2)[v])
        self.schedule()
        c = self.compiled
        if c is not None:
            c.begin_step()
        x1, x2 = x1.contiguous(memory_format=self.mem_format), x2.contiguous(memory_format=self.mem_format)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss, terms = self.forward(x1, x2, *labels)
        self.opt.zero_grad(set_to_none=True)
        with stage("backward"):
            loss.backward()
        with stage("optimizer"):
            (self.opt.step if c is None else c.opt_step)()
        self.tau = (self.model.update_target(self.step, self.total) if c is None else
                    self.model.update_target(self.step, self.total, c.tau, c.ema_update))
        self.step += 1
        return terms if c is None else terms.clone()  # a CUDA graph's output is overwritten by its next replay

    def schedule(self) -> None:
        """This step's learning rate: linear warmup, then cosine."""
        self.lr = lr_at(self.step, self.total, self.warmup, self.base_lr, self.cfg.optim.final_lr_frac)
        set_lr(self.opt, self.lr)

    def split_step(self, view_input, upcoming: torch.Tensor | None = None) -> torch.Tensor:
        """``update`` with each view's pass on a worker of its own (``train.view_parallel``, ablate.viewpar):
        ``view_input(v)`` is view v's input (augmented there when it augments). The loss's inputs are cut from
        the two graphs, so the loss's backward stops at them and each worker sends their gradients through its
        own view's graph. With ``upcoming``, the next step's parameters are drawn after this step's (their
        sequential order) and each worker augments its view of it right after its backward pass, while the
        main thread merges the statistics and steps the optimizer."""
        model, workers = self.model, self.workers
        self.schedule()
        workers.replica.train(model.training)

        def forward(v, net):
            x = view_input(v).contiguous(memory_format=self.mem_format)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                return net.view(x)

        with workers.main_threads():
            outs = workers.map(forward)  # [(z, p, t) of view 1, of view 2]
            cut = [cut_graph(zpt) for zpt in outs]
            loss, terms = model.loss_of_views(*cut)  # the method's stop-gradient and loss
            self.opt.zero_grad(set_to_none=True)
            loss.backward()

            def backward(v, _):
                pairs = {id(o): (o, c.grad) for o, c in zip(outs[v][:2], cut[v][:2]) if c.grad is not None}
                if pairs:
                    torch.autograd.backward(*zip(*pairs.values()))

            done = workers.submit(backward)
            if upcoming is not None:
                self.queued = (upcoming, workers.submit(self.augmenter(upcoming)))
            for f in done:
                f.result()
            workers.merge_bn()  # after the backward passes, which check that the statistics they saved are unchanged
            self.opt.step()
            self.tau = model.update_target(self.step, self.total)
        self.step += 1
        return terms


def cut_graph(zpt):
    """A view's (z, p, t) as new leaves that require gradient where the originals do: the loss's backward stops
    at them, and their gradients go through the view's own graph on its worker. The same tensor in two roles
    (p is z without a predictor, t is z without a target) stays one leaf, so its gradients add up there."""
    z, p, t = zpt
    c = [o.detach().requires_grad_() if o.requires_grad else o for o in zpt]
    c[1] = c[0] if p is z else c[1]
    c[2] = c[0] if t is z else c[2]
    return c


def split_batches(batch_size: int, world: int, n_train: int) -> tuple[int, int]:
    """This process's share of a batch and the steps an epoch of ``n_train`` images takes (full batches only);
    a batch that does not split over the processes or exceeds the data is a one-line error."""
    if batch_size % world:
        raise ConfigError(f"train.batch_size={batch_size} does not split over {world} processes; "
                          f"use a multiple of {world}")
    if n_train // batch_size < 1:
        raise ConfigError(f"train.batch_size={batch_size} exceeds the {n_train} training images; "
                          f"lower train.batch_size")
    return batch_size // world, n_train // batch_size


def wrap_forward(model: JointEmbedding | Baseline, device: torch.device, world: int):
    """What a step calls for the loss: the model, in DistributedDataParallel under torchrun (``train.compile``
    compiles it afterwards: ablate.run.compiled)."""
    forward = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=isinstance(model, Baseline))  # projector
    return forward


def view_workers(cfg: DictConfig, device: torch.device, model, compiled: bool, compiled_aug: bool,
                 world: int) -> ViewWorkers | None:
    """The step path: the split step's workers (``train.view_parallel`` resolved true), else None for the
    sequential step."""
    split = view_parallel(cfg.train.get("view_parallel", False), device, model, compiled, compiled_aug, world)
    return ViewWorkers(model, max(1, torch.get_num_threads() // 2)) if split else None


def lookahead(batches):
    """(batch, the next batch or None) pairs, for ``Stepper.__call__``'s ``upcoming``."""
    return itertools.pairwise(itertools.chain(batches, [None]))


class SupervisedStepper(Stepper):
    """The supervised baseline's step: the SSL step's permutation, views, optimizer and schedule, with the
    permuted images' labels."""

    def __init__(self, model: Baseline, cfg: DictConfig, data, device: torch.device, n_train: int):
        if data.ssl_y is None:
            raise ConfigError(f"data {cfg.data.name} has no labels for its training images; the supervised "
                              f"baseline needs a labelled training split")
        super().__init__(model, cfg, data, device, n_train)
        self.labels = data.ssl_y

    def batch(self, images, idx):
        return images[idx], self.labels[idx]

    def __call__(self, batch, upcoming=None) -> torch.Tensor:
        images, labels = batch
        with stage("aug"):
            views = two_views(images, self.cfg.aug, self.size, self.mean, self.std, self.colour)
        return self.update(*views, labels)


def memory_format(cfg: DictConfig, device: torch.device) -> torch.memory_format:
    """channels_last for the model and its inputs (``train.channels_last=auto``: CUDA, or bf16 on a CPU)."""
    on = channels_last(cfg.train.channels_last, device, resolve(cfg.train.precision, device))
    return torch.channels_last if on else torch.contiguous_format


def build_runner(cfg: DictConfig, data, device: torch.device) -> tuple[JointEmbedding | Baseline, Stepper]:
    """The model and its training step, as ``train`` uses them (also used by ``ablate.bench``); a baseline
    (``method.baseline``) gets its own model and, when supervised, a step with labels."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    baseline = cfg.method.get("baseline")
    model = Baseline(cfg, data.num_classes) if baseline else JointEmbedding(cfg)
    if D.world()[1] > 1:
        model = D.sync_batchnorm(model, device)
    model = model.to(device, memory_format=memory_format(cfg, device))
    stepper = SupervisedStepper if baseline == "supervised" else Stepper
    return model, stepper(model, cfg, data, device, len(data.ssl_x))

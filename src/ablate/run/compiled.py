"""``train.compile``: the training step under torch.compile, in three graphs that each stay whole.

    forward   both views' passes and the loss (every switch: the loss reads plain floats, method.py)
    optimizer the optimizer step (SGD's multi-tensor form or LARS; the learning rate a device tensor, optim.py)
    ema       the target's momentum update (tau a device tensor, ema.py)

Backward runs between the forward and the optimizer graphs, as AOTAutograd's compiled backward. A value that
changes every step (lr, tau) is a tensor filled in place from a host float, so no step recompiles and
``reduce-overhead`` (CUDA graphs) can replay the graphs. ``graph_counts`` checks the promise with
``torch._dynamo.explain`` (graph count 1, no break); ``python -m ablate.bench graphs`` runs it for every switch
combination.
"""

import itertools

import torch

from ..config import COMPILE_MODES, TECHNIQUES, ConfigError
from ..ema import update_momentum

SWITCH_OPTIONS = {"ema": "cosine", "stop_grad": "target", "predictor": "mlp", "batchnorm": "heads",
                  "var": "hinge", "cov": "offdiag"}


def compile_mode(value, device: torch.device) -> str | None:
    """``train.compile``: false (eager), true (inductor), ``reduce-overhead`` (inductor and CUDA
    graphs, which replay a step's kernels with one launch: for a launch-bound step on a GPU)."""
    if value not in COMPILE_MODES:
        raise ConfigError(f"train.compile={value} is unknown; use false, true or reduce-overhead")
    mode = COMPILE_MODES[value]
    if mode == "reduce-overhead" and device.type != "cuda":
        raise ConfigError(f"train.compile=reduce-overhead replays CUDA graphs, which need a CUDA device, not "
                          f"{device.type}; use train.compile=true there")
    return mode


class CompiledParts:
    """The three compiled callables of a step (``mode`` one of ``compile_mode``'s) and the device tensor that
    carries tau into the compiled EMA update."""

    def __init__(self, forward, opt: torch.optim.Optimizer, device: torch.device, mode: str):
        # a fresh cache per run: a sweep's cells trained one after another in one process (Hydra's basic
        # launcher) would otherwise pile their models' graphs up to dynamo's recompile limit, then run eager
        torch._dynamo.reset()
        self.mode = mode
        self.forward = torch.compile(forward, mode=mode)
        self.opt_step = torch.compile(opt.step, mode=mode)
        self.ema_update = torch.compile(update_momentum, mode=mode)
        self.tau = torch.zeros((), dtype=torch.float64, device=device)

    def begin_step(self) -> None:
        """Under CUDA graphs: the previous step's outputs (read by then) may be overwritten."""
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()


def switch_overrides(on: dict) -> list[str]:
    """Hydra overrides that set each technique switch on (its usual option) or off."""
    return [f"{t}={SWITCH_OPTIONS[t] if on[t] else 'none'}" for t in TECHNIQUES]


def combinations() -> list[dict]:
    """All 2^6 on/off settings of the six switches, in binary order (all off first)."""
    return [dict(zip(TECHNIQUES, bits)) for bits in itertools.product((False, True), repeat=len(TECHNIQUES))]


def _explain(fn, *args) -> tuple[int, int]:
    torch._dynamo.reset()  # a fresh cache: every combination is counted from scratch, none hits the recompile limit
    e = torch._dynamo.explain(fn)(*args)
    return e.graph_count, e.graph_break_count


def forward_graphs(model, x1: torch.Tensor, x2: torch.Tensor) -> tuple[int, int]:
    """(graphs, breaks) of the step's forward with its loss: the part of the step the switches change."""
    return _explain(model, x1, x2)


def graph_counts(model, opt: torch.optim.Optimizer, x1: torch.Tensor, x2: torch.Tensor) -> dict:
    """(graphs, breaks) that dynamo traces for the step's forward with its loss, the optimizer step and the
    EMA update (the last only with a target). Takes one eager step first, so the optimizer has its state as
    at every later step."""
    loss, _ = model(x1, x2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    counts = {"forward": forward_graphs(model, x1, x2), "optimizer": _explain(opt.step)}
    if getattr(model, "target", None) is not None:
        tau = torch.full((), 0.99, dtype=torch.float64, device=x1.device)
        counts["ema"] = _explain(update_momentum, model.online, model.target, tau)
    torch._dynamo.reset()
    return counts


def whole(counts: dict) -> bool:
    """Every part one graph, no break."""
    return all(c == (1, 0) for c in counts.values())

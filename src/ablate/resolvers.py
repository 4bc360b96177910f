"""The config tree's own resolvers: ``${ablate.dirname:NAME}`` (sweep cell directories),
``${ablate.cache_dir:}`` (the decoded-image cache) and ``${ablate.cells_at_once:DEVICE}`` (how many sweep cells
``hydra/launcher=parallel`` runs at once); registered when ``ablate`` is imported."""

import hashlib
import os

from omegaconf import OmegaConf

MAX_DIRNAME = 255  # bytes per name on common file systems: every name that worked before stays as it was


def safe_name(name: str) -> str:
    """``name`` as one path component: ``/`` (and NUL) become ``_``, and a name of dots only is prefixed, so
    override values such as ``data.root=../../x`` never put a cell outside ``hydra.sweep.dir``."""
    name = name.replace("/", "_").replace("\0", "_")
    return f"_{name}" if name.strip(".") == "" else name


def short_dirname(name: str) -> str:
    """A sweep cell's directory name, one path component (``safe_name``): unchanged when it fits, else a
    readable prefix of whole overrides plus a short hash of the full name (deterministic; the full overrides
    are in the cell's .hydra/overrides.yaml and summary.json)."""
    full = str(name)
    name = safe_name(full)
    if len(name.encode()) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(full.encode()).hexdigest()[:10]
    prefix = name[:120]
    if "," in prefix:
        prefix = prefix[:prefix.rindex(",")]
    return f"{prefix},+{digest}"


def cache_dir() -> str:
    """The per-user cache of decoded images: ``$XDG_CACHE_HOME/ablate`` (``~/.cache/ablate``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ablate")


GIB_PER_CELL = 6  # GPU memory one cell is given: a CIFAR ResNet-18 step at batch 256 in bf16, its data and context


def cells_at_once(device: str = "auto") -> int:
    """Sweep cells to run side by side when the sweep does not say: on a CPU one per core (each on one thread:
    small models keep few threads busy, docs/performance.md); on a GPU as many as its memory holds at
    ``GIB_PER_CELL`` each, at most one per two cores (a cell's host thread queues its kernels, a second serves
    its evaluation and checkpoint writer). The device's total memory, not its free memory, so every process of
    a sweep computes the same number."""
    cores = os.cpu_count() or 1
    if str(device).split(":")[0] not in ("auto", "cuda"):
        return cores
    import torch

    if not torch.cuda.is_available():
        return cores
    total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    return max(1, min(cores // 2, int(total_gib // GIB_PER_CELL)))


def register() -> None:
    OmegaConf.register_new_resolver("ablate.dirname", short_dirname, replace=True)
    OmegaConf.register_new_resolver("ablate.cache_dir", cache_dir, replace=True)
    OmegaConf.register_new_resolver("ablate.cells_at_once", cells_at_once, replace=True)



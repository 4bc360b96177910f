"""The config tree's own resolvers: ``${ablate.dirname:NAME}`` (sweep cell directories) and
``${ablate.cache_dir:}`` (the decoded-image cache); registered when ``ablate`` is imported."""

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


def register() -> None:
    OmegaConf.register_new_resolver("ablate.dirname", short_dirname, replace=True)
    OmegaConf.register_new_resolver("ablate.cache_dir", cache_dir, replace=True)



"""The config tree's own resolvers: ``${ablate.dirname:NAME}`` (sweep cell directories) and
``${ablate.cache_dir:}`` (the decoded-image cache); registered when ``ablate`` is imported."""

import hashlib
import os

from omegaconf import OmegaConf

MAX_DIRNAME = 255  # bytes per name on common file systems: every name that worked before stays as it was


def short_dirname(name: str) -> str:
    """A sweep cell's directory name: unchanged when it fits, else a readable prefix of whole overrides plus a
    short hash of the full name (deterministic; the full overrides are in the cell's .hydra/overrides.yaml and
    summary.json)."""
    name = str(name)
    if len(name.encode()) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    prefix = name.replace("/", "_")[:120]
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



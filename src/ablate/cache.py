"""The decoded-image cache: entries sealed with their SHA-256, keyed by what their source holds, and checked
against the source on every read. A checksum notices damage, not a planted entry (anyone who can write the
cache directory can seal one); a planted entry is caught by its key (the source's content hash), its owner and
mode, and by decoding a few random images again and comparing them (``spot_check``)."""

import hashlib
import io
import logging
import os
import stat
from pathlib import Path

import numpy as np
import torch

from .files import atomic_write, seal, unseal

log = logging.getLogger("ablate")


def load_cache(path: Path, load):
    """``load(BytesIO)`` of a verified cache entry, or None (missing, not this user's own file, or failing its
    checksum: rebuilt). The checksum notices damage, not a planted entry: that is what the key (a hash of the
    source's content) and the caller's spot check of decoded images against the source are for."""
    if not path.exists():
        return None
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise ValueError("not a regular file of this user that only this user can write")
        return load(io.BytesIO(unseal(path.read_bytes())))
    except Exception as e:  # a damaged entry is rebuilt, never trained on
        log.warning("cache entry %s is unusable (%s); decoding again", path, e)
        return None


def save_cache(path: Path, save) -> None:
    buf = io.BytesIO()
    save(buf)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_bytes(seal(buf.getvalue())))
    except OSError as e:  # a cache that cannot be written costs a decode next time, nothing more
        log.warning("could not write the cache entry %s (%s)", path, e)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes: a cache entry is keyed by what the file holds, not by its name."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


SPOT_CHECKS = 8  # cached images decoded again from the source on every read, at random


def spot_check(cached: np.ndarray | torch.Tensor, decode_one, n: int, what: str) -> bool:
    """Whether ``SPOT_CHECKS`` random images of a cache entry equal their decode from the source (decoding
    is deterministic): an entry planted with other pixels is caught, without a secret to sign it with."""
    if len(cached) != n:
        log.warning("cache entry of %s holds %d images, the source %d; decoding again", what, len(cached), n)
        return False
    for i in np.random.default_rng().choice(n, min(SPOT_CHECKS, n), replace=False).tolist():
        if not np.array_equal(np.asarray(cached[i]), np.asarray(decode_one(i))):
            log.warning("cache entry of %s differs from its source at image %d; decoding again", what, i)
            return False
    return True

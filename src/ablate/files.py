"""Files that survive a crash: atomic replacement, and payloads sealed with their SHA-256 (checkpoints and
data caches). No writer here follows a symbolic link: a link in a run directory is replaced or refused, its
target never touched."""

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

TRAILER = b"\nABLATE-SHA256:"
DIGEST_LEN = 64


def atomic_write(path: Path, write: Callable[[Path], None], previous: Path | None = None) -> None:
    """``write(tmp)`` to a temporary file next to ``path``, then move it into place: a reader never sees half
    a file, and a crash leaves the old one intact (kept as ``previous`` when given)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        tmp.unlink(missing_ok=True)  # a link planted at the temporary name is removed, never written through
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
        write(tmp)
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def open_nofollow(path: Path, mode: str = "a"):
    """``open(path, mode)`` for a text file that must not be a symbolic link (``a`` appends, ``w`` truncates):
    OSError (ELOOP) instead of writing to wherever the link points."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o644), mode)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def seal(payload: bytes) -> bytes:
    """``payload`` followed by the trailer with its SHA-256 (checkpoints and data caches)."""
    return payload + TRAILER + hashlib.sha256(payload).hexdigest().encode() + b"\n"


def unseal(data: bytes) -> bytes:
    """The payload of ``seal``'s output; ValueError when the trailer is missing or the digest does not match."""
    cut = data.rfind(TRAILER)
    if cut < 0:
        raise ValueError("no integrity trailer (truncated, or not written by ablate)")
    payload, digest = data[:cut], data[cut + len(TRAILER):].strip()
    if len(digest) != DIGEST_LEN:
        raise ValueError("truncated integrity trailer")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise ValueError("checksum mismatch (corrupted)")
    return payload

"""The decoded-array cache: ``(images, labels)`` of one split as ``.npz`` beside a ``.json`` record.

An entry is keyed by the source files' paths, sizes and modification times (``cache_key``) and
verified against a SHA-256 of its arrays stored in the record, so an edited source or a corrupt
cache is rebuilt, never trusted. Writes are atomic; an unwritable cache folder only costs a decode.
Where the folder is: ``paths.resolve_cache_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["CACHE_VERSION", "cache_key", "cache_paths", "read_cache", "write_cache"]

CACHE_VERSION = 1  # bump when the decoded arrays or the cache layout change


def cache_key(name: str, kind: str, split: str, files: Iterable[Path]) -> str:
    """SHA-256 of what identifies a decoded split: data set, format, split, each file's path, size and mtime."""
    h = hashlib.sha256(f"{name} v{CACHE_VERSION} {kind} {split}\n".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _arrays_checksum(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (images, labels):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def cache_paths(cache_dir: Path, name: str, split: str, key: str) -> tuple[Path, Path]:
    """The entry's ``.npz`` (arrays) and ``.json`` (key, checksum, source) in ``cache_dir``."""
    stem = f"{name}-{split}-{key[:16]}"
    return cache_dir / f"{stem}.npz", cache_dir / f"{stem}.json"


def read_cache(npz: Path, meta: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays if present, for this key, and matching their stored checksum; else None."""
    try:
        info = json.loads(meta.read_text())
        if info.get("key") != key:
            return None
        with open(npz, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            images, labels = f["images"], f["labels"]
    except Exception:  # absent, truncated, garbled: any failure is a miss, and the cache is rebuilt
        return None
    if _arrays_checksum(images, labels) != info.get("sha256"):
        return None
    return images, labels


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_cache(
    npz: Path, meta: Path, key: str, images: np.ndarray, labels: np.ndarray, *, source: Path, kind: str
) -> None:
    """Store ``images, labels`` under ``key``; ``source`` and ``kind`` (its format) are recorded for
    a reader. A failure to write is silent: the next load decodes again."""
    info = {
        "key": key,
        "sha256": _arrays_checksum(images, labels),
        "source": str(source),
        "format": kind,
        "images": list(images.shape),
        "version": CACHE_VERSION,
    }
    try:
        npz.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(npz, lambda f: np.savez(f, images=images, labels=labels))
        _write_atomic(meta, lambda f: f.write(json.dumps(info, indent=1).encode()))
    except OSError:
        pass  # an unwritable cache folder costs a decode next time, nothing else

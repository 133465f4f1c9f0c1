"""MNIST from the four official IDX files, gzipped or not. Nothing here downloads.

Arrays: images ``uint8 (N, 28, 28)``, labels ``int64 (N,)`` in 0..9. Every problem with a file
raises ``DataError`` naming the path and what was expected.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from zlib import error as zlib_error

import numpy as np

from .checks import DataError, as_labels, check_split
from .paths import resolve_data_root

__all__ = ["load_mnist"]

_MNIST_FILES = {"train": ("train-images", "train-labels"), "test": ("t10k-images", "t10k-labels")}
_IDX_MAGIC = {3: 2051, 1: 2049}  # ndim → magic: 0x00000803 images, 0x00000801 labels (uint8)


def _find_mnist_file(root: Path, prefix: str, ndim: int) -> Path:
    names = [f"{prefix}-idx{ndim}-ubyte", f"{prefix}.idx{ndim}-ubyte"]
    for d in (root / "mnist", root / "MNIST" / "raw", root):
        for name in names:
            for candidate in (d / name, d / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    raise DataError(f"{root}: no MNIST file {names[0]}[.gz] here or under mnist/; expected the official IDX files")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib_error) as e:
        what = "a gzipped IDX file" if path.suffix == ".gz" else "an IDX file"
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e}); expected {what}") from None
    header = 4 + 4 * ndim
    magic = _IDX_MAGIC[ndim]
    if len(raw) >= 4 and (got_magic := int.from_bytes(raw[:4], "big")) != magic:
        raise DataError(f"{path}: expected IDX magic number {magic} (uint8, {ndim}-d), got {got_magic}")
    if len(raw) < header:
        raise DataError(f"{path}: truncated; expected a {header}-byte IDX header, got {len(raw)} bytes")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path}: expected {expected} data bytes for shape {dims} after the header, got {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(root: str | os.PathLike | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ("train": 60,000, "test": 10,000) from the official IDX files.

    Args:
        root: the data root (see ``resolve_data_root``); the files ``train-images-idx3-ubyte``,
            ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``
            (each optionally ``.gz``) are looked for in ``root/mnist``, ``root/MNIST/raw`` and ``root``.
        split: "train" or "test".

    Returns:
        images ``uint8 (N, 28, 28)`` and labels ``int64 (N,)`` in 0..9. Not cached: decompressing
        and checking the files takes well under a second.

    Raises:
        DataError: a missing file, a wrong magic number (2051 images, 2049 labels), a length that
        does not match the header's dimensions (a truncated file), or image/label counts that differ.
    """
    check_split(split)
    root = resolve_data_root(root)
    img_prefix, lab_prefix = _MNIST_FILES[split]
    img_path, lab_path = _find_mnist_file(root, img_prefix, 3), _find_mnist_file(root, lab_prefix, 1)
    images = _read_idx(img_path, 3)
    labels = _read_idx(lab_path, 1)
    if len(images) != len(labels):
        raise DataError(f"{lab_path}: expected {len(images)} labels to match {img_path.name}, got {len(labels)}")
    return images.copy(), as_labels(labels, lab_path, len(images), 10)

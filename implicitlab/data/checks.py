"""``DataError`` and the checks every file loader shares: split names and label arrays read from a file."""

from __future__ import annotations

import numpy as np

__all__ = ["SPLITS", "DataError", "as_labels", "check_split"]

SPLITS = ("train", "test")


class DataError(ValueError):
    """A missing, truncated or malformed data file; the message names the path and what was expected."""


def check_split(split: str) -> None:
    """Raise ``ValueError`` unless ``split`` is one of ``SPLITS``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def as_labels(labels, path, n: int, num_classes: int) -> np.ndarray:
    """``labels`` read from ``path`` as ``int64 (n,)`` in 0..num_classes−1, else ``DataError``."""
    try:
        out = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: expected integer labels, got {type(labels).__name__}") from None
    if len(out) != n:
        raise DataError(f"{path}: expected {n} labels (one per image), got {len(out)}")
    if n and (out.min() < 0 or out.max() >= num_classes):
        raise DataError(f"{path}: expected labels in 0..{num_classes - 1}, got {out.min()}..{out.max()}")
    return out

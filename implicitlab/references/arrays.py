"""Input conversion and checks shared by the float64 references (``min_norm``, ``svm``).

Torch tensors are accepted anywhere an array is: they are converted with
``np.asarray(x.detach().cpu())`` (through float64 for dtypes numpy lacks, such as bfloat16), without
importing torch. Every check raises ``ValueError`` with the argument's name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_float64", "check_finite", "check_matrix"]


def as_float64(a: Any, name: str) -> np.ndarray:
    """Convert ``a`` (array-like or torch tensor) to a float64 ndarray, or raise ``ValueError``.

    Always a copy: callers may not mutate our results. Complex or non-numeric input is refused.
    """
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor; torch is not imported here
        t = a.detach().cpu()
        if t.is_complex():
            raise ValueError(f"{name} must be real; got a complex tensor")
        try:
            a = np.asarray(t)
        except TypeError:  # dtypes numpy lacks (bfloat16): go through float64 in torch
            a = np.asarray(t.double())
    arr = np.asarray(a)
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real; got dtype {arr.dtype}")
    try:
        return np.array(arr, dtype=np.float64)  # a copy: callers may not mutate our results
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}") from None


def check_matrix(X: np.ndarray, name: str = "X") -> None:
    """Raise ``ValueError`` unless ``X`` is 2-D with at least one row and one column."""
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, d); got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column; got shape {X.shape}")


def check_finite(a: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` if ``a`` holds a NaN or an infinity."""
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")

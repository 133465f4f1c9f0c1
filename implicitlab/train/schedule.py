"""When probes are measured: every k steps, or on a log-spaced grid of steps."""

from __future__ import annotations

import numpy as np


def every(k: int, num_steps: int) -> np.ndarray:
    """Steps 0, k, 2k, …, and always the last step ``num_steps``."""
    if k < 1:
        raise ValueError(f"probe interval must be ≥ 1, got {k}")
    steps = np.arange(0, num_steps + 1, k, dtype=np.int64)
    return np.unique(np.append(steps, num_steps))


def log_spaced(num_steps: int, num: int = 50, first: int = 1) -> np.ndarray:
    """About ``num`` integer steps geometrically spaced from ``first`` to ``num_steps``, plus step 0.

    Never past ``num_steps``: a ``first`` beyond it gives ``[0, num_steps]``.
    """
    if num_steps < 1:
        return np.array([0], dtype=np.int64)
    grid = np.geomspace(min(max(first, 1), num_steps), num_steps, num)
    return np.unique(np.concatenate([[0], np.round(grid).astype(np.int64), [num_steps]]))

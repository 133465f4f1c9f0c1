"""Synthetic data sets of the theory papers, seeded and in float64."""

from __future__ import annotations

import numpy as np


def separable_through_origin(n: int, d: int, *, min_margin: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n Gaussian points in R^d labelled by a random unit direction, with a gap around it.

    Points with |w₀ᵀx| < ``min_margin`` are redrawn, so the set is linearly separable through
    the origin with geometric margin ≥ min_margin. Generic Gaussian points have no mirrored
    support vectors, the symmetric case in which the 1/log t term of Soudry et al.'s rate
    cancels (see ``implicit-bias-results.md``): a test of the logarithmic rate needs this.

    Returns X ``(n, d)``, y ``(n,)`` in {−1, +1}.
    """
    if n < 1 or d < 1:
        raise ValueError(f"need n ≥ 1 and d ≥ 1, got n={n}, d={d}")
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(d)
    w0 /= np.linalg.norm(w0)
    rows: list[np.ndarray] = []
    while sum(len(r) for r in rows) < n:
        cand = rng.standard_normal((4 * n, d))
        rows.append(cand[np.abs(cand @ w0) >= min_margin])
    X = np.concatenate(rows)[:n]
    return X, np.sign(X @ w0)


def gaussian_regression(n: int, d: int, *, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X with i.i.d. N(0, 1) entries, y = X w_true + noise·ε with w_true ~ N(0, I_d)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    return X, X @ w + noise * rng.standard_normal(n)

"""scikit-learn's bundled data sets (no download), prepared as the experiments use them."""

from __future__ import annotations

import numpy as np


def digits_binary(a: int = 0, b: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits, class ``a`` (y = −1) vs ``b`` (y = +1), standardised.

    Constant pixel columns are dropped, the rest standardised to zero mean and unit variance.
    0-vs-1 is linearly separable through the origin (360 × 52; checked by the exact SVM).
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    mask = np.isin(data.target, (a, b))
    X = data.data[mask].astype(np.float64)
    y = np.where(data.target[mask] == b, 1.0, -1.0)
    std = X.std(axis=0)
    X = X[:, std > 0]
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, y

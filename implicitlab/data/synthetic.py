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
    """X with i.i.d. N(0, 1) entries, y = X w_true + noise·ε with w_true ~ N(0, I_d), ε ~ N(0, I_n).

    X, w_true and ε are drawn in that order from one seeded generator, so for a given seed X and
    the noiseless targets do not depend on ``noise``. Returns X ``(n, d)``, y ``(n,)``, float64.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    return X, X @ w + noise * rng.standard_normal(n)


def marion_chizat_regression(n: int, d: int, *, noise: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    """The regression data of Marion & Chizat 2024 (their experiments' setting).

    X ∈ R^{n×d} with i.i.d. N(0, 1) entries, w_true ~ N(0, I_d), y = X w_true + noise·ε;
    w* = pinv(XᵀX) Xᵀy (the minimum-norm least-squares solution); y and w* are divided by ‖w*‖
    so that ‖w*‖ = 1. A test set of the same size is drawn the same way (same w_true, scaled by
    the same ‖w*‖).

    Returns a dict with ``X, y, X_test, y_test, w_star, w_true`` (float64).
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w_true = rng.standard_normal(d)
    y = X @ w_true + noise * rng.standard_normal(n)
    X_test = rng.standard_normal((n, d))
    y_test = X_test @ w_true + noise * rng.standard_normal(n)
    w_star = np.linalg.pinv(X.T @ X) @ X.T @ y
    scale = np.linalg.norm(w_star)
    return {"X": X, "y": y / scale, "X_test": X_test, "y_test": y_test / scale, "w_star": w_star / scale,
            "w_true": w_true / scale}


def conditioned_regression(n: int, d: int, kappa: float, *, noise: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Regression data whose empirical covariance Σ = XᵀX/n has condition number exactly ``kappa``.

    Σ gets the geometric spectrum λ_i = κ^{−i/(d−1)}, i = 0…d−1 (λ_max = 1, λ_min = 1/κ; for d = 1
    only κ = 1 is possible). With Q ``(n, d)`` orthonormal columns (QR of a Gaussian matrix) and V a
    Haar-random orthogonal ``(d, d)`` (QR with the signs of R's diagonal), X = √n · Q diag(√λ) Vᵀ, so
    Σ = V diag(λ) Vᵀ: the eigenvalues are the λ_i up to rounding, whatever the draw.
    Then as in :func:`marion_chizat_regression`: w_true ~ N(0, I_d), y = X w_true + noise·ε,
    w* = the least-squares solution (unique: n ≥ d and Σ ≻ 0), y and w* divided by ‖w*‖.

    Q, V, w_true and ε are drawn from one seeded generator in that order and do not depend on
    ``kappa``: one seed at several κ is the same draw with another spectrum (a paired design).

    Returns a dict with ``X`` ``(n, d)``, ``y`` ``(n,)``, ``w_star`` ``(d,)`` (‖w*‖ = 1), ``w_true``,
    ``eigenvalues`` ``(d,)`` (the λ_i, descending) and ``eigenvectors`` V ``(d, d)`` (column i for λ_i).
    """
    if n < 1 or d < 1 or n < d:
        raise ValueError(f"need 1 ≤ d ≤ n (Σ must be invertible), got n={n}, d={d}")
    if not (np.isfinite(kappa) and kappa >= 1):
        raise ValueError(f"kappa must be a finite number ≥ 1, got {kappa!r}")
    if d == 1 and kappa != 1:
        raise ValueError(f"with d = 1 the condition number is 1, got kappa={kappa!r}")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be finite and ≥ 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, d)))  # (n, d), QᵀQ = I
    G, upper = np.linalg.qr(rng.standard_normal((d, d)))
    V = G * np.sign(np.diag(upper))  # Haar-distributed orthogonal (d, d)
    eigenvalues = float(kappa) ** (-np.arange(d) / max(d - 1, 1))  # (d,) descending, λ_0 = 1
    X = np.sqrt(n) * (Q * np.sqrt(eigenvalues)) @ V.T  # (n, d)
    w_true = rng.standard_normal(d)
    y = X @ w_true + noise * rng.standard_normal(n)
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    scale = np.linalg.norm(w_star)
    if scale == 0:
        raise ValueError("w* = 0: the targets are orthogonal to the inputs")
    return {"X": X, "y": y / scale, "w_star": w_star / scale, "w_true": w_true / scale,
            "eigenvalues": eigenvalues, "eigenvectors": V}


# --------------------------------------------------------------------------- 1-D regression (Poggio et al. 2018, Figs 4 and 6)

POLYNOMIAL_BASES = ("monomial", "chebyshev", "legendre")


def chebyshev_nodes(n: int, kind: str = "first") -> np.ndarray:
    """n Chebyshev nodes on [−1, 1], ascending, float64.

    ``kind="first"``: the roots of T_n, x_k = cos((2k − 1)π / (2n)), k = 1…n (no endpoints; the
    usual meaning of "Chebyshev nodes"). ``kind="second"``: the extrema of T_{n−1} (Chebyshev–
    Lobatto points), x_k = cos(kπ / (n − 1)), k = 0…n−1, which include ±1 (needs n ≥ 2).
    Both cluster towards the ends of the interval, where polynomial fits are least stable.
    """
    if n < 1:
        raise ValueError(f"need n ≥ 1 nodes, got {n}")
    if kind == "first":
        k = np.arange(1, n + 1)
        x = np.cos((2 * k - 1) * np.pi / (2 * n))
    elif kind == "second":
        if n < 2:
            raise ValueError("Chebyshev–Lobatto nodes need n ≥ 2")
        x = np.cos(np.arange(n) * np.pi / (n - 1))
    else:
        raise ValueError(f"unknown Chebyshev node kind {kind!r}; use 'first' or 'second'")
    x = np.sort(x)
    x[np.abs(x) < 1e-15] = 0.0  # the middle node of an odd n is 0 up to rounding of cos(π/2)
    return x


def sine_target(x: np.ndarray, frequency: float = 4.0) -> np.ndarray:
    """f(x) = sin(2π · frequency · x), the target of Poggio et al. 2018, Figs 4 and 6."""
    return np.sin(2 * np.pi * frequency * np.asarray(x, dtype=np.float64))


def polynomial_features(x: np.ndarray, num_features: int, basis: str = "monomial") -> np.ndarray:
    """Features φ_0(x) … φ_{p−1}(x) of a polynomial of degree p − 1, shape ``(len(x), p)``, float64.

    Bases:
        ``"monomial"``: x^j (a Vandermonde matrix; catastrophically ill-conditioned for large p).
        ``"chebyshev"``: T_j(x), by the three-term recurrence (|T_j| ≤ 1 on [−1, 1]).
        ``"legendre"``: √(2j + 1) P_j(x), orthonormal for the uniform probability measure dx/2 on
            [−1, 1] (by the three-term recurrence).
    """
    if num_features < 1:
        raise ValueError(f"need at least one feature, got {num_features}")
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if basis == "monomial":
        return np.vander(x, num_features, increasing=True)
    if basis == "chebyshev":
        return np.polynomial.chebyshev.chebvander(x, num_features - 1)
    if basis == "legendre":
        return np.polynomial.legendre.legvander(x, num_features - 1) * np.sqrt(2 * np.arange(num_features) + 1.0)
    raise ValueError(f"unknown polynomial basis {basis!r}; choose one of {list(POLYNOMIAL_BASES)}")

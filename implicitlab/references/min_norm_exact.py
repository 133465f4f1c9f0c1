"""The minimum-norm least-squares fit by monomials 1, x, …, x^{p−1}, in high precision (mpmath).

Poggio et al. 2018 (Fig. 6, Appendix 9) fit a target by the pseudo-inverse solution w = Φ⁺y of
the monomial (Vandermonde) feature matrix Φ_{ij} = x_i^j. On [−1, 1] that matrix is conditioned
beyond 1/eps(float64) once p ≳ 40 (x^j and x^{j+2} are nearly collinear there), so no float64
method, :func:`~implicitlab.references.min_norm_solution` included, returns its minimum-norm
solution: an SVD pseudo-inverse drops the small singular values and solves a truncated problem.
This module computes it in ``dps``-digit arithmetic instead, where a working precision of a few
dozen digits past log₁₀ cond(Φ)² resolves it. Certify a result by recomputing at a higher ``dps``
and comparing (``poggio2018-fig6`` does so at 100 and 140 digits).

Both cases go through a symmetric positive-definite system solved by Cholesky:

- p ≥ n (interpolation): w = Φᵀα with Kα = y, K = ΦΦᵀ, whose entries are the geometric sums
  K_ij = Σ_{l<p} (x_i x_j)^l = (1 − (x_i x_j)^p)/(1 − x_i x_j) (= p when x_i x_j = 1);
  ‖w‖² = yᵀα.
- p < n (least squares): the normal equations (ΦᵀΦ)w = Φᵀy with the Hankel matrix of power sums
  (ΦᵀΦ)_{ab} = Σ_i x_i^{a+b}.

Either way the Gram matrix's condition number is cond(Φ)², which is why the digits must cover it.
Predictions are evaluated by Horner's rule. The condition number comes as a certified lower bound
(from max_i G_ii ≤ λ_max and the Rayleigh quotient of two inverse-iteration steps, ≥ λ_min), in
the working precision.

mpmath is imported on first use (it comes with torch, through sympy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ExactMinNormFit", "monomial_min_norm_exact"]

Points = Callable[[Any], Sequence[Any]] | Sequence[Any]  # mp -> [mpf], or numbers converted by mp.mpf


@dataclass(frozen=True)
class ExactMinNormFit:
    """The minimum-norm least-squares fit by p monomials, as ``dps``-digit mpmath numbers.

    Attributes:
        weights: ``(p,)`` list of mpf, the monomial coefficients w_0 … w_{p−1} of w = Φ⁺y.
        train_predictions: ``(n,)`` list of mpf, Σ_j w_j x_i^j at the training points.
        eval_predictions: list of mpf, the fit at the evaluation points (in their order).
        weight_norm2: mpf, ‖w‖².
        cond_lower_bound: a certified lower bound on cond(Φ) = σ_max/σ_min (a float; may be inf
            when it overflows a float).
        dps: the decimal digits of the working precision.
    """

    weights: list
    train_predictions: list
    eval_predictions: list
    weight_norm2: Any
    cond_lower_bound: float
    dps: int


def _mp():
    import mpmath  # a dependency of torch (through sympy); imported here so only its users need it

    return mpmath.mp


def _points(mp, points: Points) -> list:
    return list(points(mp)) if callable(points) else [mp.mpf(v) for v in points]


def _cholesky(mp, K: list[list]) -> list[list]:
    """Lower-triangular L with K = LLᵀ (mpmath numbers, K symmetric positive definite)."""
    n = len(K)
    L = [[mp.zero] * n for _ in range(n)]
    for j in range(n):
        Lj = L[j]
        s = K[j][j] - mp.fdot(Lj[:j], Lj[:j])
        if not s > 0:
            raise ArithmeticError(f"matrix not positive definite at {mp.dps} digits (pivot {j}); raise dps")
        d = mp.sqrt(s)
        Lj[j] = d
        for i in range(j + 1, n):
            Li = L[i]
            Li[j] = (K[i][j] - mp.fdot(Li[:j], Lj[:j])) / d
    return L


def _chol_solve(mp, L: list[list], b: list) -> list:
    """x with LLᵀx = b: forward, then back substitution."""
    n = len(L)
    z = [mp.zero] * n
    for i in range(n):
        z[i] = (b[i] - mp.fdot(L[i][:i], z[:i])) / L[i][i]
    x = [mp.zero] * n
    for i in reversed(range(n)):
        x[i] = (z[i] - mp.fdot([L[k][i] for k in range(i + 1, n)], x[i + 1 :])) / L[i][i]
    return x


def _cond_lower_bound(mp, K: list[list], L: list[list]) -> float:
    """cond(K) ≥ max_i K_ii / RQ(z), z from two inverse-iteration steps: a certified lower bound."""
    n = len(K)
    z = [mp.one] * n
    for _ in range(2):
        z = _chol_solve(mp, L, z)
        scale = max(abs(v) for v in z)
        z = [v / scale for v in z]
    Kz = [mp.fdot(K[i], z) for i in range(n)]
    rq = mp.fdot(z, Kz) / mp.fdot(z, z)  # ≥ λ_min
    return float(max(K[i][i] for i in range(n)) / rq)


def _horner(mp, coeffs: list, t) -> object:
    acc = mp.zero
    for c in reversed(coeffs):
        acc = acc * t + c
    return acc


def monomial_min_norm_exact(x_train: Points, y_train: Points, x_eval: Points, num_features: int, *,
                            dps: int) -> ExactMinNormFit:
    """The minimum-norm least-squares fit w = Φ⁺y by the monomials 1 … x^{p−1}, in ``dps`` digits.

    Args:
        x_train: the n distinct training points, |x_i| ≤ 1 (the kernel sum is exact for any x, but
            the Cholesky needs the digits to cover cond(Φ)²). Either a callable ``mp -> list of mpf``,
            called at the working precision (so points like cos(kπ/n) carry ``dps`` digits), or a
            sequence of numbers, each converted with ``mp.mpf`` (a float is taken exactly).
        y_train: the n targets, in the same forms.
        x_eval: points at which to evaluate the fit (may be empty), in the same forms.
        num_features: p ≥ 1, the number of monomials (polynomial degree p − 1).
        dps: decimal digits of the working precision (≥ 15). The global ``mpmath.mp.dps`` is set for
            the computation and restored afterwards.

    Returns:
        :class:`ExactMinNormFit`.

    Raises:
        ValueError: p < 1, dps < 15, or x_train and y_train of different lengths or empty.
        ArithmeticError: the Gram matrix is not positive definite at this precision (too few digits,
            or repeated training points with p ≥ n).
    """
    if int(num_features) != num_features or num_features < 1:
        raise ValueError(f"num_features must be an integer ≥ 1, got {num_features}")
    if int(dps) != dps or dps < 15:
        raise ValueError(f"dps must be an integer ≥ 15, got {dps}")
    p = int(num_features)
    mp = _mp()
    old = mp.dps
    mp.dps = int(dps)
    try:
        x, y, t = _points(mp, x_train), _points(mp, y_train), _points(mp, x_eval)
        n = len(x)
        if n == 0 or len(y) != n:
            raise ValueError(f"x_train and y_train must have the same positive length, got {n} and {len(y)}")
        if p >= n:  # interpolation: w = Φᵀα, Kα = y, K_ij = Σ_{l<p} (x_i x_j)^l
            K = [[None] * n for _ in range(n)]
            for i in range(n):
                for j in range(i, n):
                    z = x[i] * x[j]
                    K[i][j] = K[j][i] = (1 - z**p) / (1 - z) if z != 1 else mp.mpf(p)
            L = _cholesky(mp, K)
            alpha = _chol_solve(mp, L, y)
            w = [mp.fdot(alpha, [v**l for v in x]) for l in range(p)]  # noqa: E741
            w_norm2 = mp.fdot(y, alpha)
            cond = _cond_lower_bound(mp, K, L)
        else:  # least squares: (ΦᵀΦ) w = Φᵀy with the Hankel matrix of power sums
            sums = [mp.fsum(v**k for v in x) for k in range(2 * p - 1)]
            G = [[sums[a + b] for b in range(p)] for a in range(p)]
            rhs = [mp.fdot(y, [v**a for v in x]) for a in range(p)]
            L = _cholesky(mp, G)
            w = _chol_solve(mp, L, rhs)
            w_norm2 = mp.fdot(w, w)
            cond = _cond_lower_bound(mp, G, L)
        return ExactMinNormFit(weights=w, train_predictions=[_horner(mp, w, v) for v in x],
                               eval_predictions=[_horner(mp, w, v) for v in t], weight_norm2=w_norm2,
                               cond_lower_bound=math.sqrt(cond), dps=int(dps))
    finally:
        mp.dps = old

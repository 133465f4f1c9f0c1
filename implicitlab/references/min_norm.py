"""Minimum-norm least squares and the row/null-space projectors of a data matrix.

Square loss ½‖Xw − y‖² has gradient Xᵀ(Xw − y), which lies in the row space of X. Gradient descent
therefore never changes the component of w in the null space of X: started at w₀ it converges (for
a small enough step) to P_null w₀ + X⁺y, and from w₀ = 0 to the minimum-norm least-squares solution
X⁺y (the square-loss remark in Soudry et al., JMLR 2018; Gunasekar et al., NeurIPS 2018). This
module gives those exact references in float64.

Everything is computed from one thin SVD X = U diag(σ) Vᵀ (numpy.linalg.svd, LAPACK gesdd). A
singular value counts as non-zero when σ > rcond·σ_max with the default

    rcond = max(n, d)·eps(float64),

the cutoff numpy.linalg.matrix_rank uses (Golub & Van Loan, "Matrix Computations", 4th ed., §5.4.1).
Then X⁺ = V_r diag(1/σ_r) U_rᵀ over the r kept singular values (ibid., §5.5.2).

Torch tensors are accepted anywhere an array is and converted with ``np.asarray(x.detach().cpu())``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .arrays import as_float64, check_finite, check_matrix

__all__ = [
    "MinNormResult",
    "min_norm_solution",
    "null_space_projector",
    "row_space_projector",
]


# --------------------------------------------------------------------------------------------------
# The singular-value cutoff
# --------------------------------------------------------------------------------------------------


def _rcond(rcond: float | None, n: int, d: int) -> float:
    if rcond is None:
        return max(n, d) * np.finfo(np.float64).eps
    rcond = float(rcond)
    if not (np.isfinite(rcond) and rcond >= 0.0):
        raise ValueError(f"rcond must be a finite number >= 0; got {rcond}")
    return rcond


# --------------------------------------------------------------------------------------------------
# Minimum-norm least squares
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MinNormResult:
    """The minimum-norm least-squares solution X⁺y and what it rests on.

    Attributes:
        solution: (d,) or (d, k) float64, argmin ‖w‖ over the minimizers of ‖Xw − y‖.
        rank: numerical rank r of X, the number of singular values > cutoff.
        singular_values: (min(n, d),) float64, all singular values of X, descending (the discarded
            ones included, so a user can see how close the cutoff was).
        condition_number: σ_max/σ_min over the r kept singular values (1.0 when r = 1; NaN when
            r = 0, i.e. X = 0 up to the cutoff).
        residual_norm: ‖Xw − y‖₂ as a float for (n,) targets, a (k,) float64 array of per-column
            norms for (n, k) targets. Zero (up to rounding) when the system is consistent.
        cutoff: the absolute singular-value threshold rcond·σ_max that was used.
    """

    solution: np.ndarray
    rank: int
    singular_values: np.ndarray
    condition_number: float
    residual_norm: float | np.ndarray
    cutoff: float


def min_norm_solution(X: Any, y: Any, *, rcond: float | None = None) -> MinNormResult:
    """Minimum-norm least-squares solution w = X⁺y via a float64 SVD.

    Args:
        X: (n, d) data matrix; any n, d ≥ 1 (under- or overdetermined, rank-deficient allowed).
        y: (n,) targets, or (n, k) for k outputs solved column by column.
        rcond: relative cutoff; singular values ≤ rcond·σ_max are treated as zero. Default
            ``max(n, d)·eps`` (numpy.linalg.matrix_rank's choice). Must be ≥ 0.

    Returns:
        MinNormResult (see its fields). For X = 0 the solution is 0, rank 0.

    Raises:
        ValueError: X not 2-D or empty; y not 1-D/2-D; n mismatch; NaN/inf; bad rcond.

    Source: X⁺ = V_r Σ_r⁻¹ U_rᵀ, Golub & Van Loan, "Matrix Computations", 4th ed., §5.5.2.
    """
    X = as_float64(X, "X")
    y = as_float64(y, "y")
    check_matrix(X)
    n, d = X.shape
    if y.ndim not in (1, 2):
        raise ValueError(f"y must have shape (n,) or (n, k); got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} rows but X has {n}")
    check_finite(X, "X")
    check_finite(y, "y")
    rel = _rcond(rcond, n, d)

    U, s, Vt = np.linalg.svd(X, full_matrices=False)  # U (n, m), s (m,), Vt (m, d), m = min(n, d)
    cutoff = rel * s[0]
    r = int(np.count_nonzero(s > cutoff))
    coeffs = (U[:, :r].T @ y) / (s[:r, None] if y.ndim == 2 else s[:r])  # (r,) or (r, k)
    solution = Vt[:r].T @ coeffs  # (d,) or (d, k)

    residual = X @ solution - y
    if y.ndim == 1:
        residual_norm: float | np.ndarray = float(np.linalg.norm(residual))
    else:
        residual_norm = np.linalg.norm(residual, axis=0)
    condition = float(s[0] / s[r - 1]) if r > 0 else float("nan")
    return MinNormResult(
        solution=solution,
        rank=r,
        singular_values=s,
        condition_number=condition,
        residual_norm=residual_norm,
        cutoff=float(cutoff),
    )


# --------------------------------------------------------------------------------------------------
# Projectors
# --------------------------------------------------------------------------------------------------


def _right_singular_basis(X: Any, rcond: float | None) -> tuple[np.ndarray, int]:
    """(Vt, r): a full d×d orthogonal Vt from the SVD of X and the numerical rank r."""
    X = as_float64(X, "X")
    check_matrix(X)
    check_finite(X, "X")
    n, d = X.shape
    rel = _rcond(rcond, n, d)
    # Vt must be d×d. With n ≥ d the thin SVD already gives that; with n < d ask for the full one,
    # which then costs only an n×n U (never an n×n U for tall X, where n may be huge).
    _, s, Vt = np.linalg.svd(X, full_matrices=n < d)
    r = int(np.count_nonzero(s > rel * s[0]))
    return Vt, r


def row_space_projector(X: Any, rcond: float | None = None) -> np.ndarray:
    """Orthogonal projector onto the row space of X: P_row = V_r V_rᵀ, shape (d, d), float64.

    Args:
        X: (n, d) data matrix.
        rcond: relative singular-value cutoff, as in :func:`min_norm_solution`.

    The minimum-norm solution lies in this space; for X = 0 the projector is 0.
    """
    Vt, r = _right_singular_basis(X, rcond)
    V_r = Vt[:r].T  # (d, r)
    P = V_r @ V_r.T
    return 0.5 * (P + P.T)  # exactly symmetric


def null_space_projector(X: Any, rcond: float | None = None) -> np.ndarray:
    """Orthogonal projector onto the null space of X: P_null = V_⊥ V_⊥ᵀ = I − P_row, shape (d, d).

    Args:
        X: (n, d) data matrix.
        rcond: relative singular-value cutoff, as in :func:`min_norm_solution`.

    This is the component of an initialization that gradient descent on the square loss never
    changes: w(t) − w₀ stays in the row space, so P_null w(t) = P_null w₀ for all t. Built from
    the trailing right singular vectors (not as I − P_row), so X @ P_null is at rounding level
    σ_max·eps.
    For full column rank (r = d) the projector is 0.
    """
    Vt, r = _right_singular_basis(X, rcond)
    V_null = Vt[r:].T  # (d, d - r)
    P = V_null @ V_null.T
    return 0.5 * (P + P.T)

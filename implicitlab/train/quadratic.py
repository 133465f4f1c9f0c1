"""Exact fast-forward of gradient descent on a least-squares loss.

For L(w) = c‖Aw − b‖² (c = 1/n for ``reduction="mean"``, 1 for ``"sum"``; no ½, the convention of
:mod:`implicitlab.losses`), one GD step is the affine map

    w ← w − η ∇L(w) = w − 2cη Aᵀ(Aw − b).

With the thin SVD A = U diag(s) Vᵀ (U ``(n, m)``, V ``(d, m)``, m = min(n, d)) and the coordinates
a = Vᵀw, β = Uᵀb, the map acts on each coordinate separately and leaves the rest of w (its
component outside the row space of A) exactly unchanged:

    a_i ← a_i + h_i (β_i/s_i − a_i),   h_i = 2cη s_i²,

so after k steps a_i(k) = a_i + (1 − q_i^k)(β_i − s_i a_i)/s_i with q_i = 1 − h_i. We evaluate
1 − q^k = −expm1(k · log1p(−h)) for 0 ≤ h < 1, which keeps full relative accuracy when h is tiny and
k huge (a slow mode after 10⁷ steps), and 1 − q^k directly for h ≥ 1 (oscillating modes; |q| > 1
diverges, see :attr:`QuadraticGD.stable`). A singular value s_i = 0 gives a_i(k) = a_i exactly.

Advancing k steps costs O(R·d·m) whatever k is, where stepping costs O(k·R·n·d): 10⁷ iterations of
GD on polynomial regression become a few matrix products. The result is GD's iterate in exact
arithmetic up to float64 rounding of one SVD and one update; explicit stepping in float64
accumulates rounding over k steps instead (``tests/train/test_quadratic.py`` holds the two
together to 1e-10 on short horizons).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["QuadraticGD"]


def _as_runs(w: np.ndarray, d: int) -> tuple[np.ndarray, bool]:
    w = np.asarray(w, dtype=np.float64)
    single = w.ndim == 1
    w = w.reshape(1, -1) if single else w
    if w.ndim != 2 or w.shape[1] != d:
        raise ValueError(f"w must be (d,) or (R, d) with d = {d}, got shape {np.shape(w)}")
    return w, single


@dataclass(frozen=True)
class QuadraticGD:
    """GD with step ``lr`` on L(w) = c‖Aw − b‖², advanced exactly by any number of steps.

    Build with :meth:`least_squares`. Weights are ``(d,)`` or ``(R, d)`` float64 arrays (R runs
    sharing A, b and the step size).

    Attributes:
        A: ``(n, d)`` design matrix;  b: ``(n,)`` targets;  lr: the step size η.
        scale: c (1/n for a mean, 1 for a sum).
        s: ``(m,)`` singular values of A, descending;  Vt: ``(m, d)`` right singular vectors.
        beta: ``(m,)`` Uᵀb, the targets in the left singular basis.
    """

    A: np.ndarray
    b: np.ndarray
    lr: float
    scale: float
    s: np.ndarray
    Vt: np.ndarray
    beta: np.ndarray

    @classmethod
    def least_squares(cls, A, b, lr: float, reduction: str = "mean") -> "QuadraticGD":
        """GD on (1/n)‖Aw − b‖² (``"mean"``) or ‖Aw − b‖² (``"sum"``) with step ``lr``."""
        A = np.array(A, dtype=np.float64)
        b = np.array(b, dtype=np.float64).reshape(-1)
        if A.ndim != 2 or A.shape[0] != b.shape[0] or A.size == 0:
            raise ValueError(f"A must be (n, d) and b (n,); got {A.shape} and {b.shape}")
        if not (np.isfinite(A).all() and np.isfinite(b).all()):
            raise ValueError("A and b must be finite")
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be positive and finite, got {lr}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"unknown reduction {reduction!r}; use 'mean' or 'sum'")
        U, s, Vt = np.linalg.svd(A, full_matrices=False)
        scale = 1.0 / A.shape[0] if reduction == "mean" else 1.0
        return cls(A=A, b=b, lr=float(lr), scale=scale, s=s, Vt=Vt, beta=U.T @ b)

    # ------------------------------------------------------------------ spectrum

    @property
    def hessian_eigenvalues(self) -> np.ndarray:
        """Non-trivial eigenvalues 2c s_i² of the Hessian 2cAᵀA (the others are 0), descending."""
        return 2.0 * self.scale * self.s**2

    @property
    def contraction(self) -> np.ndarray:
        """q_i = 1 − η·2c s_i²: per-step factor of each row-space mode's distance to its optimum."""
        return 1.0 - self.lr * self.hessian_eigenvalues

    @property
    def stable(self) -> bool:
        """True when every mode contracts, η λ_max < 2."""
        return bool(self.lr * self.hessian_eigenvalues.max() < 2.0)

    def remaining_fraction(self, k: int) -> np.ndarray:
        """|q_i|^k: the fraction of each mode's initial error left after k steps."""
        return np.abs(self._q_pow(k))

    def _q_pow(self, k: int) -> np.ndarray:
        h = self.lr * self.hessian_eigenvalues
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            small = np.exp(k * np.log1p(-np.minimum(h, 0.5)))
            return np.where(h < 0.5, small, np.power(1.0 - h, k))

    def _one_minus_q_pow(self, k: int) -> np.ndarray:
        h = self.lr * self.hessian_eigenvalues
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            slow = -np.expm1(k * np.log1p(-np.minimum(h, 0.5)))  # exact relative accuracy as h → 0
            return np.where(h < 0.5, slow, 1.0 - np.power(1.0 - h, k))

    # ------------------------------------------------------------------ dynamics

    def advance(self, w, k: int) -> np.ndarray:
        """The GD iterate k steps after ``w`` (``(d,)`` or ``(R, d)``), in O(R·d·m) operations."""
        if int(k) != k or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k}")
        w, single = _as_runs(w, self.A.shape[1])
        if k == 0:
            out = w.copy()
        else:
            a = w @ self.Vt.T  # (R, m)
            gap = self.beta - self.s * a  # (R, m): s_i(β_i/s_i − a_i)
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(self.s > 0, self._one_minus_q_pow(int(k)) / self.s, 0.0)  # (m,)
            out = w + (factor * gap) @ self.Vt  # only the row space moves
        return out[0] if single else out

    def limit(self, w) -> np.ndarray:
        """k → ∞ of :meth:`advance` for a stable step: the least-squares solution nearest to w
        (its row-space part is A⁺b, the rest of w is kept)."""
        if not self.stable:
            raise ValueError("GD diverges at this step size (η λ_max ≥ 2): no limit")
        w, single = _as_runs(w, self.A.shape[1])
        a = w @ self.Vt.T
        with np.errstate(divide="ignore", invalid="ignore"):
            target = np.where(self.s > 0, self.beta / np.where(self.s > 0, self.s, 1.0), a)
        out = w + (target - a) @ self.Vt
        return out[0] if single else out

    def step(self, w, k: int = 1) -> np.ndarray:
        """k explicit float64 GD steps w ← w − 2cη Aᵀ(Aw − b): the reference for :meth:`advance`."""
        w, single = _as_runs(w, self.A.shape[1])
        w = w.copy()
        g = 2.0 * self.scale * self.lr
        for _ in range(int(k)):
            w -= g * (w @ self.A.T - self.b) @ self.A  # (R, n) @ (n, d)
        return w[0] if single else w

    def loss(self, w) -> np.ndarray:
        """c‖Aw − b‖² per run ``(R,)`` (a float for a single ``(d,)`` w), from the residuals."""
        w, single = _as_runs(w, self.A.shape[1])
        r = w @ self.A.T - self.b
        out = self.scale * (r**2).sum(-1)
        return float(out[0]) if single else out

    def null_space_component(self, w) -> np.ndarray:
        """The part of w that GD never changes: w − V Vᵀw over the modes with s_i > 0."""
        w, single = _as_runs(w, self.A.shape[1])
        Vr = self.Vt[self.s > 0]
        out = w - (w @ Vr.T) @ Vr
        return out[0] if single else out

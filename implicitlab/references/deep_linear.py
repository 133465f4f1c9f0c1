"""Sharpness references for deep linear regression (Marion & Chizat, NeurIPS 2024, arXiv 2405.13456).

Setting (their convention, see ``shared/papers/marion-chizat-2024.md``): data X ``(n, d)``, targets
y ``(n,)``, a depth-L linear network p(x) = W_L ⋯ W_1 x with W_1 ``(d_1, d)``, …, W_L ``(1, d_{L−1})``,
and the loss R(W) = (1/n) Σ_i (y_i − W_L⋯W_1 x_i)² — a mean, **no ½**. Sharpness S(W) is the largest
eigenvalue of the Hessian of R with respect to all weight entries.

Quantities (:func:`deep_linear_sharpness_bound`):

- w* = pinv(X) y, the (minimum-norm) least-squares solution; Σ = XᵀX/n; Λ = λ_max(Σ);
  κ = λ_max(Σ)/λ_min(Σ) (inf when Σ is singular, e.g. n < d); a = w*ᵀΣw*/‖w*‖².
- S_min = 2 L a ‖w*‖^{2−2/L}: every global minimizer has S ≥ S_min (their lower bound; the digest
  marks the constant as reconstructed — exact for d = 1, see below — and the tests check it).
- The line 8LΛ that they draw as the upper level reached by gradient flow from a small
  initialisation. It is stated for their normalisation ‖w*‖ = 1 (y and w* divided by ‖w*‖);
  this module returns 8LΛ as is, without rescaling by ‖w*‖.
- The critical step 2/S_min: gradient descent with a larger step cannot converge to any
  minimizer (a minimizer is stable for GD only if S ≤ 2/η).

Closed-form sharpness at a global minimizer (:func:`deep_linear_minimizer_sharpness`). Write
B_k = W_{k−1}⋯W_1 ``(d_{k−1}, d)`` (B_1 = I_d) and a_kᵀ = W_L⋯W_{k+1} ``(1, d_k)`` (a_L = 1), so that
p(x) = a_kᵀ W_k B_k x for every k and ∂p(x)/∂W_k = a_k (B_k x)ᵀ. With residuals
r_i = p(x_i) − y_i and J the n × P Jacobian of (p(x_i))_i with respect to all P weight entries,

    ∇²R = (2/n) JᵀJ + (2/n) Σ_i r_i ∇²p(x_i).

At a global minimizer R equals the least-squares minimum (any end-to-end vector is reachable),
so the end-to-end vector solves the normal equations: Xᵀr = 0. For fixed weights p(x) is linear
in x, hence so is its weight-Hessian: ∇²p(x) = T[x] for a linear map T, and the second term is
(2/n) T[Σ_i r_i x_i] = (2/n) T[Xᵀr] = 0. The Hessian is the Gauss–Newton term (2/n)JᵀJ, whose
nonzero eigenvalues are those of (2/n)JJᵀ, an n × n matrix with entries

    (JJᵀ)_{ij} = Σ_k ⟨a_k (B_k x_i)ᵀ, a_k (B_k x_j)ᵀ⟩_F = Σ_k ‖a_k‖² x_iᵀ B_kᵀ B_k x_j,

i.e. JJᵀ = X M Xᵀ with M = Σ_k ‖a_k‖² B_kᵀB_k ``(d, d)``, symmetric positive semidefinite. With
A = n^{−1/2} X M^{1/2}: (2/n)JJᵀ = 2AAᵀ, whose nonzero eigenvalues are those of 2AᵀA =
2 M^{1/2}ΣM^{1/2}, and (eig(PQ) = eig(QP)) those of 2 Σ^{1/2}MΣ^{1/2}. So

    S = 2 λ_max(Σ^{1/2} M Σ^{1/2}).

For d = 1 (scalar layers w_k, Σ = σ): S = 2σ Σ_k ∏_{l≠k} w_l² = 2σ p² Σ_k 1/w_k² ≥ 2σ L |p|^{2−2/L}
by the AM–GM inequality, with equality iff all |w_k| are equal (balanced): S_min is attained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class DeepLinearSharpnessBound:
    """Marion–Chizat constants for data (X, y) and depth L (float64; see the module docstring).

    Fields: depth L; w_star ``(d,)``; w_star_norm ‖w*‖; sigma Σ = XᵀX/n ``(d, d)``; lambda_max Λ;
    lambda_min; kappa Λ/λ_min (inf if Σ is singular); a = w*ᵀΣw*/‖w*‖²; s_min = 2La‖w*‖^{2−2/L};
    upper_line = 8LΛ (their ‖w*‖ = 1 normalisation); critical_step = 2/S_min.
    """

    depth: int
    w_star: Tensor
    w_star_norm: float
    sigma: Tensor
    lambda_max: float
    lambda_min: float
    kappa: float
    a: float
    s_min: float
    upper_line: float
    critical_step: float


def _as_float64(t) -> Tensor:
    return torch.as_tensor(t).detach().to(torch.float64)


def _check_xy(X, y=None) -> tuple[Tensor, Tensor | None]:
    X = _as_float64(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty (n, d) matrix, got shape {tuple(X.shape)}")
    if y is None:
        return X, None
    y = _as_float64(y).reshape(-1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} entries (one scalar target each)")
    return X, y


def deep_linear_sharpness_bound(X, y, depth: int) -> DeepLinearSharpnessBound:
    """S_min = 2La‖w*‖^{2−2/L}, the line 8LΛ and the critical step 2/S_min for data X ``(n, d)``, y ``(n,)``."""
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    X, y = _check_xy(X, y)
    n = X.shape[0]
    w_star = torch.linalg.pinv(X) @ y  # (d,) minimum-norm least squares
    norm = float(torch.linalg.vector_norm(w_star))
    if norm == 0.0:
        raise ValueError("w* = 0 (y is orthogonal to the columns of X): every constant here is degenerate")
    sigma = X.T @ X / n  # (d, d)
    eig = torch.linalg.eigvalsh(sigma)
    lam_max, lam_min = float(eig[-1]), float(eig[0])
    singular = lam_min <= eig.shape[0] * torch.finfo(torch.float64).eps * lam_max
    kappa = math.inf if singular else lam_max / lam_min
    a = float(w_star @ sigma @ w_star) / norm**2
    s_min = 2.0 * depth * a * norm ** (2.0 - 2.0 / depth)
    return DeepLinearSharpnessBound(
        depth=depth,
        w_star=w_star,
        w_star_norm=norm,
        sigma=sigma,
        lambda_max=lam_max,
        lambda_min=lam_min,
        kappa=kappa,
        a=a,
        s_min=s_min,
        upper_line=8.0 * depth * lam_max,
        critical_step=2.0 / s_min,
    )


def _layer_matrices(weights) -> list[Tensor]:
    if isinstance(weights, nn.Module):
        layers = [m for m in weights.modules() if isinstance(m, nn.Linear)]
        if any(m.bias is not None for m in layers):
            raise ValueError("a deep linear network here has no biases (nn.Linear(..., bias=False))")
        weights = [m.weight for m in layers]
    if not isinstance(weights, Sequence) or len(weights) == 0:
        raise ValueError("weights must be a non-empty sequence of layer matrices W_1, …, W_L")
    mats = [_as_float64(W) for W in weights]
    for k, W in enumerate(mats):
        if W.ndim != 2:
            raise ValueError(f"W_{k + 1} must be a matrix (out, in), got shape {tuple(W.shape)}")
        if k > 0 and W.shape[1] != mats[k - 1].shape[0]:
            raise ValueError(f"W_{k + 1} {tuple(W.shape)} does not follow W_{k} {tuple(mats[k - 1].shape)}")
    if mats[-1].shape[0] != 1:
        raise ValueError(f"the last layer must have one output (scalar regression), got {mats[-1].shape[0]}")
    return mats


def deep_linear_minimizer_sharpness(weights: Sequence[Tensor] | nn.Module, X) -> float:
    """S = 2 λ_max(Σ^{1/2} (Σ_k ‖a_k‖² B_kᵀB_k) Σ^{1/2}), the sharpness at a global minimizer.

    Args:
        weights: W_1 ``(d_1, d)``, …, W_L ``(1, d_{L−1})`` in the order they act (nn.Linear's
            ``(out, in)`` layout), or a module whose ``nn.Linear`` layers (no bias) are those.
        X: inputs ``(n, d)``; Σ = XᵀX/n.

    Valid only at a global minimizer of the mean square loss (Xᵀr = 0, module docstring); at any
    other point it is the top eigenvalue of the Gauss–Newton part (2/n)JᵀJ. Computed in float64.
    """
    mats = _layer_matrices(weights)
    X, _ = _check_xy(X)
    d = X.shape[1]
    if mats[0].shape[1] != d:
        raise ValueError(f"W_1 takes {mats[0].shape[1]} inputs but X has d = {d} columns")
    L = len(mats)
    prefix = [torch.eye(d, dtype=torch.float64)]  # B_1 = I, B_{k+1} = W_k B_k
    for W in mats[:-1]:
        prefix.append(W @ prefix[-1])
    suffix = [torch.ones(1, 1, dtype=torch.float64)]  # a_Lᵀ = 1, a_{k}ᵀ = a_{k+1}ᵀ W_{k+1}
    for W in reversed(mats[1:]):
        suffix.append(suffix[-1] @ W)
    suffix.reverse()  # suffix[k] = a_{k+1}ᵀ (0-based k)
    M = sum(float(suffix[k].square().sum()) * prefix[k].T @ prefix[k] for k in range(L))  # (d, d)
    sigma = X.T @ X / X.shape[0]
    evals, evecs = torch.linalg.eigh(sigma)
    root = evecs @ torch.diag(evals.clamp_min(0.0).sqrt()) @ evecs.T  # Σ^{1/2}
    inner = root @ M @ root
    return 2.0 * float(torch.linalg.eigvalsh(0.5 * (inner + inner.T))[-1])


# ------------------------------------------------------------------------------------ rank-one aligned minimizer


def rank_one_aligned_minimizer(w_star, depth: int, v=None) -> list[Tensor]:
    """The balanced rank-one aligned global minimizer W_1 = σ v uᵀ, W_k = σ v vᵀ (1 < k < L), W_L = σ vᵀ.

    u = w*/‖w*‖, σ = ‖w*‖^{1/L} and v a unit vector of the hidden width m (default: v = u, so m = d).
    Its end-to-end vector is σ^L (vᵀv)^{L−1} uᵀ = w*ᵀ, so for overdetermined data (X of full column
    rank) it is a global minimizer of R. Depth 1 is the single layer W_1 = w*ᵀ.

    Args:
        w_star: the least-squares solution ``(d,)`` (nonzero).
        depth: L ≥ 1.
        v: the hidden direction ``(m,)`` (normalised here), or None for u.

    Returns:
        [W_1 ``(m, d)``, W_2 … W_{L−1} ``(m, m)``, W_L ``(1, m)``] in float64.
    """
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    w = _as_float64(w_star).reshape(-1)
    norm = float(torch.linalg.vector_norm(w))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError("w* must be a finite, nonzero vector")
    if depth == 1:
        return [w.reshape(1, -1).clone()]
    u = w / norm
    v = u if v is None else _as_float64(v).reshape(-1)
    v_norm = float(torch.linalg.vector_norm(v))
    if v_norm == 0.0 or not math.isfinite(v_norm):
        raise ValueError("v must be a finite, nonzero vector")
    v = v / v_norm
    s = norm ** (1.0 / depth)
    return [s * torch.outer(v, u)] + [s * torch.outer(v, v) for _ in range(depth - 2)] + [s * v.reshape(1, -1)]


def rank_one_aligned_sharpness(X, y, depth: int) -> float:
    """S of the balanced rank-one aligned minimizer (:func:`rank_one_aligned_minimizer`), in closed form.

    Derivation (the module docstring's S = 2λ_max(Σ^{1/2}MΣ^{1/2}), M = Σ_k ‖a_k‖² B_kᵀB_k): here
    a_kᵀ = W_L⋯W_{k+1} = σ^{L−k} vᵀ (a_L = 1) and B_k = W_{k−1}⋯W_1 = σ^{k−1} v uᵀ for k ≥ 2 (B_1 = I),
    so ‖a_1‖²B_1ᵀB_1 = σ^{2L−2} I and ‖a_k‖²B_kᵀB_k = σ^{2L−2} uuᵀ for k ≥ 2:

        M = σ^{2L−2} (I + (L−1) uuᵀ),   S = 2‖w*‖^{2−2/L} λ_max(Σ^{1/2}(I + (L−1)uuᵀ)Σ^{1/2}).

    It does not depend on v. Against S_min = 2La‖w*‖^{2−2/L}: with x = Σ^{1/2}u/‖Σ^{1/2}u‖ the Rayleigh
    quotient is uᵀΣ²u/uᵀΣu + (L−1)uᵀΣu ≥ L·uᵀΣu = La (Cauchy–Schwarz), so S ≥ S_min, with equality
    only if Σu = λ_u u (u an eigenvector of Σ). Then the matrix is Σ + (L−1)λ_u uuᵀ, whose eigenvalues
    are Lλ_u and the other eigenvalues of Σ: S = 2‖w*‖^{2−2/L} max(Lλ_u, max_{j≠u} λ_j), which equals
    S_min exactly when moreover Lλ_u ≥ every other eigenvalue (always for the top eigenvector, or
    d = 1; not for an eigenvector of a small eigenvalue at small L). This condition is ours: the
    issue text states only "u an eigenvector".

    Args:
        X: inputs ``(n, d)``, Σ = XᵀX/n; y: targets ``(n,)`` (w* = pinv(X)y); depth: L ≥ 1.
    """
    ref = deep_linear_sharpness_bound(X, y, depth)
    u = ref.w_star / ref.w_star_norm
    evals, evecs = torch.linalg.eigh(ref.sigma)
    root = evecs @ torch.diag(evals.clamp_min(0.0).sqrt()) @ evecs.T  # Σ^{1/2}
    inner = root @ (torch.eye(u.shape[0], dtype=torch.float64) + (depth - 1) * torch.outer(u, u)) @ root
    top = float(torch.linalg.eigvalsh(0.5 * (inner + inner.T))[-1])
    return 2.0 * ref.w_star_norm ** (2.0 - 2.0 / depth) * top

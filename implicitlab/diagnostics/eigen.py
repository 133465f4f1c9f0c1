"""Extreme eigenvalues of a symmetric operator with certified residuals: Lanczos, and a baseline.

``A`` is anything symmetric with ``A.shape == (D, D)`` and ``A @ v`` for a torch vector ``v``
``(D,)``: a :class:`~implicitlab.diagnostics.hessian.HessianOperator`, or a dense tensor in tests.

:func:`lanczos_eigenpairs` runs Lanczos with full reorthogonalization (classical Gram–Schmidt,
twice, against the whole basis) on the operator's device. After j products it has an orthonormal
basis Q_j and a tridiagonal T_j with

    A Q_j = Q_j T_j + β_j q_{j+1} e_jᵀ,

so for a Ritz pair (θ, v = Q_j s) of T_j the residual is ‖A v − θ v‖ = β_j |s_j| (Parlett,
*The Symmetric Eigenvalue Problem*, 1998, ch. 13) — free, exact up to rounding while the basis stays
orthogonal, which full reorthogonalization ensures. This is the residual reported (or, with
``explicit_residuals=True``, ‖Av − θv‖ recomputed with one more product per eigenvalue).

What the residual certifies (A symmetric): some eigenvalue lies within r of θ; if the other
eigenvalues are at least δ away from θ, that one lies within r²/δ (Parlett 1998, ch. 4 and 11:
the residual bound and the gap theorem). ``tol`` is a
*relative* accuracy of the eigenvalues, and ``criterion`` says how it is tested:

- ``"residual"`` (default): stop when r ≤ tol·|θ|. Certified: no assumption on the spectrum.
- ``"gap"``: stop when min(r, r²/δ̂) ≤ tol·|θ|, with δ̂ = min_j (|θ − θ_j| − r_j) the distance
  to the nearest other Ritz value less its residual. Fewer products for the same eigenvalue
  accuracy, but δ̂ can still overestimate δ while the eigenvalue next to θ has not been seen
  (Ritz values lie inside the spectrum), so it is an estimate, not a certificate.
  ``error_bounds`` reports min(r, r²/δ̂) for both criteria.

Lanczos stops when every wanted Ritz pair has converged, or after ``max_matvecs`` products (then
``converged`` is False where the test failed — no warning is raised), or when the Krylov space is
exhausted (all Ritz values then exact). If the Krylov space becomes invariant before the wanted
eigenvalues converge (a start vector deficient in them, or a multiple eigenvalue), Lanczos
continues from a fresh random vector orthogonal to the basis.

A warm start ``v0`` (the previous eigenvector(s) along training, where sharpness moves slowly)
makes the first Ritz value already accurate; note that a Ritz pair with a small residual is an
eigenpair but not necessarily the *extreme* one — a warm start that has lost the top eigenvector
entirely can converge to the next. :func:`power_iteration` is the baseline the benchmark compares
with (PyHessian's rule: stop at a relative change < 1e-3, at most 100 iterations).

Results hold one run: ``values`` is ``(k,)``. Batched operators (an ensemble of R runs) will give
``(R, k)``-shaped fields with the same names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from .hessian import HessianOperator

WHICH = ("LA", "SA", "LM")
CRITERIA = ("residual", "gap")
DEFAULT_MAX_MATVECS = 200  # memory: the basis holds this many vectors of length D


@dataclass(frozen=True)
class EigenResult:
    """Eigenpairs of a symmetric operator with their residuals.

    Fields (k = number of eigenpairs, D = dimension):
        values: ``(k,)`` float64, ordered by ``which`` (LA: descending; SA: ascending; LM: by |λ|
            descending).
        vectors: ``(D, k)`` unit eigenvector estimates, on the operator's device and dtype.
        residuals: ``(k,)`` float64, ‖A v − λ v‖ (``residual_kind`` says how it was obtained).
        error_bounds: ``(k,)`` float64, estimated |λ_true − λ|: min(r, r²/gap) for Lanczos.
        converged: ``(k,)`` bool, the stopping test passed.
        num_matvecs: products used by this solve (an operator's determinism probe not included).
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    error_bounds: Tensor
    converged: Tensor
    num_matvecs: int
    which: str
    tol: float
    criterion: str
    method: str
    residual_kind: str = "lanczos"  # "lanczos": β_j|s_j|; "explicit": recomputed; "power": from Av
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    def __repr__(self) -> str:
        status = "all converged" if self.all_converged else "NOT CONVERGED"
        lines = [
            f"EigenResult({self.method}, which={self.which!r}, num_matvecs={self.num_matvecs}, {status} "
            f"(tol={self.tol:g}, criterion={self.criterion!r}, residuals: {self.residual_kind})"
        ]
        for i in range(self.values.shape[0]):
            flag = "converged" if bool(self.converged[i]) else "NOT converged"
            lines.append(
                f"  λ_{i + 1} = {float(self.values[i]): .12e}   residual {float(self.residuals[i]):.2e}"
                f"   error bound {float(self.error_bounds[i]):.2e}   {flag}"
            )
        return "\n".join(lines) + ")"


# ---------------------------------------------------------------------- the Lanczos core ---
def operator_dim(A) -> int:
    shape = tuple(A.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"expected a square operator, got shape {shape}")
    return int(shape[0])


def _dtype_device(A) -> tuple[torch.dtype, torch.device]:
    dtype = getattr(A, "dtype", torch.float64)
    device = getattr(A, "device", torch.device("cpu"))
    if not isinstance(dtype, torch.dtype):
        dtype = torch.float64
    return dtype, torch.device(device)


class Lanczos:
    """Lanczos with full reorthogonalization; one product per :meth:`step`.

    Holds the basis ``Q`` (rows, at most ``(capacity + 1, D)``), the diagonal ``alpha`` and the couplings
    ``beta`` (``beta[j]`` couples q_j and q_{j+1}; the last one is the residual coupling β_j).
    """

    def __init__(self, A, capacity: int, generator: torch.Generator | None = None) -> None:
        self.A = A
        self.dim = operator_dim(A)
        self.dtype, self.device = _dtype_device(A)
        self.capacity = capacity
        rows = min(capacity + 1, 16)  # grown by doubling: memory follows the vectors actually used
        self.Q = torch.zeros(rows, self.dim, dtype=self.dtype, device=self.device)
        self.alpha: list[float] = []
        self.beta: list[float] = []
        self.size = 0  # number of basis vectors q_0 … q_{size-1} whose product has been taken
        self.num_matvecs = 0
        self.generator = generator
        self.anorm = 0.0  # running estimate of ‖A‖ (max |α|, β seen)
        self._eps = float(torch.finfo(self.dtype).eps)
        self.exhausted = False

    def _ensure_row(self, row: int) -> None:
        if row >= self.Q.shape[0]:
            rows = min(self.capacity + 1, 2 * self.Q.shape[0])
            bigger = torch.zeros(rows, self.dim, dtype=self.dtype, device=self.device)
            bigger[: self.Q.shape[0]] = self.Q
            self.Q = bigger

    def _orthogonalize(self, w: Tensor, upto: int) -> tuple[Tensor, Tensor]:
        """w − Q Qᵀ w against rows < upto, twice (CGS2); returns (w, coefficients)."""
        if upto == 0:
            return w, torch.zeros(0, dtype=w.dtype, device=w.device)
        basis = self.Q[:upto]
        h = basis @ w
        w = w - basis.T @ h
        h2 = basis @ w
        return w - basis.T @ h2, h + h2

    def start(self, v: Tensor | None) -> bool:
        """Put the next start vector (random if None) at q_size, orthogonal to the basis."""
        if self.size >= self.dim:
            self.exhausted = True
            return False
        if v is None:
            v = torch.randn(self.dim, generator=self.generator, dtype=self.dtype, device=self.device)
        v = v.to(dtype=self.dtype, device=self.device).reshape(self.dim)
        original = float(torch.linalg.vector_norm(v))
        v, _ = self._orthogonalize(v, self.size)
        norm = float(torch.linalg.vector_norm(v))
        if not np.isfinite(norm) or norm <= 1e3 * self._eps * original:  # v lies in the basis' span
            self.exhausted = True
            return False
        self._ensure_row(self.size)
        self.Q[self.size] = v / norm
        if self.beta:  # a restart: the coupling to the previous block is zero
            self.beta[-1] = 0.0
        return True

    def step(self) -> None:
        """One product: extends T by α_j and β_j, and stores q_{j+1} unless breakdown."""
        j = self.size
        q = self.Q[j]
        w = self.A @ q
        self.num_matvecs += 1
        if not isinstance(w, Tensor):
            raise TypeError(f"A @ v must return a torch.Tensor, got {type(w).__name__}")
        w = w.to(dtype=self.dtype, device=self.device).reshape(self.dim)
        if not torch.isfinite(w).all():
            raise ValueError("the operator returned a non-finite product")
        w, h = self._orthogonalize(w, j + 1)
        a = float(h[j])
        b = float(torch.linalg.vector_norm(w))
        self.alpha.append(a)
        self.beta.append(b)
        self.size = j + 1
        self.anorm = max(self.anorm, abs(a), b)
        if self.size >= self.dim:
            self.beta[-1] = 0.0 if b <= self._breakdown_level() else b
            self.exhausted = True
            return
        if b > self._breakdown_level() and self.size <= self.capacity:
            self._ensure_row(self.size)
            self.Q[self.size] = w / b
        else:
            self.beta[-1] = 0.0  # invariant subspace: the Ritz values of this block are exact

    def _breakdown_level(self) -> float:
        return 1e2 * self._eps * max(self.anorm, 1e-300) * max(1.0, self.size**0.5)

    @property
    def broken(self) -> bool:
        """The last step found an invariant subspace (β = 0): a new start vector is needed."""
        return bool(self.beta) and self.beta[-1] == 0.0 and not self.exhausted

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values ``(m,)`` ascending and the eigenvectors ``(m, m)`` of T_m (float64)."""
        d = np.asarray(self.alpha, dtype=np.float64)
        if d.size == 1:
            return d.copy(), np.ones((1, 1))
        e = np.asarray(self.beta[:-1], dtype=np.float64)
        return eigh_tridiagonal(d, e)

    def ritz_vectors(self, S: np.ndarray) -> Tensor:
        """Q_m S: ``(D, columns of S)``, normalised."""
        S_t = torch.as_tensor(S, dtype=self.dtype, device=self.device)
        V = self.Q[: self.size].T @ S_t
        return V / torch.linalg.vector_norm(V, dim=0, keepdim=True).clamp_min(1e-300)


# -------------------------------------------------------------------------- eigenpairs ---
def _select(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    if which == "LA":
        return np.argsort(-theta, kind="stable")[:k]
    if which == "SA":
        return np.argsort(theta, kind="stable")[:k]
    return np.argsort(-np.abs(theta), kind="stable")[:k]


def _gaps(theta: np.ndarray, residuals: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """δ̂_i = min_{j≠i} (|θ_i − θ_j| − r_j): the distance to the nearest other Ritz value, less
    that value's residual (an eigenvalue may lie that much closer). inf with a single Ritz value."""
    out = np.full(idx.shape, np.inf)
    if theta.size > 1:
        for n, i in enumerate(idx):
            others = np.arange(theta.size) != i
            out[n] = np.min(np.abs(theta[others] - theta[i]) - residuals[others])
    return out


def _error_bounds(r: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """min(r, r²/δ̂) where δ̂ > r; r where the gap is unknown or not resolved."""
    usable = np.isfinite(gap) & (gap > r)
    return np.where(usable, np.minimum(r, r**2 / np.where(usable, gap, 1.0)), r)


def _check_common(A, k: int, which: str, tol: float, criterion: str) -> int:
    dim = operator_dim(A)
    if which not in WHICH:
        raise ValueError(f"unknown which={which!r}; choose one of {list(WHICH)}")
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion={criterion!r}; choose one of {list(CRITERIA)}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > dim:
        raise ValueError(f"k = {k} eigenvalues requested but the operator has only {dim} dimensions (parameters)")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    return dim


def _start_vector(v0: Tensor | None, dim: int) -> Tensor | None:
    if v0 is None:
        return None
    v0 = torch.as_tensor(v0)
    if v0.ndim == 2:  # previous eigenvectors (D, m): start from their (normalised) sum
        if v0.shape[0] != dim:
            raise ValueError(f"v0 must have {dim} rows, got {tuple(v0.shape)}")
        v0 = (v0 / torch.linalg.vector_norm(v0, dim=0, keepdim=True).clamp_min(1e-300)).sum(1)
    if v0.shape != (dim,):
        raise ValueError(f"v0 must have shape ({dim},) or ({dim}, m), got {tuple(v0.shape)}")
    if not torch.isfinite(v0).all() or float(torch.linalg.vector_norm(v0)) == 0.0:
        raise ValueError("v0 must be a finite, nonzero vector")
    return v0


def lanczos_eigenpairs(
    A,
    k: int = 1,
    which: str = "LA",
    *,
    tol: float = 1e-6,
    atol: float = 0.0,
    criterion: str = "residual",
    v0: Tensor | None = None,
    max_matvecs: int | None = None,
    explicit_residuals: bool = False,
    seed: int = 0,
) -> EigenResult:
    """The k extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalization.

    Args:
        A: symmetric operator, ``A.shape == (D, D)``, ``A @ v`` for ``v`` ``(D,)``; its ``dtype``
            and ``device`` attributes (if any) set those of the basis (default float64, CPU).
        k: number of eigenpairs, 1 ≤ k ≤ D.
        which: ``"LA"`` largest algebraic (sharpness), ``"SA"`` smallest algebraic (most negative
            curvature), ``"LM"`` largest magnitude.
        tol: relative accuracy of each eigenvalue, tested per ``criterion`` (module docstring).
        atol: absolute floor of the test, max(tol·|θ|, atol) — for eigenvalues near zero.
        criterion: ``"residual"`` (certified, default) or ``"gap"`` (r²/gap: fewer products,
            0.65–0.9× in ``benchmarks/sharpness.py``, but an estimate).
        v0: start vector ``(D,)`` or previous eigenvectors ``(D, m)`` (their sum); random if None.
        max_matvecs: budget of products and size of the basis (default min(D, 200)).
        explicit_residuals: recompute ‖Av − θv‖ with k more products (counted).
        seed: seed of the random start (and of restart vectors).

    Returns:
        :class:`EigenResult`. Raises ValueError for k > D, max_matvecs < k, an unknown ``which``
        or ``criterion``, tol ≤ 0, a zero or misshapen ``v0``.
    """
    dim = _check_common(A, k, which, tol, criterion)
    budget = min(dim, DEFAULT_MAX_MATVECS) if max_matvecs is None else int(max_matvecs)
    if budget < k:
        raise ValueError(f"max_matvecs must be ≥ k = {k} (one product per Ritz value at least), got {max_matvecs}")
    dtype, device = _dtype_device(A)
    gen = torch.Generator(device=device).manual_seed(seed)
    lz = Lanczos(A, capacity=min(budget, dim), generator=gen)
    lz.start(_start_vector(v0, dim))

    while True:
        lz.step()
        theta, S = lz.ritz()
        idx = _select(theta, k, which)
        r_all = abs(lz.beta[-1]) * np.abs(S[-1, :])  # residual of every Ritz pair
        r = r_all[idx]
        gap = _gaps(theta, r_all, idx)
        bound = _error_bounds(r, gap)
        test = r if criterion == "residual" else bound
        conv = (test <= np.maximum(tol * np.abs(theta[idx]), atol)) & (theta.size >= k)
        done = bool(conv.all()) or lz.exhausted or lz.num_matvecs >= budget or lz.size >= lz.capacity
        if done:
            break
        if lz.broken and not lz.start(None):
            break

    vectors = lz.ritz_vectors(S[:, idx])
    values = theta[idx]
    kind = "lanczos"
    if explicit_residuals:
        r = np.empty(len(idx))
        for n in range(len(idx)):
            Av = (A @ vectors[:, n]).to(dtype=dtype, device=device)
            r[n] = float(torch.linalg.vector_norm(Av - float(values[n]) * vectors[:, n]))
        lz.num_matvecs += len(idx)
        bound = _error_bounds(r, gap)
        test = r if criterion == "residual" else bound
        conv = (test <= np.maximum(tol * np.abs(values), atol)) & (theta.size >= k)
        kind = "explicit"
    return EigenResult(
        values=torch.as_tensor(values, dtype=torch.float64),
        vectors=vectors,
        residuals=torch.as_tensor(r, dtype=torch.float64),
        error_bounds=torch.as_tensor(bound, dtype=torch.float64),
        converged=torch.as_tensor(conv, dtype=torch.bool),
        num_matvecs=lz.num_matvecs,
        which=which,
        tol=tol,
        criterion=criterion,
        method="lanczos",
        residual_kind=kind,
        extra={"ritz_values": theta, "basis_size": lz.size},
    )


def power_iteration(
    A,
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: Tensor | None = None,
    seed: int = 0,
) -> EigenResult:
    """Baseline: PyHessian-style power iteration for the largest-*magnitude* eigenvalue.

    θ_t = v_tᵀ A v_t, v_{t+1} = A v_t / ‖A v_t‖; stops when |θ_t − θ_{t−1}| / (|θ_{t−1}| + 1e-6) < tol
    (PyHessian's rule and defaults: tol = 1e-3, 100 iterations). Returns the last Rayleigh quotient
    with its residual ‖A v_t − θ_t v_t‖ (free: A v_t is at hand); ``converged`` means the
    relative-change rule fired — not that the residual is small.
    """
    dim = operator_dim(A)
    dtype, device = _dtype_device(A)
    gen = torch.Generator(device=device).manual_seed(seed)
    v = _start_vector(v0, dim)
    if v is None:
        v = torch.randn(dim, generator=gen, dtype=dtype, device=device)
    v = v.to(dtype=dtype, device=device)
    v = v / torch.linalg.vector_norm(v)
    previous = None
    converged = False
    for it in range(1, max_iter + 1):
        Av = (A @ v).to(dtype=dtype, device=device)
        theta = float(v @ Av)
        residual = float(torch.linalg.vector_norm(Av - theta * v))
        if previous is not None and abs(theta - previous) / (abs(previous) + 1e-6) < tol:
            converged = True
            break
        previous = theta
        if it < max_iter:
            v = Av / torch.linalg.vector_norm(Av)
    return EigenResult(
        values=torch.tensor([theta], dtype=torch.float64),
        vectors=v.reshape(dim, 1),
        residuals=torch.tensor([residual], dtype=torch.float64),
        error_bounds=torch.tensor([residual], dtype=torch.float64),
        converged=torch.tensor([converged]),
        num_matvecs=it,
        which="LM",
        tol=tol,
        criterion="relative change",
        method="power",
        residual_kind="power",
    )


def sharpness(
    model: torch.nn.Module,
    loss,
    X,
    y=None,
    k: int = 1,
    tol: float = 1e-6,
    which: str = "LA",
    v0: Tensor | None = None,
    chunk_size: int | None = None,
    max_matvecs: int | None = None,
    *,
    criterion: str = "residual",
    reduction: str = "mean",
    check_determinism: bool = True,
    reuse: str = "graph",
    seed: int = 0,
) -> EigenResult:
    """Sharpness: the top-k Hessian eigenvalues of a model's data-set loss, with residuals.

    Builds a :class:`~implicitlab.diagnostics.hessian.HessianOperator` (``loss``, ``X``, ``y``,
    ``chunk_size``, ``reduction``, ``reuse`` as there; its determinism probe costs two products, not counted
    in ``num_matvecs``) and runs :func:`lanczos_eigenpairs` (``k``, ``which``, ``tol``, ``v0``,
    ``max_matvecs``, ``criterion`` as there). To follow a model along training, build the
    operator once and call :func:`lanczos_eigenpairs` with ``v0=previous.vectors``.

    Example::

        res = sharpness(model, "ce", X, y)           # res.values[0] ± res.residuals[0]
    """
    H = HessianOperator(
        model, loss, X, y, chunk_size=chunk_size, reduction=reduction,
        check_determinism=check_determinism, reuse=reuse, seed=seed,
    )
    _check_common(H, k, which, tol, criterion)
    return lanczos_eigenpairs(
        H, k, which, tol=tol, criterion=criterion, v0=v0, max_matvecs=max_matvecs, seed=seed
    )

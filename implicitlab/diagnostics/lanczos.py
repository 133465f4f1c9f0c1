"""Lanczos for one symmetric operator or a batch of R independent ones: the package's one eigensolver.

An operator ``A`` is either one matrix — ``A.shape == (D, D)``, ``A @ v`` for ``v`` ``(D,)``: a
:class:`~implicitlab.diagnostics.hessian.HessianOperator`, or a dense tensor — or R matrices at once
— ``A.shape == (R, D, D)``, ``A @ V`` for ``V`` ``(R, D)`` giving row r = A_r v_r: an
:class:`~implicitlab.diagnostics.ensemble_curvature.EnsembleHessian`, or a dense ``(R, D, D)``
tensor. One model is the case R = 1; every rule below holds per run.

:func:`lanczos_eigenpairs` runs R Lanczos recurrences in lockstep, one batched product per step,
each with full reorthogonalization (classical Gram–Schmidt, twice, against its whole basis). After
j products run r has an orthonormal basis Q_j and a tridiagonal T_j with

    A Q_j = Q_j T_j + β_j q_{j+1} e_jᵀ,

so for a Ritz pair (θ, v = Q_j s) of T_j the residual is ‖A v − θ v‖ = β_j |s_j| (Parlett,
*The Symmetric Eigenvalue Problem*, 1998, ch. 13) — free, exact up to rounding while the basis stays
orthogonal, which full reorthogonalization ensures. This is the residual reported (or, with
``explicit_residuals=True``, ‖Av − θv‖ recomputed with one more product per eigenvalue).

What the residual certifies (A symmetric): some eigenvalue lies within r of θ; if the other
eigenvalues are at least δ away from θ, that one lies within r²/δ (Parlett 1998, ch. 4 and 11:
the residual bound and the gap theorem). ``tol`` is a *relative* accuracy of the eigenvalues, and
``criterion`` says how it is tested:

- ``"residual"`` (default): stop when r ≤ tol·|θ|. Certified: no assumption on the spectrum.
- ``"gap"``: stop when min(r, r²/δ̂) ≤ tol·|θ|, with δ̂ = min_j (|θ − θ_j| − r_j) the distance
  to the nearest other Ritz value less its residual. Fewer products for the same eigenvalue
  accuracy, but δ̂ can still overestimate δ while the eigenvalue next to θ has not been seen
  (Ritz values lie inside the spectrum), so it is an estimate, not a certificate.
  ``error_bounds`` reports min(r, r²/δ̂) for both criteria.

A run stops when every wanted Ritz pair has converged, or after ``max_matvecs`` products (then
``converged`` is False where the test failed — no warning is raised), or when its Krylov space is
exhausted (all Ritz values then exact up to rounding). If the Krylov space becomes invariant (β = 0:
a start vector deficient in some eigenvectors, a multiple eigenvalue, or a β under the operator's
rounding floor, below) before the wanted pairs have converged, the run continues from a fresh random
vector orthogonal to its basis. The batch stops when every run has.

**Precision: the breakdown rule and the rounding floor.** The basis and the recurrence are kept in
the operator's dtype if it is float32 or float64, else in float32 (unit roundoff ε_w); only the
product runs in the operator's dtype (ε_op, ``torch.finfo(dtype).eps``): the vector is cast to it
and the result back. The computed product is fl(Aq) = Aq + e. With full reorthogonalization,
Lanczos computes the exact decomposition of the computed products, A Q_j + E_j = Q_j T_j +
β_j q_{j+1} e_jᵀ with ‖E_j s‖ ≲ max_i ‖e_i‖ + O(ε_w‖A‖) (Paige's analysis, Parlett 1998 §13.4), so a
Ritz pair has ‖Av − θv‖ ≤ β_j|s_j| + ‖E_j s‖: β_j|s_j| certifies an eigenvalue of the *computed*
operator, and θ — a Rayleigh quotient of the computed products — is off from vᵀAv by up to ‖E_j s‖
to *first* order, which the gap bound r²/δ does not see. (In float32 the bound r²/δ alone printed
8.4e-13 for a top eigenvalue 8e-8 away from the float64 one.) Hence the *rounding floor*

    f = FLOOR_FACTOR · ε_op · ‖A‖,   FLOOR_FACTOR = 2,   ‖A‖ estimated by the largest row sum of |T_j|,

for every operator that is not float64 (float32, bfloat16, float16): residuals are reported as
β_j|s_j| + f (explicit ones as ‖fl(Av) − θv‖ + f), error bounds as min(r, r²/δ̂ + f), and the
stopping test is made on those, so a run is converged only where f ≤ tol·|θ|. The constant is
measured, not proved: over 15 float32 models (MLPs with biases under cross-entropy and the square
loss, a small CNN; ``tests/diagnostics/test_precision.py``) the product error at the top
eigenvector was ‖e‖ ≤ 1.6·ε_op‖A‖ (0.2–0.4·ε_op‖A‖ at random vectors), the top eigenvalue's
error against the float64 Hessian of the same weights ≤ 0.54·ε_op‖A‖, and the row-sum estimate
1.16–1.31·‖A‖; so f ≈ 2.3–2.6·ε_op‖A‖, 1.5× over the largest product error and ≥ 4× over the
largest eigenvalue error. (Half precision: measured ‖e‖ = 0.1–0.35·ε_op‖A‖ for MLP Hessians.) A
model whose Hessian is a small difference of large terms can have a larger product error than
this: for a certificate against the exact Hessian, measure a float64 copy. float64 operators have
no floor: ε₆₄‖A‖ ≈ 2e-16·‖A‖ is far below every tolerance the package uses (the tightest, 1e-12),
and their residuals and bounds are those of the computed operator, as before.

With f = 2·ε_op‖A‖ the default tol = 1e-6 is within reach in float32 for eigenvalues near ‖A‖
(f/‖A‖ ≈ 2.4e-7), not for ones much smaller than ‖A‖ (honestly flagged ``converged=False``), and
never in half precision (ε = 2⁻⁷ in bfloat16, 2⁻¹⁰ in float16), where a run uses its whole budget
and reports its best estimate with ``converged=False``: pass a tol above 2·ε_op·‖A‖/|λ| for a
certificate. The model-level diagnostics (``sharpness``, the tracker, traces, spectra) refuse half
precision models outright (:func:`check_curvature_dtype`); a dense half-precision tensor passed here
gets the floor.

The breakdown rule: β_j ≤ max(100·ε_w·‖A‖·√j, f) ends the block (β_j is set to 0); with the floor
above ε_w's level (half precision) such a breakdown certifies nothing, the residual keeping its + f.
(The rule this replaces scaled the thresholds with the operator's ε: in bfloat16 100·ε = 0.78, and
the start-vector test 1000·ε = 7.8 rejected every start, so ``sharpness(model.bfloat16(), …)``
reported λ = 0 with residual 0, converged, after one product.)

Non-finite values: a run whose product (or α, β) is not finite — diverged weights, an overflow —
gets NaN values, vectors, residuals and error bounds and ``converged=False``; the other runs are
unaffected. One model follows the same rule (R = 1): a NaN result, not an exception. Bad *arguments*
raise ValueError (k > D, an unknown ``which``, tol ≤ 0, a zero or misshapen ``v0`` of one model).

Warm starts: a start ``v0`` near the wanted eigenvector(s) makes the first Ritz value already
accurate; a Ritz pair with a small residual is an eigenpair but not necessarily the *extreme* one
— a warm start that has lost the top eigenvector entirely can converge to the next. Along training
:class:`WarmStart` extrapolates the last two eigenvectors (signs aligned):
v_t + (v_t − v_{t−1}), which follows a smoothly turning eigenvector to second order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

WHICH = ("LA", "SA", "LM")
CRITERIA = ("residual", "gap")
DEFAULT_MAX_MATVECS = 200  # memory: the basis holds up to this many vectors of length D per run
BREAKDOWN_FACTOR = 1e2  # β ≤ BREAKDOWN_FACTOR·ε_w·‖A‖·√j is a breakdown (module docstring)
FLOOR_FACTOR = 2.0  # rounding floor f = FLOOR_FACTOR·ε_op·‖A‖ of a non-float64 operator (module docstring)
HALF_PRECISION = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class EigenResult:
    """Eigenpairs of a symmetric operator (or of R of them) with their residuals.

    Fields, for one operator (k = number of eigenpairs, D = dimension); a batch of R operators has
    the same fields with a leading run dimension R:
        values: ``(k,)`` float64, ordered by ``which`` (LA: descending; SA: ascending; LM: by |λ|
            descending); NaN for a run whose products were not finite.
        vectors: ``(D, k)`` unit eigenvector estimates, on the operator's device, in the dtype of the
            basis (the operator's, at least float32).
        residuals: ``(k,)`` float64, ‖A v − λ v‖ (``residual_kind`` says how it was obtained),
            plus the operator's rounding floor (every dtype but float64, module docstring).
        error_bounds: ``(k,)`` float64, estimated |λ_true − λ|: min(r, r²/gap).
        converged: ``(k,)`` bool, the stopping test passed on the reported residuals.
        lanczos_residuals: ``(k,)`` float64, β_j|s_j| (plus the floor) where the run stopped —
            equal to ``residuals`` unless those were recomputed explicitly.
        num_matvecs: products used by this solve (batched products for R runs: each gives one
            product to every run), explicit-residual products included; an operator's determinism
            probe not included.
        run_matvecs: ``()`` int64 (``(R,)`` for a batch): products each run used until it stopped,
            explicit-residual products included (= ``num_matvecs`` for one operator).
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    error_bounds: Tensor
    converged: Tensor
    lanczos_residuals: Tensor
    num_matvecs: int
    run_matvecs: Tensor
    which: str
    tol: float
    criterion: str
    method: str
    residual_kind: str = "lanczos"  # "lanczos": β_j|s_j|; "explicit": recomputed; "power": from Av

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    @property
    def num_runs(self) -> int | None:
        """R for a batch, None for one operator."""
        return int(self.values.shape[0]) if self.values.ndim == 2 else None

    def run(self, r: int) -> EigenResult:
        """Run r of a batch as a one-operator result (``num_matvecs`` = that run's products)."""
        if self.num_runs is None:
            raise ValueError("run(r) needs a batched result (values of shape (R, k))")
        return EigenResult(
            values=self.values[r], vectors=self.vectors[r], residuals=self.residuals[r],
            error_bounds=self.error_bounds[r], converged=self.converged[r],
            lanczos_residuals=self.lanczos_residuals[r], num_matvecs=int(self.run_matvecs[r]),
            run_matvecs=self.run_matvecs[r], which=self.which, tol=self.tol, criterion=self.criterion,
            method=self.method, residual_kind=self.residual_kind,
        )

    def __repr__(self) -> str:
        status = "all converged" if self.all_converged else "NOT CONVERGED"
        runs = "" if self.num_runs is None else f"{self.num_runs} runs, "
        lines = [
            f"EigenResult({self.method}, {runs}which={self.which!r}, num_matvecs={self.num_matvecs}, {status} "
            f"(tol={self.tol:g}, criterion={self.criterion!r}, residuals: {self.residual_kind})"
        ]
        singles = [(None, self)] if self.num_runs is None else [(r, self.run(r)) for r in range(min(self.num_runs, 8))]
        for r, res in singles:
            prefix = "" if r is None else f"run {r}: "
            for i in range(res.values.shape[0]):
                flag = "converged" if bool(res.converged[i]) else "NOT converged"
                lines.append(
                    f"  {prefix}λ_{i + 1} = {float(res.values[i]): .12e}   residual {float(res.residuals[i]):.2e}"
                    f"   error bound {float(res.error_bounds[i]):.2e}   {flag}"
                )
        if self.num_runs is not None and self.num_runs > 8:
            lines.append(f"  … {self.num_runs - 8} more runs")
        return "\n".join(lines) + ")"


# ------------------------------------------------------------------------- operators ---
def operator_shape(A) -> tuple[int | None, int]:
    """(R, D) for a batch of R operators ``(R, D, D)``, (None, D) for one operator ``(D, D)``."""
    shape = tuple(A.shape)
    if len(shape) == 2 and shape[0] == shape[1]:
        return None, int(shape[0])
    if len(shape) == 3 and shape[1] == shape[2]:
        return int(shape[0]), int(shape[1])
    raise ValueError(f"expected a square operator (D, D) or a batch of them (R, D, D), got shape {shape}")


def operator_dim(A) -> int:
    """D of one square operator ``(D, D)``."""
    runs, dim = operator_shape(A)
    if runs is not None:
        raise ValueError(f"expected one square operator (D, D), got a batch of shape {tuple(A.shape)}")
    return dim


def operator_dtype_device(A) -> tuple[torch.dtype, torch.device]:
    """The operator's ``dtype`` and ``device`` attributes (float64 and CPU where it has none)."""
    dtype = getattr(A, "dtype", torch.float64)
    device = getattr(A, "device", torch.device("cpu"))
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        dtype = torch.float64
    return dtype, torch.device(device)


def basis_dtype(operator_dtype: torch.dtype) -> torch.dtype:
    """The dtype of the Lanczos basis: the operator's if float32/float64, else float32."""
    return operator_dtype if operator_dtype in (torch.float32, torch.float64) else torch.float32


def check_curvature_dtype(A) -> None:
    """Refuse a half-precision model or operator before any product: curvature cannot be certified there.

    ``A``: an ``nn.Module`` (its trainable floating parameters are checked) or an operator / tensor
    (its ``dtype``). Raises ValueError, one line naming the dtype and the remedy, for bfloat16 or
    float16; does nothing otherwise. Called by ``sharpness``, the traces and spectra of a model;
    :func:`lanczos_eigenpairs` itself accepts a half-precision operator and reports its rounding floor
    (module docstring).
    """
    if isinstance(A, torch.nn.Module):
        dtypes = {p.dtype for p in A.parameters() if p.requires_grad and p.is_floating_point()}
        half = sorted(str(d).removeprefix("torch.") for d in dtypes if d in HALF_PRECISION)
        what, copy = "the model's parameters are", "copy.deepcopy(model).float()"
    else:
        dtype = getattr(A, "dtype", None)
        half = [str(dtype).removeprefix("torch.")] if dtype in HALF_PRECISION else []
        what, copy = "the operator is", "A.float() for a tensor, or the operator of a float32 copy of the model"
    if half:
        u = max(float(torch.finfo(getattr(torch, d)).eps) for d in half) / 2  # unit roundoff
        u = f"{u:.0e}".replace("e-0", "e-")
        raise ValueError(
            f"{what} {' and '.join(half)}: curvature in half precision cannot be certified (its rounding is "
            f"~{u} of ‖H‖); pass a float32 or float64 copy, e.g. {copy}"
        )


def check_eigen_options(A, *, k: int, which: str, tol: float, criterion: str, max_matvecs: int | None = None) -> int:
    """Validate the options of an eigenvalue request on ``A``; returns D. Raises ValueError."""
    _, dim = operator_shape(A)
    if which not in WHICH:
        raise ValueError(f"unknown which={which!r}; choose one of {list(WHICH)}")
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion={criterion!r}; choose one of {list(CRITERIA)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > dim:
        raise ValueError(f"k = {k} eigenvalues requested but the operator has only {dim} dimensions (parameters)")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if max_matvecs is not None and max_matvecs < k:
        raise ValueError(f"max_matvecs must be ≥ k = {k} (one product per Ritz value at least), got {max_matvecs}")
    return dim


# ------------------------------------------------------------------------ the recurrence ---
class Lanczos:
    """R Lanczos recurrences with full reorthogonalization, in lockstep: one batched product per
    :meth:`step` (R = 1 for one operator).

    Holds per run r the basis ``Q[r]`` (rows, at most ``(capacity + 1, D)``), the diagonal
    ``alpha[r]`` and the couplings ``beta[r]`` (``beta[r, j]`` couples q_j and q_{j+1}; the last one
    is the residual coupling β_j), all as ``(R, ·)`` arrays. Every run in ``active`` has taken
    ``size`` products; a run leaves ``active`` when its driver stops it or its product is not finite
    (then ``finite[r]`` is False).
    """

    def __init__(self, A, capacity: int, generator: torch.Generator | None = None) -> None:
        runs, self.dim = operator_shape(A)
        self.A = A
        self.batched = runs is not None
        self.runs = 1 if runs is None else runs
        self.operator_dtype, self.device = operator_dtype_device(A)
        self.dtype = basis_dtype(self.operator_dtype)
        self.capacity = capacity
        rows = min(capacity + 1, 16)  # grown by doubling: memory follows the vectors actually used
        self.Q = torch.zeros(self.runs, rows, self.dim, dtype=self.dtype, device=self.device)
        self.alpha = np.zeros((self.runs, capacity))
        self.beta = np.zeros((self.runs, capacity))
        self.size = 0  # basis vectors q_0 … q_{size-1} of every active run whose product has been taken
        self.num_matvecs = 0
        self.generator = generator
        self.anorm = np.zeros(self.runs)  # running estimate of ‖A_r‖ (max |α|, β seen)
        self.tnorm = np.zeros(self.runs)  # running max row sum of |T_r| (Gershgorin: ≥ ‖T_r‖, ≤ 3‖A_r‖)
        self.eps = float(torch.finfo(self.dtype).eps)
        op_eps = float(torch.finfo(self.operator_dtype).eps)
        no_floor = self.operator_dtype == torch.float64  # module docstring: float64 has no floor
        self.floor_eps = 0.0 if no_floor else FLOOR_FACTOR * op_eps  # the rounding floor is floor_eps·‖A‖
        self.active = np.ones(self.runs, dtype=bool)
        self.finite = np.ones(self.runs, dtype=bool)
        self.broken = np.zeros(self.runs, dtype=bool)  # the last step ended the block (β set to 0)
        self.exhausted = np.zeros(self.runs, dtype=bool)  # the Krylov space is the whole space

    # -- products and orthogonalization
    def apply(self, V: Tensor) -> Tensor:
        """``(R, D)`` → ``(R, D)``: row r is A_r v_r, the product in the operator's dtype."""
        X = V.to(self.operator_dtype)
        if not self.batched:
            W = self.A @ X[0]
        elif isinstance(self.A, Tensor):
            W = torch.einsum("rij,rj->ri", self.A, X)
        else:
            W = self.A @ X
        if not isinstance(W, Tensor):
            raise TypeError(f"A @ v must return a torch.Tensor, got {type(W).__name__}")
        return W.to(dtype=self.dtype, device=self.device).reshape(self.runs, self.dim)

    def _ensure_row(self, row: int) -> None:
        if row >= self.Q.shape[1]:
            rows = min(self.capacity + 1, 2 * self.Q.shape[1])
            bigger = torch.zeros(self.runs, rows, self.dim, dtype=self.dtype, device=self.device)
            bigger[:, : self.Q.shape[1]] = self.Q
            self.Q = bigger

    def _orthogonalize(self, W: Tensor, upto: int) -> tuple[Tensor, Tensor]:
        """W − Q Qᵀ W per run against rows < upto, twice (CGS2); returns (W, coefficients ``(R, upto)``)."""
        if upto == 0:
            return W, torch.zeros(self.runs, 0, dtype=W.dtype, device=W.device)
        basis = self.Q[:, :upto]  # (R, upto, D)
        h = (basis @ W.unsqueeze(2)).squeeze(2)
        W = W - (basis.transpose(1, 2) @ h.unsqueeze(2)).squeeze(2)
        h2 = (basis @ W.unsqueeze(2)).squeeze(2)
        return W - (basis.transpose(1, 2) @ h2.unsqueeze(2)).squeeze(2), h + h2

    def floor(self) -> np.ndarray:
        """``(R,)`` the rounding floor FLOOR_FACTOR·ε_op·‖A_r‖ of the products, ‖A_r‖ estimated from
        above by the largest row sum of |T_r| (0 for a float64 operator)."""
        return self.floor_eps * self.tnorm

    def _breakdown_level(self) -> np.ndarray:
        work = BREAKDOWN_FACTOR * self.eps * np.maximum(self.anorm, 1e-300) * max(1.0, self.size**0.5)
        return np.maximum(work, self.floor())

    def _random(self) -> Tensor:
        """``(R, D)`` standard normal rows (float64 draws, so a seed gives the same start on every device)."""
        gen_device = self.generator.device if self.generator is not None else torch.device("cpu")
        Z = torch.randn(self.runs, self.dim, generator=self.generator, dtype=torch.float64, device=gen_device)
        return Z.to(dtype=self.dtype, device=self.device)

    # -- the recurrence
    def start(self, V: Tensor | None, runs: np.ndarray | None = None) -> np.ndarray:
        """Put a start vector at q_size for ``runs`` (default: the active ones), orthogonal to the basis.

        ``V``: ``(R, D)`` rows; a zero or non-finite row (or ``V=None``) takes a random vector.
        Returns ``(R,)`` bool: started. A run whose vector lies in the span of its basis (the Krylov
        space is the whole space) is marked exhausted instead.
        """
        runs = self.active.copy() if runs is None else np.asarray(runs, dtype=bool) & self.active
        if self.size >= self.dim:
            self.exhausted |= runs
            return np.zeros(self.runs, dtype=bool)
        if V is None:
            V = self._random()
        else:
            V = V.to(dtype=self.dtype, device=self.device).reshape(self.runs, self.dim)
            usable = torch.isfinite(V).all(1) & (torch.linalg.vector_norm(V, dim=1) > 0)
            if not bool(usable.all()):
                V = torch.where(usable.unsqueeze(1), V, self._random())
        original = torch.linalg.vector_norm(V, dim=1)
        V, _ = self._orthogonalize(V, self.size)
        norm = torch.linalg.vector_norm(V, dim=1)
        in_span = (~torch.isfinite(norm) | (norm <= 1e3 * self.eps * original)).cpu().numpy()
        started = runs & ~in_span
        self.exhausted |= runs & in_span
        self._ensure_row(self.size)
        mask = torch.as_tensor(started, device=self.device).unsqueeze(1)
        self.Q[:, self.size] = torch.where(mask, V / norm.clamp_min(torch.finfo(self.dtype).tiny).unsqueeze(1),
                                           self.Q[:, self.size])
        if self.size > 0:  # a restart: the coupling to the previous block is zero
            self.beta[started, self.size - 1] = 0.0
        self.broken[started] = False
        return started

    def step(self) -> None:
        """One batched product: extends each active run's T by α_j and β_j, stores q_{j+1} unless
        the block ended (β_j set to 0: ``broken``) or the space is exhausted."""
        j = self.size
        live = torch.as_tensor(self.active, device=self.device).unsqueeze(1)
        W = self.apply(torch.where(live, self.Q[:, j], torch.zeros((), dtype=self.dtype, device=self.device)))
        self.num_matvecs += 1
        ok = torch.isfinite(W).all(1).cpu().numpy()
        W = torch.where(live & torch.isfinite(W), W, torch.zeros((), dtype=self.dtype, device=self.device))
        W, h = self._orthogonalize(W, j + 1)
        a = h[:, j].double().cpu().numpy()
        b = torch.linalg.vector_norm(W, dim=1).double().cpu().numpy()
        dead = self.active & ~(ok & np.isfinite(a) & np.isfinite(b))
        self.finite[dead] = False
        self.active &= ~dead
        act = self.active
        self.alpha[act, j] = a[act]
        self.beta[act, j] = b[act]
        self.anorm[act] = np.maximum(self.anorm[act], np.maximum(np.abs(a[act]), b[act]))
        previous = self.beta[act, j - 1] if j > 0 else 0.0
        self.tnorm[act] = np.maximum(self.tnorm[act], np.abs(a[act]) + previous + b[act])
        self.size = j + 1
        ends = act & (b <= self._breakdown_level())
        self.beta[ends, j] = 0.0  # invariant (or unresolved): the Ritz values of this block are final
        self.broken = ends.copy()
        if self.size >= self.dim:
            self.exhausted |= act
            self.broken[:] = False
            return
        keep = act & ~ends
        if keep.any():
            self._ensure_row(j + 1)
            scale = torch.as_tensor(np.where(keep, b, 1.0), dtype=self.dtype, device=self.device).unsqueeze(1)
            self.Q[:, j + 1] = torch.where(torch.as_tensor(keep, device=self.device).unsqueeze(1), W / scale,
                                           self.Q[:, j + 1])

    def ritz(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Run r's Ritz values ``(m,)`` ascending and the eigenvectors ``(m, m)`` of its T_m (float64)."""
        m = self.size
        d = self.alpha[r, :m]
        if m == 1:
            return d.copy(), np.ones((1, 1))
        return eigh_tridiagonal(d, self.beta[r, : m - 1])

    def ritz_vectors(self, r: int, S: np.ndarray) -> Tensor:
        """Q_m S for run r: ``(D, columns of S)``, normalised."""
        S_t = torch.as_tensor(S, dtype=self.dtype, device=self.device)
        V = self.Q[r, : self.size].T @ S_t
        return V / torch.linalg.vector_norm(V, dim=0, keepdim=True).clamp_min(1e-300)


# ------------------------------------------------------------------------- eigenpairs ---
def select(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices of the k wanted values of ``theta`` ``(m,)``, in the order of ``which``."""
    if which == "LA":
        return np.argsort(-theta, kind="stable")[:k]
    if which == "SA":
        return np.argsort(theta, kind="stable")[:k]
    return np.argsort(-np.abs(theta), kind="stable")[:k]


def ritz_gaps(theta: np.ndarray, residuals: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """δ̂_i = min_{j≠i} (|θ_i − θ_j| − r_j): the distance to the nearest other Ritz value, less
    that value's residual (an eigenvalue may lie that much closer). inf with a single Ritz value."""
    out = np.full(idx.shape, np.inf)
    if theta.size > 1:
        for n, i in enumerate(idx):
            others = np.arange(theta.size) != i
            out[n] = np.min(np.abs(theta[others] - theta[i]) - residuals[others])
    return out


def error_bounds(r: np.ndarray, gap: np.ndarray, floor: np.ndarray | float = 0.0) -> np.ndarray:
    """min(r, r²/δ̂ + floor) where δ̂ > r; r where the gap is unknown or not resolved.

    ``floor`` (the operator's rounding floor, 0 for a float64 operator) is added
    because the Ritz value is the Rayleigh quotient of the *computed* products: θ = vᵀAv + vᵀEv,
    off by up to ‖E‖ to first order, which the gap theorem's r²/δ does not see.
    """
    usable = np.isfinite(gap) & (gap > r)
    return np.where(usable, np.minimum(r, r**2 / np.where(usable, gap, 1.0) + floor), r)


def ritz_test(theta: np.ndarray, S: np.ndarray, beta: float, floor: float, *, k: int, which: str, tol: float,
              atol: float, criterion: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The stopping test of one run's Ritz pairs (θ ``(m,)``, S ``(m, m)``, coupling β_j).

    Returns (idx, residuals, gaps, error bounds, passed) of the k wanted pairs: residuals
    β_j|s_j| + floor, gaps δ̂ (:func:`ritz_gaps`), bounds min(r, r²/δ̂ + floor), and whether
    ``criterion``'s quantity is ≤ max(tol·|θ|, atol).
    """
    idx = select(theta, k, which)
    r_all = abs(beta) * np.abs(S[-1, :]) + floor  # ‖Av − θv‖ ≤ β_j|s_j| + ‖E‖ (module docstring)
    r = r_all[idx]
    gap = ritz_gaps(theta, r_all, idx)
    bound = error_bounds(r, gap, floor)
    test = r if criterion == "residual" else bound
    passed = (test <= np.maximum(tol * np.abs(theta[idx]), atol)) & (theta.size >= k)
    return idx, r, gap, bound, passed


def start_rows(v0, runs: int | None, dim: int) -> Tensor | None:
    """``v0`` as start rows ``(R, D)`` (R = 1 for one operator): ``(D,)`` / ``(R, D)`` as they are,
    blocks of previous eigenvectors ``(D, m)`` / ``(R, D, m)`` as the sum of their normalised columns.
    Raises ValueError for a misshapen ``v0``; does not look at its values."""
    if v0 is None:
        return None
    v0 = torch.as_tensor(v0)
    lead = () if runs is None else (runs,)
    if v0.ndim == len(lead) + 2:  # previous eigenvectors: start from their (normalised) sum
        if tuple(v0.shape[:-1]) != (*lead, dim):
            raise ValueError(f"v0 must have shape {(*lead, dim)} or {(*lead, dim, 'm')}, got {tuple(v0.shape)}")
        v0 = (v0 / torch.linalg.vector_norm(v0, dim=-2, keepdim=True).clamp_min(1e-300)).sum(-1)
    if tuple(v0.shape) != (*lead, dim):
        raise ValueError(f"v0 must have shape {(*lead, dim)} or {(*lead, dim, 'm')}, got {tuple(v0.shape)}")
    return v0.reshape(-1, dim)


def lanczos_eigenpairs(
    A,
    *,
    k: int = 1,
    which: str = "LA",
    tol: float = 1e-6,
    atol: float = 0.0,
    criterion: str = "residual",
    v0: Tensor | None = None,
    max_matvecs: int | None = None,
    explicit_residuals: bool = False,
    seed: int = 0,
) -> EigenResult:
    """The k extreme eigenpairs of a symmetric operator, or of each of a batch, by Lanczos.

    Args:
        A: one symmetric operator, ``A.shape == (D, D)``, ``A @ v`` for ``v`` ``(D,)``; or R of
            them, ``A.shape == (R, D, D)``, ``A @ V`` for ``V`` ``(R, D)`` (row r = A_r v_r). Its
            ``dtype`` and ``device`` attributes (if any) set the basis' (default float64, CPU;
            at least float32, module docstring).
        k: number of eigenpairs (per run), 1 ≤ k ≤ D.
        which: ``"LA"`` largest algebraic (sharpness), ``"SA"`` smallest algebraic (most negative
            curvature), ``"LM"`` largest magnitude.
        tol: relative accuracy of each eigenvalue, tested per ``criterion`` (module docstring).
        atol: absolute floor of the test, max(tol·|θ|, atol) — for eigenvalues near zero.
        criterion: ``"residual"`` (certified, default) or ``"gap"`` (r²/gap: fewer products,
            0.65–0.9× in ``benchmarks/sharpness.py``, but an estimate).
        v0: start vector ``(D,)`` or previous eigenvectors ``(D, m)`` (their normalised sum); for a
            batch ``(R, D)`` or ``(R, D, m)``, where a zero or non-finite row (a run without a
            previous vector) takes a random start. Random if None.
        max_matvecs: budget of (batched) products and size of each basis (default min(D, 200)).
        explicit_residuals: recompute ‖Av − θv‖ with k more products (counted), and test
            convergence on those.
        seed: seed of the random starts (and of restart vectors): float64 draws on the CPU, row r
            for run r.

    Returns:
        :class:`EigenResult`, fields ``(k, …)`` for one operator, ``(R, k, …)`` for a batch.
        Raises ValueError for k > D, max_matvecs < k, an unknown ``which`` or ``criterion``,
        tol ≤ 0, a misshapen ``v0``, or a zero or non-finite ``v0`` of one operator.
    """
    dim = check_eigen_options(A, k=k, which=which, tol=tol, criterion=criterion, max_matvecs=max_matvecs)
    runs, _ = operator_shape(A)
    budget = min(dim, DEFAULT_MAX_MATVECS) if max_matvecs is None else int(max_matvecs)
    V0 = start_rows(v0, runs, dim)
    if runs is None and V0 is not None and (not bool(torch.isfinite(V0).all()) or float(V0.norm()) == 0.0):
        raise ValueError("v0 must be a finite, nonzero vector")

    lz = Lanczos(A, capacity=min(budget, dim), generator=torch.Generator().manual_seed(seed))
    R = lz.runs
    nan = np.full((R, k), np.nan)
    values, lres, res, bounds, gaps = nan.copy(), nan.copy(), nan.copy(), nan.copy(), nan.copy()
    conv = np.zeros((R, k), dtype=bool)
    floors = np.zeros(R)
    run_matvecs = np.zeros(R, dtype=np.int64)
    vectors = torch.full((R, dim, k), float("nan"), dtype=lz.dtype, device=lz.device)

    lz.start(V0)
    while lz.active.any():
        lz.step()
        died = ~lz.finite & (run_matvecs == 0)
        run_matvecs[died] = lz.num_matvecs
        restart = np.zeros(R, dtype=bool)
        results = {}
        floor_all = lz.floor()
        for r in np.flatnonzero(lz.active):
            theta, S = lz.ritz(r)
            test = ritz_test(theta, S, lz.beta[r, lz.size - 1], floor_all[r], k=k, which=which, tol=tol, atol=atol,
                             criterion=criterion)
            results[r] = (theta, S, test)
            done = bool(test[-1].all()) or bool(lz.exhausted[r]) or lz.num_matvecs >= budget or lz.size >= lz.capacity
            if not done and lz.broken[r]:
                restart[r] = True  # the block ended before the wanted pairs converged
            elif done:
                lz.active[r] = False
        if restart.any():
            started = lz.start(None, restart)
            lz.active[restart & ~started] = False  # nothing left to start from: the space is exhausted
        for r, (theta, S, (idx, rr, gap, bound, ok)) in results.items():
            if not lz.active[r]:  # stopped at this step: record it
                values[r], lres[r], res[r], gaps[r], bounds[r], conv[r] = theta[idx], rr, rr, gap, bound, ok
                floors[r] = floor_all[r]
                vectors[r] = lz.ritz_vectors(r, S[:, idx])
                run_matvecs[r] = lz.num_matvecs

    kind = "lanczos"
    if explicit_residuals:
        kind = "explicit"
        live = torch.as_tensor(lz.finite, device=lz.device).unsqueeze(1)
        theta = torch.as_tensor(np.nan_to_num(values), dtype=lz.dtype, device=lz.device)
        for n in range(k):
            V = torch.where(live, vectors[:, :, n], torch.zeros((), dtype=lz.dtype, device=lz.device))
            AV = lz.apply(V)
            lz.num_matvecs += 1
            res[:, n] = torch.linalg.vector_norm(AV - theta[:, n : n + 1] * V, dim=1).double().cpu().numpy()
        run_matvecs += k
        res = res + floors[:, None]  # the computed product is off by up to the rounding floor
        bounds = error_bounds(res, gaps, floors[:, None])
        test = res if criterion == "residual" else bounds
        conv = (test <= np.maximum(tol * np.abs(values), atol)) & lz.finite[:, None]
    bad = ~lz.finite
    for arr in (values, lres, res, bounds):
        arr[bad] = np.nan
    conv[bad] = False

    def out(a: np.ndarray, dtype=torch.float64) -> Tensor:
        t = torch.as_tensor(a, dtype=dtype)
        return t if lz.batched else t[0]

    return EigenResult(
        values=out(values), vectors=vectors if lz.batched else vectors[0], residuals=out(res),
        error_bounds=out(bounds), converged=out(conv, torch.bool), lanczos_residuals=out(lres),
        num_matvecs=lz.num_matvecs, run_matvecs=out(run_matvecs, torch.int64), which=which, tol=tol,
        criterion=criterion, method="lanczos", residual_kind=kind,
    )


# ------------------------------------------------------------------------ warm starts ---
class WarmStart:
    """Start vectors along training from the previous eigenvectors (one model or an ensemble).

    After each estimate :meth:`update` stores its vectors (``(D, k)`` or ``(R, D, k)``), each
    column's sign aligned with its predecessor (an eigenvector has none). :meth:`vector` gives the
    next start: with ``extrapolate=True`` the linear extrapolation v_t + (v_t − v_{t−1}) of the last
    two, which follows a smoothly turning eigenvector to second order, else (and for the second
    estimate) v_t. A run with no finite previous vector gets a NaN row, which
    :func:`lanczos_eigenpairs` replaces by a random start; for one model the start is then None.
    """

    def __init__(self, extrapolate: bool = True) -> None:
        self.extrapolate = extrapolate
        self.blocks: list[Tensor] = []  # the last two eigenvector blocks, signs aligned

    def vector(self) -> Tensor | None:
        """The next start ``(D, k)`` / ``(R, D, k)``, or None before the first estimate."""
        if not self.blocks:
            return None
        last = self.blocks[-1]
        start = last
        if self.extrapolate and len(self.blocks) == 2:
            previous = self.blocks[0]
            known = torch.isfinite(previous).all(-2, keepdim=True)  # per run and column
            start = torch.where(known, 2.0 * last - previous, last)
        if start.ndim == 2 and not bool(torch.isfinite(start).all()):
            return None
        return start

    def update(self, vectors: Tensor) -> None:
        """Store the vectors of the estimate just made, signs aligned with the previous ones."""
        vectors = vectors.clone()
        if self.blocks:
            signs = torch.sign((vectors * self.blocks[-1]).sum(-2, keepdim=True))
            vectors = vectors * torch.where((signs == 0) | signs.isnan(), torch.ones_like(signs), signs)
        self.blocks = [*self.blocks[-1:], vectors]

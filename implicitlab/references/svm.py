"""The homogeneous hard-margin SVM: the limit direction of gradient descent on separable data.

Soudry, Hoffer, Nacson, Gunasekar & Srebro (ICLR 2018; JMLR 19(70), 2018): for a linear
predictor trained by GD on an exponential-tailed loss over linearly separable data,
w(t)/‖w(t)‖ → ŵ/‖ŵ‖ with

    ŵ = argmin ‖w‖  subject to  y_n wᵀx_n ≥ 1  for all n.                              (SVM)

There is no bias term: the separating hyperplane passes through the origin. Users whose model has
a bias append a constant feature (a column of ones) to X; the bias is then a weight like any other
and is penalized by ‖w‖, exactly as GD on the augmented linear model treats it.

Two exact, independent solvers return the same :class:`SVMResult`:

* :func:`svm_max_margin` — the QP (SVM) by the Clarabel interior-point solver at tight tolerances,
  then polished: on the active set S the problem is an equality-constrained least-norm problem with
  the closed form ŵ = Z_Sᵀ(Z_S Z_Sᵀ)⁺1, Z = diag(y)X, accepted only when it passes the KKT test.
* :func:`svm_max_margin_nnls` — Lawson & Hanson's reduction of least-distance programming to
  non-negative least squares ("Solving Least Squares Problems", Prentice-Hall 1974 / SIAM 1995,
  ch. 23), solved by scipy.optimize.nnls (their active-set NNLS algorithm, same chapter).

KKT conditions of (SVM) with Lagrangian ½‖w‖² − Σ α_n (z_nᵀw − 1), z_n = y_n x_n (Boyd &
Vandenberghe, "Convex Optimization", §5.5.3): w = Zᵀα (stationarity), Zw ≥ 1 (primal), α ≥ 0
(dual), α_n (z_nᵀw − 1) = 0 (complementarity). They are sufficient here (convex QP), so a small
:attr:`SVMResult.kkt_residual` certifies the answer.

Also here: :func:`margin_gap` and :func:`angle_to`, the two distances to the SVM solution that the
Soudry experiment tracks down to ~1e-6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .arrays import as_float64, check_finite, check_matrix

__all__ = ["SVMResult", "angle_to", "margin_gap", "svm_max_margin", "svm_max_margin_nnls"]

_EPS = float(np.finfo(np.float64).eps)
_NOT_SEPARABLE = "data are not linearly separable by a hyperplane through the origin"


@dataclass(frozen=True)
class SVMResult:
    """Solution of the homogeneous hard-margin SVM, in float64.

    Attributes:
        w: (d,) ŵ itself, in the margin-1 scaling: min_n y_n ŵᵀx_n = 1.
        direction: (d,) unit vector ŵ/‖ŵ‖ (the limit direction of GD).
        margin: γ = 1/‖ŵ‖ = min_n y_n directionᵀx_n, the largest achievable normalized margin.
        support: sorted int64 indices of the support vectors, the active constraints: points whose
            normalized margin y_n directionᵀx_n exceeds γ by at most support_tol·max_m ‖x_m‖
            (a weakly active point, with α_n = 0, is included).
        dual: (n,) Lagrange multipliers α ≥ 0 with ŵ = Σ_n α_n y_n x_n; exactly zero off the
            support. Not unique when the support vectors are linearly dependent (more than d of them).
        kkt_residual: the largest of the dimensionless KKT violations (stationarity
            ‖ŵ − Zᵀα‖_∞/‖ŵ‖_∞; primal max(0, 1 − min_n y_n ŵᵀx_n); dual max(0, −min α)/Σα;
            complementarity max_n α_n |y_n ŵᵀx_n − 1| / Σα). ~1e-15 for a polished solution.
        method: which computation produced the numbers: "clarabel+polish", "clarabel" (the polished
            candidate failed the KKT test) or "nnls".
    """

    w: np.ndarray
    direction: np.ndarray
    margin: float
    support: np.ndarray
    dual: np.ndarray
    kkt_residual: float
    method: str


# --------------------------------------------------------------------------------------------------
# Input checks and the shared result builder
# --------------------------------------------------------------------------------------------------


def _validated(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Float64 copies of X (n, d) and y (n,) after every input check; nothing is computed before."""
    X = as_float64(X, "X")
    y = as_float64(y, "y")
    check_matrix(X)
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of shape (n,); got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {y.shape[0]} entries but X has {X.shape[0]} rows")
    check_finite(X, "X")
    check_finite(y, "y")
    bad = ~np.isin(y, (-1.0, 1.0))
    if bad.any():
        found = np.unique(y)
        shown = ", ".join(f"{v:g}" for v in found[:6]) + (", …" if found.size > 6 else "")
        how = ("use y = 2*y - 1" if np.isin(y, (0.0, 1.0)).all() else
               "map the two classes to -1 and +1")  # as implicitlab.losses.check_targets says it
        raise ValueError(f"labels must be -1/+1 for the SVM, got {{{shown}}}: {how}")
    # A single class is allowed: without a bias, one class can still lie strictly on one side.
    zero_rows = np.flatnonzero(~X.any(axis=1))
    if zero_rows.size:
        raise ValueError(f"{_NOT_SEPARABLE}: row {int(zero_rows[0])} of X is zero")
    return X, y


def _kkt_residual(Z: np.ndarray, w: np.ndarray, alpha: np.ndarray) -> float:
    """Largest dimensionless KKT violation of (SVM) at (w, α); see SVMResult.kkt_residual."""
    m = Z @ w  # (n,) y_n wᵀx_n
    total = float(np.sum(np.abs(alpha)))
    stationarity = float(np.max(np.abs(w - Z.T @ alpha)) / np.max(np.abs(w)))
    primal = max(0.0, float(1.0 - m.min()))
    if total == 0.0:  # only when w = 0, which no feasible point has
        return max(stationarity, primal, 1.0)
    dual = max(0.0, float(-alpha.min())) / total
    complementarity = float(np.max(np.abs(alpha * (m - 1.0)))) / total
    return max(stationarity, primal, dual, complementarity)


def _active_set(Z: np.ndarray, w: np.ndarray, support_tol: float) -> np.ndarray:
    """Sorted indices n with (z_nᵀw − 1)/(‖w‖·max_m ‖z_m‖) ≤ support_tol, for w of margin ≈ 1.

    The left side is the excess of point n's normalized margin over γ = 1/‖w‖, in units of the
    data's scale, so the test does not depend on the units of X nor on how small the margin is
    (an absolute test on z_nᵀw − 1 would, because z_nᵀw carries errors ~‖w‖·‖z_n‖·δ for a
    direction error δ).
    """
    excess = (Z @ w - 1.0) / (np.linalg.norm(w) * np.max(np.linalg.norm(Z, axis=1)))
    return np.flatnonzero(excess <= support_tol).astype(np.int64)


def _result(Z: np.ndarray, w: np.ndarray, alpha: np.ndarray, support_tol: float,
            method: str) -> SVMResult:
    """Assemble an SVMResult from a margin-1 solution w and multipliers α of the problem on Z."""
    support = _active_set(Z, w, support_tol)
    dual = np.zeros_like(alpha)
    dual[support] = alpha[support]
    norm = float(np.linalg.norm(w))
    return SVMResult(
        w=w,
        direction=w / norm,
        margin=1.0 / norm,
        support=support,
        dual=dual,
        kkt_residual=_kkt_residual(Z, w, dual),
        method=method,
    )


def _check_support_tol(support_tol: float) -> float:
    support_tol = float(support_tol)
    if not (np.isfinite(support_tol) and 0.0 < support_tol < 1.0):
        raise ValueError(f"support_tol must be in (0, 1); got {support_tol}")
    return support_tol


# --------------------------------------------------------------------------------------------------
# Clarabel + polishing
# --------------------------------------------------------------------------------------------------


def _solve_qp(Z: np.ndarray):
    """min ½‖w‖² s.t. Zw ≥ 1 with Clarabel: P = I, q = 0, A = −Z, b = −1, s = b − Aw ∈ R₊ⁿ."""
    import clarabel
    from scipy import sparse

    n, d = Z.shape
    P = sparse.identity(d, format="csc", dtype=np.float64)
    A = sparse.csc_matrix(-Z)
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.max_iter = 200
    settings.tol_gap_abs = 1e-12
    settings.tol_gap_rel = 1e-12
    settings.tol_feas = 1e-12
    settings.tol_ktratio = 1e-10
    # Infeasibility certificates at the default 1e-8 misreport separable sets whose margin is
    # below ~1e-7 of the data scale as non-separable; 1e-12 still certifies XOR-like sets.
    settings.tol_infeas_abs = 1e-12
    settings.tol_infeas_rel = 1e-12
    solver = clarabel.DefaultSolver(P, np.zeros(d), A, -np.ones(n),
                                    [clarabel.NonnegativeConeT(n)], settings)
    return solver.solve()


def _polish(Z: np.ndarray, w0: np.ndarray, support_tol: float,
            tol: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact re-solve on the active set of an approximate solution w0, or None if it fails KKT.

    With S the active set of w0 (:func:`_active_set`) and Z_S = U_r Σ_r V_rᵀ (thin SVD, rank r):
    ŵ = Z_S⁺1 = V_r Σ_r⁻¹ U_rᵀ1 = Z_Sᵀ(Z_S Z_Sᵀ)⁺1 and α_S = (Z_S Z_Sᵀ)⁺1 = U_r Σ_r⁻² U_rᵀ1,
    computed without forming Z_S Z_Sᵀ (which would square the condition number). If that α_S has
    negative entries while the support vectors are linearly dependent, a non-negative α_S with
    Z_Sᵀα_S = ŵ may still exist; it is looked for by NNLS before giving up.
    """
    n = Z.shape[0]
    S = _active_set(Z, w0, support_tol)
    if S.size == 0:
        return None
    Z_S = Z[S]  # (|S|, d)
    U, s, Vt = np.linalg.svd(Z_S, full_matrices=False)
    r = int(np.count_nonzero(s > max(Z_S.shape) * _EPS * s[0]))
    c = U[:, :r].T @ np.ones(S.size)  # (r,)
    w = Vt[:r].T @ (c / s[:r])  # (d,)
    alpha_S = U[:, :r] @ (c / s[:r] ** 2)  # (|S|,)

    m = Z @ w
    if m.min() < 1.0 - tol or np.max(np.abs(m[S] - 1.0)) > tol:
        return None  # infeasible, or S held a point that is not active at the optimum
    if alpha_S.min() < -tol * np.sum(np.abs(alpha_S)):
        from scipy.optimize import nnls

        try:
            alpha_S, _ = nnls(Z_S.T, w, maxiter=max(50, 10 * S.size))
        except RuntimeError:  # iteration limit
            return None
        if np.max(np.abs(Z_S.T @ alpha_S - w)) > tol * np.max(np.abs(w)):
            return None
    alpha = np.zeros(n)
    alpha[S] = np.maximum(alpha_S, 0.0)
    if _kkt_residual(Z, w, alpha) > tol:
        return None
    return w, alpha


def svm_max_margin(X: Any, y: Any, *, tol: float = 1e-10, support_tol: float = 1e-7) -> SVMResult:
    """Exact homogeneous hard-margin SVM: ŵ = argmin ‖w‖ s.t. y_n wᵀx_n ≥ 1 (no bias).

    Args:
        X: (n, d) inputs, float64 or convertible (torch tensors accepted). With a bias in the model,
            append a constant feature: ``np.hstack([X, np.ones((n, 1))])``.
        y: (n,) labels in {−1, +1}. A single class is allowed (separable through the origin when
            all points lie in an open half-space).
        tol: KKT tolerance (dimensionless) for accepting the polished active-set solution.
        support_tol: a point is a support vector when its normalized margin exceeds γ by at most
            support_tol·max_n ‖x_n‖ (see SVMResult.support).

    Returns:
        SVMResult; ``method`` is "clarabel+polish" normally, "clarabel" when polishing failed the
        KKT test (then ``kkt_residual`` is Clarabel's accuracy, ~1e-9 or better).

    Raises:
        ValueError: X not 2-D or empty, y not (n,), NaN/inf, labels outside {−1, +1}, a zero row,
            or data not linearly separable by a hyperplane through the origin (Clarabel reports
            the QP primal infeasible; with its certificate tolerance at 1e-12, sets whose margin
            is below ~1e-9·max‖x_n‖ may be reported as non-separable).
        RuntimeError: Clarabel fails (numerical error, iteration limit) and polishing cannot
            recover a KKT point.

    Scale: X is divided by its largest row norm before solving (the solution scales as ŵ → ŵ/c
    for X → cX), so the result does not depend on the units of X.
    """
    X, y = _validated(X, y)
    support_tol = _check_support_tol(support_tol)
    tol = float(tol)
    if not (np.isfinite(tol) and tol > 0.0):
        raise ValueError(f"tol must be a positive number; got {tol}")

    import clarabel

    scale = float(np.max(np.linalg.norm(X, axis=1)))
    Z = (y[:, None] * X) / scale  # (n, d) rows z_n = y_n x_n / scale
    sol = _solve_qp(Z)
    status = sol.status
    if status in (clarabel.SolverStatus.PrimalInfeasible,
                  clarabel.SolverStatus.AlmostPrimalInfeasible):
        raise ValueError(_NOT_SEPARABLE)

    w0 = np.asarray(sol.x, dtype=np.float64)
    alpha0 = np.asarray(sol.z, dtype=np.float64)
    polished = None
    if np.all(np.isfinite(w0)) and w0.any():
        # A near-active but inactive point in S makes the equalities inconsistent and the polish
        # fail; a tighter activity test then usually leaves exactly the true support.
        for tol_S in (support_tol, 1e-3 * support_tol):
            polished = _polish(Z, w0, tol_S, tol)
            if polished is not None:
                break
    if polished is not None:
        w, alpha = polished
        method = "clarabel+polish"
    elif status in (clarabel.SolverStatus.Solved, clarabel.SolverStatus.AlmostSolved):
        # Rescale so the margin is exactly 1 (Clarabel's is 1 up to its feasibility tolerance).
        m_min = float((Z @ w0).min())
        w, alpha = w0 / m_min, alpha0 / m_min
        method = "clarabel"
    else:
        raise RuntimeError(f"Clarabel did not solve the SVM QP (status {status}) and the "
                           "active-set polish failed")
    # Undo the scaling: Z = Z_orig/scale ⇒ ŵ_orig = ŵ/scale and α_orig = α/scale².
    return _result(Z * scale, w / scale, alpha / scale**2, support_tol, method)


# --------------------------------------------------------------------------------------------------
# Lawson–Hanson: least-distance programming via NNLS
# --------------------------------------------------------------------------------------------------


def svm_max_margin_nnls(X: Any, y: Any, *, support_tol: float = 1e-7) -> SVMResult:
    """The same SVM by an independent exact method: Lawson–Hanson LDP → NNLS.

    Least distance programming (Lawson & Hanson 1974, "Solving Least Squares Problems", ch. 23,
    Algorithm LDP): to minimize ‖w‖ subject to Gw ≥ h, with G (n, d), solve
    the NNLS problem

        min_{u ≥ 0} ‖E u − f‖,   E = [Gᵀ; hᵀ] of shape (d+1, n),   f = e_{d+1},

    and form r = Eu − f. If ‖r‖ = 0 the constraints are infeasible; otherwise w = −r[:d]/r[d].
    Here G = diag(y)X and h = 1. The NNLS optimality conditions give −r[d] = ‖r‖² = 1 − Σu, hence
    w = Zᵀu/(1 − Σu), so the SVM multipliers are α = u/(1 − Σu).

    Args:
        X: (n, d) inputs (torch tensors accepted); same conventions as :func:`svm_max_margin`.
        y: (n,) labels in {−1, +1}.
        support_tol: a point is a support vector when its normalized margin exceeds γ by at most
            support_tol·max_n ‖x_n‖ (see SVMResult.support).

    Returns:
        SVMResult with ``method == "nnls"``.

    Raises:
        ValueError: the input checks of :func:`svm_max_margin`; data not linearly separable by a
            hyperplane through the origin (‖r‖ = 0 up to rounding, or the recovered w does not
            separate; the latter also happens for separable sets whose margin is below
            ~1e-8·max‖x_n‖, where the direction error of the NNLS solve exceeds the margin).
        RuntimeError: NNLS hits its iteration limit.

    Accuracy: r[d] = Σu − 1 loses relative accuracy ~eps/γ² when the margin γ of the row-normalized
    data is small. That error only scales w, so w and α are rescaled to make min_n y_n wᵀx_n = 1
    exactly; the direction keeps the accuracy of the NNLS active-set solve.
    """
    from scipy.optimize import nnls

    X, y = _validated(X, y)
    support_tol = _check_support_tol(support_tol)
    n, d = X.shape
    scale = float(np.max(np.linalg.norm(X, axis=1)))
    Z = (y[:, None] * X) / scale  # (n, d), rows of norm ≤ 1
    E = np.vstack([Z.T, np.ones((1, n))])  # (d+1, n)
    f = np.zeros(d + 1)
    f[d] = 1.0
    u, _ = nnls(E, f, maxiter=max(50, 10 * (n + d)))
    r = E @ u - f  # (d+1,)
    # Infeasible: f lies in the cone of E's columns and r = 0 up to the rounding of E u. For
    # separable data ‖r‖ ≈ γ, the margin of the row-normalized data, so this misses only γ ≲ 1e-13.
    rounding = 10.0 * (n + d) * _EPS * (1.0 + float(np.sum(u)))
    if r[d] >= 0.0 or np.linalg.norm(r) <= rounding:
        raise ValueError(_NOT_SEPARABLE)
    w = -r[:d] / r[d]
    alpha = u / -r[d]
    m_min = float((Z @ w).min())
    if not m_min > 0.0:  # the candidate does not separate: r was rounding noise after all
        raise ValueError(_NOT_SEPARABLE)
    # r[d] = Σu − 1 carries the cancellation error (relative ~eps/γ²), which only scales w and α:
    # rescale to margin exactly 1.
    w, alpha = w / m_min, alpha / m_min
    return _result(Z * scale, w / scale, alpha / scale**2, support_tol, "nnls")


# --------------------------------------------------------------------------------------------------
# Distances to the SVM solution
# --------------------------------------------------------------------------------------------------


def _vector(w: Any, name: str) -> np.ndarray:
    w = as_float64(w, name)
    if w.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array; got shape {w.shape}")
    check_finite(w, name)
    if not w.any():
        raise ValueError(f"{name} is the zero vector; its direction is undefined")
    return w


def _normalized_margin(w: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """γ(w) = min_n y_n wᵀx_n / ‖w‖."""
    return float(np.min(y * (X @ w)) / np.linalg.norm(w))


def margin_gap(w: Any, X: Any, y: Any, svm: SVMResult) -> float:
    """γ(ŵ) − γ(w), with γ(w) = min_n y_n wᵀx_n/‖w‖ (Soudry et al. 2018: O(1/log t) under GD).

    Args:
        w: (d,) current linear predictor (torch tensor accepted); must be non-zero.
        X: (n, d) the data the SVM was solved on; y: (n,) labels in {−1, +1}.
        svm: the SVMResult for (X, y).

    Returns:
        The gap as a float; ≥ 0 up to rounding, and 0 for w in the direction ŵ. Both margins
        are evaluated by the same formula on the same X, so rounding largely cancels (absolute
        error ~eps·max‖x_n‖, far below the 1e-6 the experiments resolve). A clearly negative value
        means svm was not solved on this (X, y); it is returned as is, not clipped.

    Raises:
        ValueError: input checks as for :func:`svm_max_margin`; w zero, non-finite or of the wrong
            length.
    """
    X, y = _validated(X, y)
    w = _vector(w, "w")
    direction = np.asarray(svm.direction, dtype=np.float64)
    if w.shape != (X.shape[1],) or direction.shape != (X.shape[1],):
        raise ValueError(f"w has shape {w.shape} and svm.direction {direction.shape}; "
                         f"both must be ({X.shape[1]},) to match X")
    return _normalized_margin(direction, X, y) - _normalized_margin(w, X, y)


def angle_to(w: Any, direction: Any) -> float:
    """Angle between w and direction in radians, in [0, π], accurate at small angles.

    With unit u = w/‖w‖ and v = direction/‖direction‖, θ = 2·atan2(‖u − v‖, ‖u + v‖) (the two
    norms are 2 sin(θ/2) and 2 cos(θ/2)). Unlike arccos(uᵀv), which loses everything below
    θ ≈ 1e-8 because 1 − cos θ ≈ θ²/2 underflows eps, this keeps full relative accuracy
    (W. Kahan, "How Futile are Mindless Assessments of Roundoff in Floating-Point Computation?",
    2006, the section on angles between vectors).

    Args:
        w, direction: non-zero arrays (or torch tensors) of the same shape; flattened.

    Raises:
        ValueError: shapes differ, an input is zero, or NaN/inf.
    """
    a = as_float64(w, "w")
    b = as_float64(direction, "direction")
    if a.shape != b.shape:
        raise ValueError(f"w has shape {a.shape} but direction has shape {b.shape}")
    u = _vector(a.ravel(), "w")
    v = _vector(b.ravel(), "direction")
    u = u / np.linalg.norm(u)
    v = v / np.linalg.norm(v)
    return float(2.0 * np.arctan2(np.linalg.norm(u - v), np.linalg.norm(u + v)))

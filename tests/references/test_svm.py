"""The hard-margin SVM references against closed forms, against each other, and on bad input.

Tolerances (float64; all dimensionless):
    CLOSED_FORM = 1e-12  relative, solver vs the 2×2 closed form Zᵀ(ZZᵀ)⁻¹1 (both ~1e-15 exact)
    AGREE       = 1e-8   Clarabel+polish vs Lawson–Hanson NNLS: angle (rad) and relative margin
    KKT         = 1e-9   kkt_residual of either exact method (observed ~1e-14)
    SELF        = 1e-12  identities of one result (margin = 1/‖ŵ‖ = min_n y_n directionᵀx_n)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from implicitlab.references import (
    SVMResult,
    angle_to,
    margin_gap,
    svm_max_margin,
    svm_max_margin_nnls,
)
from implicitlab.references import svm as svm_module

CLOSED_FORM = 1e-12
AGREE = 1e-8
KKT = 1e-9
SELF = 1e-12

SOLVERS = [svm_max_margin, svm_max_margin_nnls]


def separable_set(seed: int, n: int, d: int, gap: float = 0.1):
    """Gaussian points labelled by a random unit w0, minus those with |w0ᵀx| < gap."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=d)
    w0 /= np.linalg.norm(w0)
    X = rng.normal(size=(n, d))
    s = X @ w0
    keep = np.abs(s) >= gap
    return X[keep], np.sign(s[keep])


def closed_form(Z: np.ndarray) -> np.ndarray:
    """min ‖w‖ s.t. Zw = 1 for Z of full row rank: Zᵀ(ZZᵀ)⁻¹1, by an independent linear solve."""
    return Z.T @ np.linalg.solve(Z @ Z.T, np.ones(Z.shape[0]))


def assert_close(actual, expected, rtol, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    err = np.abs(actual - expected)
    bound = rtol * np.maximum(np.abs(expected), np.max(np.abs(expected)))
    bad = np.flatnonzero(err > bound)
    assert bad.size == 0, (f"{what}: entries {bad.tolist()} differ; actual {actual.ravel()[bad]}, "
                           f"expected {expected.ravel()[bad]}, rtol {rtol}")


def assert_self_consistent(res: SVMResult, X: np.ndarray, y: np.ndarray) -> None:
    n, d = X.shape
    for field in (res.w, res.direction, res.dual):
        assert field.dtype == np.float64
    assert res.w.shape == (d,) and res.direction.shape == (d,) and res.dual.shape == (n,)
    assert res.support.dtype == np.int64 and np.all(np.diff(res.support) > 0)
    assert isinstance(res.margin, float)
    margins = y * (X @ res.direction)
    assert abs(margins.min() - res.margin) <= SELF * res.margin
    assert abs(res.margin * np.linalg.norm(res.w) - 1.0) <= SELF
    assert abs(np.linalg.norm(res.direction) - 1.0) <= SELF
    off = np.setdiff1d(np.arange(n), res.support)
    assert np.all(res.dual[off] == 0.0) and np.all(res.dual >= 0.0)
    assert res.kkt_residual <= KKT
    # Stationarity checked independently of kkt_residual: ŵ = Σ α_n y_n x_n.
    assert_close(X.T @ (res.dual * y), res.w, 1e-9, "ŵ vs Σ α_n y_n x_n")


# ------------------------------------------------------------------------------------------------
# Closed forms
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("seed", range(5))
def test_two_points_match_closed_form(solver, seed):
    """x₁ = a (y = +1), x₂ = b (y = −1): ŵ solves the 2×d equality system, or one point alone."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(2, 4))
    y = np.array([1.0, -1.0])
    Z = y[:, None] * X
    alpha = np.linalg.solve(Z @ Z.T, np.ones(2))
    if np.all(alpha > 0):  # both constraints active
        expected, support = closed_form(Z), [0, 1]
    else:  # the point with alpha ≤ 0 is inactive; the other alone: ŵ = z_i/‖z_i‖²
        i = int(np.argmax(alpha))
        expected, support = Z[i] / (Z[i] @ Z[i]), [i]
    res = solver(X, y)
    assert_close(res.w, expected, CLOSED_FORM, "ŵ vs two-point closed form")
    assert res.support.tolist() == support
    assert_self_consistent(res, X, y)


@pytest.mark.parametrize("solver", SOLVERS)
def test_two_points_one_active(solver):
    """a = (1, 0), b = (−2, 0.5): w = a/‖a‖² = (1, 0) already gives −bᵀw = 2 > 1."""
    X = np.array([[1.0, 0.0], [-2.0, 0.5]])
    y = np.array([1.0, -1.0])
    res = solver(X, y)
    assert_close(res.w, [1.0, 0.0], CLOSED_FORM, "ŵ")
    assert res.support.tolist() == [0]
    assert res.dual[1] == 0.0
    assert_self_consistent(res, X, y)


@pytest.mark.parametrize("solver", SOLVERS)
def test_third_point_off_the_margin_changes_nothing(solver):
    """Add x₃ = z₁ + z₂ with y = +1: its margin under the two-point ŵ is 2, so ŵ is unchanged."""
    X2 = np.array([[2.0, 1.0, 0.0], [0.5, -1.5, 1.0]])
    y2 = np.array([1.0, -1.0])
    Z = y2[:, None] * X2
    assert np.all(np.linalg.solve(Z @ Z.T, np.ones(2)) > 0)  # precondition: both active
    X = np.vstack([X2, Z[0] + Z[1]])
    y = np.array([1.0, -1.0, 1.0])
    res = solver(X, y)
    assert_close(res.w, closed_form(Z), CLOSED_FORM, "ŵ with a non-support point")
    assert res.support.tolist() == [0, 1]
    assert res.dual[2] == 0.0
    assert_self_consistent(res, X, y)


@pytest.mark.parametrize("solver", SOLVERS)
def test_single_class_is_allowed(solver):
    """Without a bias, one class is separable when it lies in an open half-space."""
    X = np.array([[1.0, -1.0], [1.0, 1.0], [3.0, 0.5]])
    y = np.ones(3)
    res = solver(X, y)
    assert_close(res.w, [1.0, 0.0], CLOSED_FORM, "ŵ for one class")
    assert res.support.tolist() == [0, 1]
    assert_self_consistent(res, X, y)


# ------------------------------------------------------------------------------------------------
# Two independent exact methods agree
# ------------------------------------------------------------------------------------------------


def assert_agree(a: SVMResult, b: SVMResult) -> None:
    assert angle_to(a.direction, b.direction) <= AGREE
    assert abs(a.margin - b.margin) <= AGREE * a.margin
    assert a.support.tolist() == b.support.tolist()


@settings(max_examples=40, deadline=None, derandomize=True)  # the same examples on every run
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), d=st.integers(1, 6))
def test_clarabel_agrees_with_nnls_on_random_separable_sets(seed, n, d):
    X, y = separable_set(seed, n, d)
    assume(len(y) > 0)
    qp, ldp = svm_max_margin(X, y), svm_max_margin_nnls(X, y)
    assert qp.method == "clarabel+polish"
    assert_agree(qp, ldp)
    assert_self_consistent(qp, X, y)
    assert_self_consistent(ldp, X, y)


def test_unpolished_clarabel_is_already_close(monkeypatch):
    """The fallback path (polish rejected) still meets AGREE: Clarabel at 1e-12 tolerances."""
    monkeypatch.setattr(svm_module, "_polish", lambda *args, **kwargs: None)
    for seed in range(5):
        X, y = separable_set(seed, 30, 5)
        qp = svm_max_margin(X, y)
        assert qp.method == "clarabel"
        assert_agree(qp, svm_max_margin_nnls(X, y))
        assert_self_consistent(qp, X, y)


def test_digits_zero_vs_one():
    """scikit-learn digits 0 vs 1, constant pixels dropped, standardized: both methods agree."""
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    keep = digits.target <= 1
    X = digits.data[keep]
    X = X[:, X.std(axis=0) > 0]
    X = StandardScaler().fit_transform(X)
    y = np.where(digits.target[keep] == 1, 1.0, -1.0)
    qp, ldp = svm_max_margin(X, y), svm_max_margin_nnls(X, y)
    assert 0 < len(qp.support) <= X.shape[1] + 1
    assert_agree(qp, ldp)
    assert_self_consistent(qp, X, y)
    assert_self_consistent(ldp, X, y)


def test_result_is_frozen_and_scale_covariant():
    X, y = separable_set(3, 20, 3)
    res = svm_max_margin(X, y)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.margin = 0.0  # type: ignore[misc]
    scaled = svm_max_margin(1e3 * X, y)  # X → cX: ŵ → ŵ/c, margin → c·margin
    assert_close(scaled.w, res.w / 1e3, 1e-10, "ŵ under X → 1000 X")
    assert scaled.support.tolist() == res.support.tolist()


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

XOR_X = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
XOR_Y = np.array([1.0, 1.0, -1.0, -1.0])


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(
    "X, y, match",
    [
        (XOR_X, XOR_Y, "not linearly separable"),
        (np.array([[1.0, 0.0], [-1.0, 0.0]]), np.ones(2), "not linearly separable"),
        (np.array([[1.0, 0.0], [0.0, 0.0]]), np.ones(2), "row 1 of X is zero"),
        (XOR_X, np.array([1.0, 1.0, 0.0, 0.0]), r"labels must be -1/\+1 for the SVM, got \{0, 1\}: use y = 2\*y - 1"),
        (np.array([[1.0, np.nan]]), np.ones(1), "X contains NaN or inf"),
        (np.array([[1.0, 2.0]]), np.array([np.inf]), "y contains NaN or inf"),
        (XOR_X, XOR_Y[:3], "y has 3 entries but X has 4 rows"),
        (np.ones(3), np.ones(3), "X must be a 2-D array"),
        (XOR_X, XOR_Y[:, None], "y must be a 1-D array"),
        (np.ones((0, 2)), np.ones(0), "at least one row"),
    ],
)
def test_bad_input_raises(solver, X, y, match):
    with pytest.raises(ValueError, match=match):
        solver(X, y)


def test_bad_tolerances_raise():
    X, y = separable_set(0, 10, 2)
    with pytest.raises(ValueError, match="tol"):
        svm_max_margin(X, y, tol=0.0)
    with pytest.raises(ValueError, match="support_tol"):
        svm_max_margin_nnls(X, y, support_tol=-1.0)


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    X, y = separable_set(1, 25, 3)
    X32 = X.astype(np.float32)
    Xt = torch.tensor(X32, requires_grad=True)  # detach() must be applied
    yt = torch.tensor(y, dtype=torch.int64)
    res = svm_max_margin(Xt, yt)
    ref = svm_max_margin_nnls(X32.astype(np.float64), y)
    assert res.w.dtype == np.float64
    assert_agree(res, ref)
    w = torch.tensor(ref.direction + 1e-3)
    gap = margin_gap(w, Xt, yt, res)
    assert gap == pytest.approx(margin_gap(w.numpy(), X32, y, res), abs=1e-15)
    assert angle_to(torch.tensor(res.w), w) == pytest.approx(angle_to(res.w, w.numpy()), abs=1e-15)


# ------------------------------------------------------------------------------------------------
# margin_gap and angle_to
# ------------------------------------------------------------------------------------------------


def test_margin_gap():
    X, y = separable_set(7, 30, 4)
    res = svm_max_margin(X, y)
    # At ŵ (any positive scale) the gap is 0 up to rounding: 1e-14 absolute, γ is O(0.1).
    assert abs(margin_gap(res.w, X, y, res)) <= 1e-14
    assert abs(margin_gap(1e6 * res.w, X, y, res)) <= 1e-14
    rng = np.random.default_rng(0)
    for _ in range(20):
        w = res.direction + 0.1 * rng.normal(size=4)
        expected = res.margin - np.min(y * (X @ w)) / np.linalg.norm(w)  # independent formula
        gap = margin_gap(w, X, y, res)
        assert gap == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert gap >= -1e-15  # ŵ maximizes the normalized margin
    with pytest.raises(ValueError, match="zero vector"):
        margin_gap(np.zeros(4), X, y, res)
    with pytest.raises(ValueError, match="must be \\(4,\\)"):
        margin_gap(np.ones(3), X, y, res)


@pytest.mark.parametrize("theta", [1e-12, 1e-9, 1e-6, 1e-3, 1.0, np.pi / 2, 3.0, np.pi])
def test_angle_to_is_accurate_at_all_angles(theta):
    u = np.array([2.0, 0.0, 0.0])
    v = 5.0 * np.array([np.cos(theta), np.sin(theta), 0.0])
    # rel 1e-12: the inputs carry ~eps relative error; arccos(uᵀv) would give 0 below θ ≈ 1e-8.
    assert angle_to(u, v) == pytest.approx(theta, rel=1e-12)
    assert angle_to(v, u) == pytest.approx(theta, rel=1e-12)


def test_angle_to_bad_input():
    with pytest.raises(ValueError, match="shape"):
        angle_to(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="zero vector"):
        angle_to(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        angle_to(np.array([1.0, np.nan]), np.ones(2))

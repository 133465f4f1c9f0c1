"""Minimum-norm least squares and the row/null-space projectors against independent references.

Tolerances (float64):
    PINV = 1e-10  relative (Frobenius), solution vs np.linalg.pinv(X) @ y on well-conditioned X
    PROJ = 1e-12  absolute, projector identities (idempotent, symmetric, complementary, X P_null = 0
                  relative to σ_max); entries of an orthogonal projector are O(1)
"""

from __future__ import annotations

import numpy as np
import pytest

from implicitlab.references import (
    MinNormResult,
    min_norm_solution,
    null_space_projector,
    row_space_projector,
)

PINV = 1e-10
PROJ = 1e-12


def rel_err(actual, expected) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def low_rank(rng, n, d, r):
    """An exactly rank-r (n, d) matrix (up to rounding): product of (n, r) and (r, d) Gaussians."""
    return rng.normal(size=(n, r)) @ rng.normal(size=(r, d))


@pytest.mark.parametrize("n, d", [(5, 12), (20, 6), (7, 7), (1, 4), (4, 1)])
@pytest.mark.parametrize("k", [None, 3])
def test_matches_pinv(n, d, k):
    rng = np.random.default_rng(n * 100 + d)
    X = rng.normal(size=(n, d))
    y = rng.normal(size=(n,) if k is None else (n, k))
    res = min_norm_solution(X, y)
    assert isinstance(res, MinNormResult)
    assert res.solution.dtype == np.float64
    assert res.solution.shape == ((d,) if k is None else (d, k))
    assert rel_err(res.solution, np.linalg.pinv(X) @ y) <= PINV
    assert res.rank == min(n, d)
    # Condition number vs numpy's independent 2-norm condition number (full rank here).
    assert res.condition_number == pytest.approx(np.linalg.cond(X), rel=1e-10)
    # Singular values vs the square roots of the Gram eigenvalues (well conditioned: 1e-10 rel).
    G = X @ X.T if n <= d else X.T @ X
    expected_s = np.sqrt(np.clip(np.linalg.eigvalsh(G)[::-1], 0.0, None))
    np.testing.assert_allclose(res.singular_values, expected_s, rtol=1e-10)


def test_underdetermined_interpolates_in_row_space():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(6, 15)), rng.normal(size=6)
    res = min_norm_solution(X, y)
    assert res.residual_norm <= 1e-12 * np.linalg.norm(y)  # consistent system: interpolates
    # Minimum norm ⇔ no null-space component: P_null w = 0.
    assert np.linalg.norm(null_space_projector(X) @ res.solution) <= PROJ * np.linalg.norm(y)


def test_overdetermined_residual_satisfies_normal_equations():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(30, 5)), rng.normal(size=30)
    res = min_norm_solution(X, y)
    r = X @ res.solution - y
    assert res.residual_norm == pytest.approx(np.linalg.norm(r), rel=1e-12)
    assert np.linalg.norm(X.T @ r) <= 1e-12 * np.linalg.norm(X) * np.linalg.norm(y)
    Y = np.stack([y, 2 * y], axis=1)  # multi-output: per-column residual norms
    res2 = min_norm_solution(X, Y)
    assert res2.residual_norm.shape == (2,)
    np.testing.assert_allclose(res2.residual_norm, [res.residual_norm, 2 * res.residual_norm],
                               rtol=1e-12)


@pytest.mark.parametrize("n, d, r", [(10, 8, 3), (4, 9, 2), (12, 12, 11)])
def test_rank_deficient(n, d, r):
    rng = np.random.default_rng(n + d + r)
    X = low_rank(rng, n, d, r)
    y = rng.normal(size=n)
    res = min_norm_solution(X, y)
    assert res.rank == r
    # Discarded singular values sit at rounding level, kept ones far above the cutoff.
    assert res.singular_values[r - 1] > 1e6 * res.cutoff >= 1e6 * res.singular_values[r]
    # pinv with the same relative cutoff; 1e-10 relative holds because σ_r/σ_1 ≫ 1e-10.
    rcond = max(n, d) * np.finfo(np.float64).eps
    assert rel_err(res.solution, np.linalg.pinv(X, rcond=rcond) @ y) <= PINV
    s = res.singular_values
    assert res.condition_number == pytest.approx(s[0] / s[r - 1], rel=1e-15)
    assert np.trace(null_space_projector(X)) == pytest.approx(d - r, abs=PROJ)


def test_rcond_and_zero_matrix():
    X = np.diag([1.0, 1e-6, 1e-14])
    y = np.ones(3)
    assert min_norm_solution(X, y).rank == 3  # default cutoff 3·eps ≈ 6.7e-16
    loose = min_norm_solution(X, y, rcond=1e-8)
    assert loose.rank == 2
    np.testing.assert_allclose(loose.solution, [1.0, 1e6, 0.0], rtol=1e-12)
    zero = min_norm_solution(np.zeros((3, 2)), y)
    assert zero.rank == 0 and np.all(zero.solution == 0.0) and np.isnan(zero.condition_number)
    assert zero.residual_norm == pytest.approx(np.sqrt(3.0))
    np.testing.assert_array_equal(null_space_projector(np.zeros((3, 2))), np.eye(2))


@pytest.mark.parametrize("n, d, r", [(5, 12, 5), (20, 6, 6), (10, 8, 3), (3, 3, 3)])
def test_projectors(n, d, r):
    rng = np.random.default_rng(10 * n + d)
    X = low_rank(rng, n, d, r) if r < min(n, d) else rng.normal(size=(n, d))
    P_null, P_row = null_space_projector(X), row_space_projector(X)
    for P in (P_null, P_row):
        assert P.shape == (d, d) and P.dtype == np.float64
        np.testing.assert_allclose(P @ P, P, atol=PROJ, err_msg="idempotent")
        np.testing.assert_array_equal(P, P.T)  # symmetric by construction
    np.testing.assert_allclose(P_null + P_row, np.eye(d), atol=PROJ, err_msg="complementary")
    np.testing.assert_allclose(P_null @ P_row, 0.0, atol=PROJ)
    sigma_max = np.linalg.norm(X, 2)
    np.testing.assert_allclose(X @ P_null, 0.0, atol=PROJ * sigma_max, err_msg="X P_null = 0")
    np.testing.assert_allclose(X @ P_row, X, atol=PROJ * sigma_max, err_msg="X P_row = X")
    assert np.trace(P_row) == pytest.approx(r, abs=PROJ)


def test_null_space_component_is_what_gd_keeps():
    """GD on ½‖Xw − y‖² from w₀ converges to P_null w₀ + X⁺y (square-loss remark, Soudry 2018)."""
    rng = np.random.default_rng(3)
    X, y, w = rng.normal(size=(4, 10)), rng.normal(size=4), rng.normal(size=10)
    P_null = null_space_projector(X)
    target = P_null @ w + min_norm_solution(X, y).solution
    w0_null = P_null @ w
    lr = 1.0 / np.linalg.norm(X, 2) ** 2
    for _ in range(3000):
        w = w - lr * X.T @ (X @ w - y)
    np.testing.assert_allclose(P_null @ w, w0_null, atol=1e-12)  # never changes
    np.testing.assert_allclose(w, target, atol=1e-9)  # GD converged (linear rate) to the limit


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.ones(3), np.ones(3), "X must be a 2-D array"),
        (np.ones((3, 2)), np.ones(4), "y has 4 rows but X has 3"),
        (np.ones((3, 2)), np.ones((3, 2, 1)), "y must have shape"),
        (np.array([[1.0, np.nan]]), np.ones(1), "X contains NaN or inf"),
        (np.ones((1, 2)), np.array([np.inf]), "y contains NaN or inf"),
        (np.ones((0, 2)), np.ones(0), "at least one row"),
        (np.array([["a", "b"]]), np.ones(1), "numeric"),
    ],
)
def test_bad_input_raises(X, y, match):
    with pytest.raises(ValueError, match=match):
        min_norm_solution(X, y)


def test_bad_rcond_and_projector_input():
    with pytest.raises(ValueError, match="rcond"):
        min_norm_solution(np.eye(2), np.ones(2), rcond=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        null_space_projector(np.array([[np.inf, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        row_space_projector(np.ones(3))


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(4, 7)), rng.normal(size=4)
    res = min_norm_solution(torch.tensor(X, requires_grad=True), torch.tensor(y))
    assert res.solution.dtype == np.float64
    assert rel_err(res.solution, np.linalg.pinv(X) @ y) <= PINV
    np.testing.assert_allclose(null_space_projector(torch.tensor(X)), null_space_projector(X),
                               atol=PROJ)

"""The high-precision minimum-norm monomial fit against numpy's pinv/lstsq, an independent mpmath
solve, and itself at two precisions.

Tolerances:
    F64 = 1e-11   relative, weights vs np.linalg.pinv / lstsq where cond(Φ) ≤ ~1e3 (float64's error
                  there is ~cond·eps ≈ 1e-13)
    MP = 1e-30    absolute, vs an independent mpmath LU solve at 80 digits (the solver runs at 60)
    SELF = 1e-25  absolute, the same ill-conditioned fit (cond(Φ) ≥ 1e8, 30 Chebyshev nodes) at 50 and
                  100 digits: 50 digits less log₁₀ cond(Φ)² ≈ 20 lost to the Gram matrix leave ~30
"""

from __future__ import annotations

import numpy as np
import pytest
from mpmath import mp

from implicitlab.references import ExactMinNormFit, min_norm_solution, monomial_min_norm_exact

F64 = 1e-11
MP = 1e-30
SELF = 1e-25
N = 10


def _x(m):  # first-kind Chebyshev nodes, at the working precision
    return sorted(m.cos((2 * k - 1) * m.pi / (2 * N)) for k in range(1, N + 1))


def _y(m):
    return [m.sin(8 * m.pi * v) for v in _x(m)]


def _t(m):
    return [m.mpf(-1) + m.mpf(i) / 10 for i in range(21)]


def _floats(values) -> np.ndarray:
    return np.array([float(v) for v in values])


def _vandermonde(x: np.ndarray, p: int) -> np.ndarray:
    return np.vander(x, p, increasing=True)  # (n, p): x_i^j


@pytest.mark.parametrize("p", [3, 6, 8, 12])  # overdetermined (p < n), square, underdetermined
def test_matches_pinv_and_lstsq_when_well_conditioned(p):
    x = np.sort(np.cos((2 * np.arange(1, 9) - 1) * np.pi / 16))  # 8 Chebyshev nodes: cond(Φ) ≤ 260
    y = np.random.default_rng(p).normal(size=8)
    Phi = _vandermonde(x, p)
    assert np.linalg.cond(Phi) < 1e3
    fit = monomial_min_norm_exact(x, y, x, p, dps=40)  # floats are taken exactly
    assert isinstance(fit, ExactMinNormFit) and fit.dps == 40 and len(fit.weights) == p
    w = _floats(fit.weights)
    for ref in (np.linalg.pinv(Phi) @ y, np.linalg.lstsq(Phi, y, rcond=None)[0], min_norm_solution(Phi, y).solution):
        assert np.linalg.norm(w - ref) / np.linalg.norm(ref) < F64
    assert abs(float(fit.weight_norm2) - float(np.sum(w**2))) < F64 * float(np.sum(w**2))
    np.testing.assert_allclose(_floats(fit.eval_predictions), Phi @ w, rtol=0, atol=F64 * np.abs(y).max())
    assert fit.eval_predictions == fit.train_predictions  # x_eval = x_train here
    if p >= len(x):  # interpolation
        np.testing.assert_allclose(_floats(fit.train_predictions), y, rtol=0, atol=1e-30)


@pytest.mark.parametrize("p", [4, 10, 16])
def test_matches_an_independent_high_precision_solve(p):
    # w = Φᵀ(ΦΦᵀ)⁻¹y (p ≥ n) or (ΦᵀΦ)⁻¹Φᵀy (p < n) with mpmath's LU at 80 digits
    fit = monomial_min_norm_exact(_x, _y, _t, p, dps=60)
    old = mp.dps
    mp.dps = 80
    try:
        x, y, t = _x(mp), _y(mp), _t(mp)
        Phi = mp.matrix([[v**j for j in range(p)] for v in x])
        if p >= N:
            w = Phi.T * mp.lu_solve(Phi * Phi.T, mp.matrix(y))
        else:
            w = mp.lu_solve(Phi.T * Phi, Phi.T * mp.matrix(y))
        ref = [mp.fsum(w[j] * v**j for j in range(p)) for v in t]
        assert max(abs(a - b) for a, b in zip(fit.eval_predictions, ref)) < mp.mpf(10) ** -30
        assert max(abs(fit.weights[j] - w[j]) for j in range(p)) < mp.mpf(10) ** -30
        assert abs(fit.weight_norm2 - mp.fsum(w[j] ** 2 for j in range(p))) < mp.mpf(10) ** -30
    finally:
        mp.dps = old
    assert mp.dps == old  # the solver restored the global precision too


@pytest.mark.parametrize("p", [30, 60])  # n = 30 Chebyshev nodes: p = n (square), p = 2n
def test_ill_conditioned_vandermonde_agrees_with_itself_at_two_precisions(p):
    n = 30

    def x_train(m):
        return sorted(m.cos((2 * k - 1) * m.pi / (2 * n)) for k in range(1, n + 1))

    def y_train(m):
        return [m.sin(8 * m.pi * v) for v in x_train(m)]

    grid = np.linspace(-1, 1, 31)
    lo = monomial_min_norm_exact(x_train, y_train, grid, p, dps=50)
    hi = monomial_min_norm_exact(x_train, y_train, grid, p, dps=100)
    assert hi.cond_lower_bound > 1e8  # cond(Φ)² > 1/eps: float64 normal equations would keep no digit
    assert max(abs(a - b) for a, b in zip(lo.eval_predictions, hi.eval_predictions)) < SELF
    assert max(abs(a - b) for a, b in zip(lo.weights, hi.weights)) < SELF * max(abs(v) for v in hi.weights)
    with mp.workdps(100):  # it interpolates
        assert max(abs(a - b) for a, b in zip(hi.train_predictions, y_train(mp))) < SELF


def test_float64_pinv_agrees_where_well_conditioned():
    p = 6  # cond(Φ) ≈ 1e2: float64 is exact to rounding
    x = _floats(_x(mp))
    y = np.sin(8 * np.pi * x)
    mn = min_norm_solution(_vandermonde(x, p), y)
    t = _floats(_t(mp))
    fit = monomial_min_norm_exact(_x, _y, _t, p, dps=40)
    assert np.max(np.abs(_vandermonde(t, p) @ mn.solution - _floats(fit.eval_predictions))) < 1e-12


def test_cond_lower_bound_is_a_lower_bound():
    p = 8  # cond small enough for float64's SVD to be exact
    s = np.linalg.svd(_vandermonde(_floats(_x(mp)), p), compute_uv=False)
    lb = monomial_min_norm_exact(_x, _y, _t, p, dps=40).cond_lower_bound
    assert lb <= s[0] / s[-1] * (1 + 1e-10) and lb > 0.5 * s[0] / s[-1]


def test_endpoints_in_the_kernel():
    # x_i x_i = 1 at ±1: the kernel's geometric sum is p there, not 0/0
    x = [-1.0, -0.5, 0.25, 1.0]
    y = [1.0, -2.0, 0.5, 3.0]
    fit = monomial_min_norm_exact(x, y, [], 7, dps=40)
    ref = np.linalg.pinv(_vandermonde(np.array(x), 7)) @ np.array(y)
    assert np.linalg.norm(_floats(fit.weights) - ref) / np.linalg.norm(ref) < F64
    assert fit.eval_predictions == []


def test_bad_input():
    with pytest.raises(ValueError, match="num_features"):
        monomial_min_norm_exact([0.1], [1.0], [], 0, dps=30)
    with pytest.raises(ValueError, match="dps"):
        monomial_min_norm_exact([0.1], [1.0], [], 2, dps=10)
    with pytest.raises(ValueError, match="same positive length"):
        monomial_min_norm_exact([0.1, 0.2], [1.0], [], 2, dps=30)
    with pytest.raises(ArithmeticError, match="positive definite"):  # a repeated point, p ≥ n
        monomial_min_norm_exact([0.3, 0.3], [1.0, 2.0], [], 4, dps=30)

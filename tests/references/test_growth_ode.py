"""Tests for implicitlab.references.growth_ode (Poggio et al. 2018, Sec. 14, corrected Eqs. 53-57)."""

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from implicitlab.references.growth_ode import (
    NormGrowthSolution,
    excess_over_log,
    gd_norm_growth,
    product_norm_asymptotic,
    product_norm_k1,
    product_norm_k2_balanced,
    solve_norm_growth,
)

# Times up to 1e12 on a log grid, plus the deep asymptotic regime.
T_GRID = np.concatenate([[0.0], np.logspace(-3, 12, 31)])
T_FAR = np.array([1e50, 1e100])
CASES = [(1.0, 0.5), (2.0, 1.3), (0.3, 0.1), (5.0, 2.0)]  # (f_tilde, rho0)


# --------------------------------------------------------------------------- closed forms


def test_k1_closed_form_exact_value():
    # f~ = 1, rho0 = log 2: rho(t) = log(t + 2); at t = 98 that is log 100.
    p = product_norm_k1(np.array([0.0, 98.0]), 1.0, math.log(2.0))
    np.testing.assert_allclose(p, [math.log(2.0), math.log(100.0)], rtol=1e-15)
    # f~ = 2: rho = log(4 t + e^{2 rho0}) / 2, at t = 1e300 without overflow.
    p = product_norm_k1(np.array([1e300]), 2.0, 0.7)
    np.testing.assert_allclose(p, (math.log(4.0) + 300 * math.log(10.0)) / 2.0, rtol=1e-15)


def test_k2_closed_form_tabulated_ei():
    # Ei(1) = 1.89511781635594, Ei(2) = 4.95423435600189, Ei(10) = 2492.22897624188
    # (Abramowitz & Stegun, Table 5.1).  f~ = 1, rho0 = 1 (u0 = 1): P = u where
    # Ei(u) = 2 t + Ei(1).
    ei1, ei2, ei10 = 1.89511781635594, 4.95423435600189, 2492.22897624188
    t = np.array([0.0, (ei2 - ei1) / 2.0, (ei10 - ei1) / 2.0])
    np.testing.assert_allclose(product_norm_k2_balanced(t, 1.0, 1.0), [1.0, 2.0, 10.0], rtol=1e-12)
    # f~ = 2, rho0 = sqrt(1/2): u0 = 1 again, and Ei(u) = 4 t + Ei(1), P = u / 2.
    p = product_norm_k2_balanced(t / 2.0, 2.0, math.sqrt(0.5))
    np.testing.assert_allclose(p, [0.5, 1.0, 5.0], rtol=1e-12)


def test_k2_closed_form_satisfies_ei_equation_to_1e300():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    f, rho0 = 2.0, 1.3
    u0 = mpmath.mpf(f * rho0 * rho0)
    t = np.array([1e-8, 1e-3, 1.0, 1e5, 1e50, 1e150, 1e300])
    u = product_norm_k2_balanced(t, f, rho0) * f
    for ti, ui in zip(t, u):
        gap = mpmath.ei(mpmath.mpf(ui)) - mpmath.ei(u0) - 2 * f * mpmath.mpf(ti)
        du = gap * ui / mpmath.exp(ui)  # residual converted to an error in u
        assert abs(float(du)) <= 1e-13 * ui


def test_closed_forms_solve_balanced_ode_by_differentiation():
    # d/dt P = K f~ P^{2 - 2/K} e^{-f~ P} (corrected Eqs. 55-57), checked by central
    # differences on the closed forms.
    f, rho0 = 1.5, 0.8
    t = np.array([0.05, 1.0, 30.0, 1e3])
    h = 1e-5 * t
    for K, fn in [(1, product_norm_k1), (2, product_norm_k2_balanced)]:
        p0 = rho0 ** K
        p = fn(t, f, rho0)
        dp = (fn(t + h, f, rho0) - fn(t - h, f, rho0)) / (2 * h)
        np.testing.assert_allclose(dp, K * f * p ** (2 - 2 / K) * np.exp(-f * p), rtol=1e-7)
        assert fn(np.array([0.0]), f, rho0)[0] == pytest.approx(p0, rel=1e-15)


# --------------------------------------------------------------------------- ODE vs closed forms


@pytest.mark.parametrize("f, rho0", CASES)
def test_ode_matches_k1_closed_form(f, rho0):
    t = np.concatenate([T_GRID, T_FAR])
    sol = solve_norm_growth([rho0], f, t)
    assert sol.success
    assert sol.rho.shape == (t.size, 1)
    np.testing.assert_allclose(sol.product, product_norm_k1(t, f, rho0), rtol=1e-8)
    np.testing.assert_allclose(sol.log_loss, -f * sol.product, rtol=1e-15)


@pytest.mark.parametrize("f, rho0", CASES)
def test_ode_matches_k2_balanced_closed_form(f, rho0):
    t = np.concatenate([T_GRID, T_FAR])
    sol = solve_norm_growth([rho0, rho0], f, t)
    assert sol.success
    np.testing.assert_allclose(sol.product, product_norm_k2_balanced(t, f, rho0), rtol=1e-8)
    np.testing.assert_allclose(sol.rho[:, 0], sol.rho[:, 1], rtol=1e-15)


def test_ode_reaches_1e300_without_overflow():
    t = np.array([0.0, 1.0, 1e300])
    sol = solve_norm_growth([0.3, 0.7, 1.1], 0.5, t)
    assert sol.success and np.all(np.isfinite(sol.rho))
    assert sol.log_loss[-1] < -690.0  # the loss itself would underflow; its log does not


def test_duplicate_and_zero_times():
    sol = solve_norm_growth([0.4, 0.9], 1.0, [0.0, 0.0, 5.0, 5.0])
    np.testing.assert_allclose(sol.rho[0], [0.4, 0.9], rtol=0)
    np.testing.assert_array_equal(sol.rho[2], sol.rho[3])
    only_zero = solve_norm_growth([0.4, 0.9], 1.0, [0.0])
    assert only_zero.success and only_zero.product[0] == pytest.approx(0.36, rel=1e-15)


# --------------------------------------------------------------------------- conservation


def test_conservation_unbalanced_k3_against_direct_integration():
    # Integrate the K-dimensional system rho_k' = f~ (P / rho_k) e^{-f~ P} (Eq. 53') directly,
    # without the reduction to c(t), and check both the conservation law and the reduction.
    f, rho0 = 1.2, np.array([0.3, 1.0, 2.0])
    t = np.array([0.0, 0.1, 1.0, 10.0, 1e2, 1e3, 1e4])

    def rhs(_, r):
        p = np.prod(r)
        return f * p * np.exp(-f * p) / r

    direct = solve_ivp(rhs, (0.0, t[-1]), rho0, method="DOP853", t_eval=t, rtol=1e-12, atol=1e-14)
    assert direct.success
    sq = direct.y.T ** 2
    for k, j in [(0, 1), (1, 2), (0, 2)]:
        np.testing.assert_allclose(sq[:, k] - sq[:, j], rho0[k] ** 2 - rho0[j] ** 2, rtol=1e-9)

    sol = solve_norm_growth(rho0, f, t)
    np.testing.assert_allclose(sol.rho, direct.y.T, rtol=1e-8)
    assert np.all(np.diff(sol.rho, axis=0) > 0)


# --------------------------------------------------------------------------- asymptotics


@pytest.mark.parametrize("K", [3, 5])
def test_asymptotic_ratio_tends_to_one(K):
    f = 0.7
    rho0 = np.linspace(0.5, 1.5, K)  # unbalanced start: same leading asymptotics
    t = np.array([1e10, 1e50, 1e100, 1e200, 1e300])
    sol = solve_norm_growth(rho0, f, t)
    gap = np.abs(sol.product / product_norm_asymptotic(t, f, K) - 1.0)
    assert np.all(np.diff(gap) < 0)
    assert gap[-1] < 2e-4


def test_asymptotic_is_nan_below_one_and_exact_limit_for_k1():
    p = product_norm_asymptotic(np.array([0.0, 0.5, 1.0, 1e100]), 2.0, 1)
    assert np.all(np.isnan(p[:3]))
    np.testing.assert_allclose(p[3], product_norm_k1(np.array([1e100]), 2.0, 0.3)[0], rtol=1e-15)


@pytest.mark.parametrize("K", [2, 3, 4])
def test_excess_over_log_grows_like_loglog_for_deep(K):
    f = 0.8
    t = np.logspace(10, 300, 30)
    sol = solve_norm_growth(np.ones(K), f, t)
    ex = excess_over_log(t, sol.product, f)
    assert np.all(np.diff(ex) > 0)
    a = 2.0 - 2.0 / K
    # Leading order: growth between the ends ~ (2 - 2/K) * increase of log log t (to 10%;
    # the remainder is O(a^2 log log t / log t)).
    loglog = np.log(np.log(t))
    assert (ex[-1] - ex[0]) == pytest.approx(a * (loglog[-1] - loglog[0]), rel=0.1)
    # Sharper: e^u u^{-a} (1 + a/u + O(u^-2)) = K f~^{2/K} t with u = f~ P, i.e.
    # excess - a log u - log(K f~^{2/K}) = -log(1 + a/u) + O(u^-2).
    u = f * sol.product
    resid = ex - a * np.log(u) - math.log(K * f ** (2.0 / K)) + np.log1p(a / u)
    far = t >= 1e100
    assert np.all(np.abs(resid[far]) < 5.0 / u[far] ** 2)


def test_excess_over_log_tends_to_log_f_squared_for_k1():
    f, rho0 = 1.7, 0.4
    t_near = np.logspace(-2, 6, 9)
    ex_exact = excess_over_log(t_near, product_norm_k1(t_near, f, rho0), f)
    assert np.all(np.diff(ex_exact) < 0)  # log(f~^2 + e^{u0}/t), from above
    t = np.logspace(0, 100, 21)
    sol = solve_norm_growth([rho0], f, t)
    ex = excess_over_log(t, sol.product, f)
    assert ex[-1] == pytest.approx(2.0 * math.log(f), abs=1e-9)


# --------------------------------------------------------------------------- gradient descent


def test_gd_first_order_convergence_to_ode():
    rho0, f, T = [0.5, 1.0, 0.8], 1.0, 8.0
    exact = solve_norm_growth(rho0, f, [T / 2, T], rtol=1e-12, atol=1e-14)
    errs = []
    for lr in [0.04, 0.02, 0.01]:
        n = int(round(T / lr))
        gd = gd_norm_growth(rho0, f, lr, n, [0, n // 2, n])
        assert isinstance(gd, NormGrowthSolution)
        np.testing.assert_allclose(gd.t, [0.0, T / 2, T], rtol=1e-15)
        np.testing.assert_array_equal(gd.rho[0], rho0)
        errs.append(np.max(np.abs(gd.product[1:] - exact.product)))
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all((ratios > 1.6) & (ratios < 2.4))
    assert errs[-1] < 1e-2


def test_gd_log_domain_far_regime():
    # Start deep in the asymptotic regime (loss e^{-800}): the step is tiny but finite.
    gd = gd_norm_growth([20.0, 20.0], 2.0, 1.0, 10, [0, 10])
    assert np.all(np.isfinite(gd.rho)) and gd.log_loss[0] == pytest.approx(-800.0)
    assert np.all(gd.rho[1] >= gd.rho[0])


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(rho0=[1.0, 0.0], f_tilde=1.0, t=[0.0, 1.0]),
        dict(rho0=[1.0, -1.0], f_tilde=1.0, t=[0.0, 1.0]),
        dict(rho0=[], f_tilde=1.0, t=[0.0, 1.0]),
        dict(rho0=[[1.0]], f_tilde=1.0, t=[0.0, 1.0]),
        dict(rho0=[1.0, np.nan], f_tilde=1.0, t=[0.0, 1.0]),
        dict(rho0=[1.0], f_tilde=0.0, t=[0.0, 1.0]),
        dict(rho0=[1.0], f_tilde=-1.0, t=[0.0, 1.0]),
        dict(rho0=[1.0], f_tilde=np.inf, t=[0.0, 1.0]),
        dict(rho0=[1.0], f_tilde=1.0, t=[1.0, 0.5]),
        dict(rho0=[1.0], f_tilde=1.0, t=[-1.0, 0.5]),
        dict(rho0=[1.0], f_tilde=1.0, t=[0.0, np.inf]),
        dict(rho0=[1.0], f_tilde=1.0, t=[]),
    ],
)
def test_solve_validation(kwargs):
    with pytest.raises(ValueError):
        solve_norm_growth(**kwargs)


def test_other_validation():
    with pytest.raises(ValueError):
        product_norm_k1([-1.0], 1.0, 1.0)
    with pytest.raises(ValueError):
        product_norm_k2_balanced([1.0], 1.0, 0.0)
    with pytest.raises(ValueError):
        product_norm_asymptotic([10.0], 1.0, 0)
    with pytest.raises(ValueError):
        product_norm_asymptotic([10.0], 1.0, 2.5)
    with pytest.raises(ValueError):
        excess_over_log([0.0], [1.0], 1.0)
    with pytest.raises(ValueError):
        gd_norm_growth([1.0], 1.0, 0.0, 10, [0, 10])
    with pytest.raises(ValueError):
        gd_norm_growth([1.0], 1.0, 0.1, 10, [0, 11])
    with pytest.raises(ValueError):
        gd_norm_growth([1.0], 1.0, 0.1, 10, [5, 2])
    with pytest.raises(ValueError):
        gd_norm_growth([1.0], 1.0, 0.1, -1, [0])

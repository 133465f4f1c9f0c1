"""The synthetic sets of the theory papers (``implicitlab.data.synthetic``): shapes, float64,
determinism under a seed, and each generator's documented property checked against an independent
computation (an exact SVM, least squares, closed forms, quadrature)."""

import numpy as np
import pytest

from implicitlab.data import gaussian_regression, marion_chizat_regression, separable_through_origin
from implicitlab.data.synthetic import POLYNOMIAL_BASES, chebyshev_nodes, polynomial_features, sine_target
from implicitlab.references.svm import svm_max_margin

# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize("min_margin", [0.05, 0.2, 0.5])
def test_separable_through_origin_has_the_stated_margin(min_margin):
    X, y = separable_through_origin(60, 4, min_margin=min_margin, seed=1)
    assert X.shape == (60, 4) and y.shape == (60,) and X.dtype == y.dtype == np.float64
    assert set(np.unique(y)) == {-1.0, 1.0}
    svm = svm_max_margin(X, y)  # the exact hard-margin SVM through the origin: it exists (separable) …
    assert svm.margin >= min_margin * (1 - 1e-9)  # … and its margin is at least the generator's gap


def test_separable_through_origin_is_seeded():
    a, b = separable_through_origin(30, 3, seed=7), separable_through_origin(30, 3, seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], separable_through_origin(30, 3, seed=8)[0])
    with pytest.raises(ValueError, match="need n ≥ 1 and d ≥ 1"):
        separable_through_origin(0, 3)


# --------------------------------------------------------------------------- regression


def test_gaussian_regression_shapes_seed_and_noiseless_fit():
    X, y = gaussian_regression(50, 4, seed=3)
    assert X.shape == (50, 4) and y.shape == (50,) and X.dtype == y.dtype == np.float64
    X2, y2 = gaussian_regression(50, 4, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(X, gaussian_regression(50, 4, seed=4)[0])
    # noise = 0: y lies exactly in the column span of X (y = X w_true)
    w, *_ = np.linalg.lstsq(X, y, rcond=None)
    np.testing.assert_allclose(X @ w, y, rtol=0, atol=1e-12 * np.abs(y).max())


def test_gaussian_regression_noise_scale():
    n, noise = 4000, 0.5
    X0, y0 = gaussian_regression(n, 3, noise=0.0, seed=2)
    X, y = gaussian_regression(n, 3, noise=noise, seed=2)
    np.testing.assert_array_equal(X, X0)  # same seed: same X and w_true, only the noise is scaled
    eps = (y - y0) / noise  # ε ~ N(0, 1): sample std within ~4 standard errors (1/√(2n) ≈ 0.011)
    assert abs(eps.std() - 1.0) < 0.05 and abs(eps.mean()) < 0.07


@pytest.mark.parametrize(("n", "d"), [(30, 5), (5, 30)], ids=["underparametrized", "overparametrized"])
def test_marion_chizat_regression_w_star_is_the_min_norm_solution(n, d):
    data = marion_chizat_regression(n, d, noise=0.3, seed=0)
    assert set(data) == {"X", "y", "X_test", "y_test", "w_star", "w_true"}
    assert data["X"].shape == data["X_test"].shape == (n, d) and data["y"].shape == data["y_test"].shape == (n,)
    assert data["w_star"].shape == data["w_true"].shape == (d,)
    assert all(a.dtype == np.float64 for a in data.values())
    assert np.linalg.norm(data["w_star"]) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(data["w_star"], np.linalg.pinv(data["X"]) @ data["y"], rtol=0, atol=1e-10)
    again = marion_chizat_regression(n, d, noise=0.3, seed=0)
    for k in data:
        np.testing.assert_array_equal(data[k], again[k])


def test_marion_chizat_regression_noiseless_targets_and_common_scale():
    data = marion_chizat_regression(8, 20, noise=0.0, seed=5)
    # with no noise, train and test targets come from the same (rescaled) w_true
    np.testing.assert_allclose(data["y"], data["X"] @ data["w_true"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(data["y_test"], data["X_test"] @ data["w_true"], rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- 1-D regression (Poggio et al. 2018)


@pytest.mark.parametrize("n", [1, 2, 7, 12])
def test_chebyshev_nodes_first_kind_closed_form(n):
    x = chebyshev_nodes(n)
    k = np.arange(1, n + 1)
    expected = np.sort(np.cos((2 * k - 1) * np.pi / (2 * n)))  # cos((2k − 1)π / 2n), ascending
    assert x.dtype == np.float64 and x.shape == (n,)
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-15)
    assert np.all(np.diff(x) > 0) and np.all(np.abs(x) < 1)
    np.testing.assert_allclose(np.polynomial.chebyshev.chebval(x, [0] * n + [1]), 0, atol=1e-13)  # roots of T_n
    if n % 2:
        assert x[n // 2] == 0.0  # the middle node is exactly zero


def test_chebyshev_nodes_second_kind_and_errors():
    x = chebyshev_nodes(5, "second")
    np.testing.assert_allclose(x, np.sort(np.cos(np.arange(5) * np.pi / 4)), rtol=0, atol=1e-15)
    assert x[0] == -1.0 and x[-1] == 1.0 and x[2] == 0.0
    with pytest.raises(ValueError, match="n ≥ 1"):
        chebyshev_nodes(0)
    with pytest.raises(ValueError, match="n ≥ 2"):
        chebyshev_nodes(1, "second")
    with pytest.raises(ValueError, match="unknown Chebyshev node kind"):
        chebyshev_nodes(3, "third")


def test_sine_target():
    f = 4.0
    x = np.array([0.0, 1 / (4 * f), 1 / (2 * f), 3 / (4 * f)])
    y = sine_target(x, f)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, [0.0, 1.0, 0.0, -1.0], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(sine_target([0.1, 0.2]), np.sin(2 * np.pi * 4.0 * np.array([0.1, 0.2])))


def test_polynomial_features_bases():
    x = np.linspace(-1, 1, 9)
    for basis in POLYNOMIAL_BASES:
        A = polynomial_features(x, 6, basis)
        assert A.shape == (9, 6) and A.dtype == np.float64
        np.testing.assert_array_equal(A[:, 0], polynomial_features(x, 1, basis)[:, 0])  # φ_0 is constant
    np.testing.assert_array_equal(polynomial_features(x, 4, "monomial"), x[:, None] ** np.arange(4))
    theta = np.arccos(x)
    np.testing.assert_allclose(polynomial_features(x, 6, "chebyshev"), np.cos(np.arange(6) * theta[:, None]),
                               rtol=0, atol=1e-13)  # T_j(cos θ) = cos(jθ)
    # Legendre: orthonormal for dx/2 on [−1, 1]; Gauss–Legendre with 8 nodes is exact to degree 15
    nodes, weights = np.polynomial.legendre.leggauss(8)
    P = polynomial_features(nodes, 6, "legendre")
    np.testing.assert_allclose(P.T @ (weights[:, None] / 2 * P), np.eye(6), rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="unknown polynomial basis"):
        polynomial_features(x, 3, "fourier")
    with pytest.raises(ValueError, match="at least one feature"):
        polynomial_features(x, 0)


# --------------------------------------------------------------------------- conditioned regression (mc2024-constant)


@pytest.mark.parametrize("kappa", [1.0, 3.0, 10.0, 30.0, 1e4])
@pytest.mark.parametrize(("n", "d"), [(50, 5), (7, 7), (200, 12)])
def test_conditioned_regression_has_the_exact_condition_number_and_spectrum(kappa, n, d):
    from implicitlab.data.synthetic import conditioned_regression

    data = conditioned_regression(n, d, kappa, noise=1.0, seed=4)
    X = data["X"]
    assert X.shape == (n, d) and X.dtype == np.float64
    sigma = X.T @ X / n
    eig = np.linalg.eigvalsh(sigma)[::-1]  # independent: a symmetric eigensolver on Σ itself
    assert abs((eig[0] / eig[-1]) / kappa - 1) <= 1e-12  # cond(Σ) = κ to 1e-12 relative
    expected = kappa ** (-np.arange(d) / (d - 1))  # the specified geometric spectrum, λ_max = 1
    np.testing.assert_allclose(eig, expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(data["eigenvalues"], expected, rtol=1e-15, atol=0)
    V = data["eigenvectors"]  # Σ v_i = λ_i v_i for the returned eigenvectors
    np.testing.assert_allclose(sigma @ V, V * expected, rtol=0, atol=1e-12)


def test_conditioned_regression_w_star_is_least_squares_with_unit_norm_and_pairs_kappas():
    from implicitlab.data.synthetic import conditioned_regression

    a, b = conditioned_regression(40, 6, 10.0, seed=2), conditioned_regression(40, 6, 10.0, seed=2)
    np.testing.assert_array_equal(a["X"], b["X"])
    assert abs(np.linalg.norm(a["w_star"]) - 1) < 1e-14
    w_ls = np.linalg.solve(a["X"].T @ a["X"], a["X"].T @ a["y"])  # normal equations, independent of lstsq
    np.testing.assert_allclose(a["w_star"], w_ls, rtol=0, atol=1e-12)
    # one seed at another κ: same rotation V (paired design), another spectrum
    c = conditioned_regression(40, 6, 3.0, seed=2)
    np.testing.assert_array_equal(a["eigenvectors"], c["eigenvectors"])
    assert not np.allclose(a["X"], c["X"])
    assert not np.array_equal(a["X"], conditioned_regression(40, 6, 10.0, seed=3)["X"])
    # κ = 1: Σ = I exactly up to rounding
    one = conditioned_regression(40, 6, 1.0, seed=2)
    np.testing.assert_allclose(one["X"].T @ one["X"] / 40, np.eye(6), rtol=0, atol=1e-13)


@pytest.mark.parametrize(("args", "message"), [
    ((5, 6, 3.0), "need 1 ≤ d ≤ n"),
    ((10, 3, 0.5), "kappa must be a finite number ≥ 1"),
    ((10, 3, float("inf")), "kappa must be a finite number ≥ 1"),
    ((10, 1, 2.0), "with d = 1"),
])
def test_conditioned_regression_refuses_bad_input(args, message):
    from implicitlab.data.synthetic import conditioned_regression

    with pytest.raises(ValueError, match=message):
        conditioned_regression(*args)
    with pytest.raises(ValueError, match="noise must be"):
        conditioned_regression(10, 3, 2.0, noise=-1.0)

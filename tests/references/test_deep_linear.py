"""Marion–Chizat deep-linear references vs the explicit float64 Hessian at minimizers built here."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from implicitlab.diagnostics.eigen import sharpness
from implicitlab.references.deep_linear import deep_linear_minimizer_sharpness, deep_linear_sharpness_bound

RTOL = 1e-10


def regression_data(n: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = X @ torch.randn(d, generator=g, dtype=torch.float64) + torch.randn(n, generator=g, dtype=torch.float64)
    return X, y  # noisy: the minimizers below have nonzero residuals (Xᵀr = 0, r ≠ 0)


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.vector_norm(v)


def balanced_rank_one(w_star: torch.Tensor, depth: int, width: int, seed: int = 0) -> list[torch.Tensor]:
    """W_1 = c u_1 ŵᵀ, W_k = c u_k u_{k−1}ᵀ, W_L = c u_{L−1}ᵀ, c = ‖w*‖^{1/L}: product w*ᵀ, ‖W_k‖ = c."""
    g = torch.Generator().manual_seed(seed)
    c = float(torch.linalg.vector_norm(w_star)) ** (1.0 / depth)
    us = [unit(torch.randn(width, generator=g, dtype=torch.float64)) for _ in range(depth - 1)]
    left = [*us, torch.ones(1, dtype=torch.float64)]
    right = [unit(w_star), *us]
    return [c * torch.outer(a, b) for a, b in zip(left, right)]


def unbalance(weights: list[torch.Tensor], k: int, seed: int = 1) -> list[torch.Tensor]:
    """Insert M, M⁻¹ between layers k and k+1 (0-based): same product, a different minimizer."""
    g = torch.Generator().manual_seed(seed)
    d = weights[k].shape[0]
    M = torch.eye(d, dtype=torch.float64) + 0.8 * torch.randn(d, d, generator=g, dtype=torch.float64)
    out = [W.clone() for W in weights]
    out[k] = M @ weights[k]
    out[k + 1] = weights[k + 1] @ torch.linalg.inv(M)
    return out


def as_model(weights: list[torch.Tensor]) -> nn.Sequential:
    layers = []
    for W in weights:
        layer = nn.Linear(W.shape[1], W.shape[0], bias=False).double()
        with torch.no_grad():
            layer.weight.copy_(W)
        layers.append(layer)
    return nn.Sequential(*layers)


def explicit_top_eigenvalue(weights: list[torch.Tensor], X: torch.Tensor, y: torch.Tensor) -> float:
    """λ_max of torch.func.hessian of R(W) = mean (y − W_L⋯W_1 x)² over all weight entries."""
    shapes = [W.shape for W in weights]
    sizes = [W.numel() for W in weights]

    def risk(theta):
        out = X.T
        for t, s in zip(torch.split(theta, sizes), shapes):
            out = t.view(s) @ out
        return (y - out[0]).square().mean()

    H = torch.func.hessian(risk)(torch.cat([W.reshape(-1) for W in weights]))
    return float(torch.linalg.eigvalsh(H)[-1])


def end_to_end(weights):
    out = weights[0]
    for W in weights[1:]:
        out = W @ out
    return out[0]


@pytest.mark.parametrize("depth, d", [(3, 3), (4, 5), (6, 2)])
def test_closed_form_matches_explicit_hessian_at_balanced_and_unbalanced_minimizers(depth, d):
    X, y = regression_data(n=20, d=d)
    bound = deep_linear_sharpness_bound(X, y, depth)
    balanced = balanced_rank_one(bound.w_star, depth, width=d)
    unbalanced = unbalance(balanced, k=depth // 2 - 1)
    sharp = {}
    for name, weights in (("balanced", balanced), ("unbalanced", unbalanced)):
        torch.testing.assert_close(end_to_end(weights), bound.w_star, rtol=1e-12, atol=1e-12)  # a minimizer
        sharp[name] = deep_linear_minimizer_sharpness(weights, X)
        assert sharp[name] == pytest.approx(explicit_top_eigenvalue(weights, X, y), rel=RTOL), name
        assert sharp[name] >= bound.s_min * (1 - 1e-12), name  # never below the lower bound
    assert sharp["unbalanced"] > sharp["balanced"] * (1 + 1e-3)  # different minimizers, different S


def test_lanczos_sharpness_on_the_network_equals_the_closed_form():
    X, y = regression_data(n=30, d=4, seed=2)
    bound = deep_linear_sharpness_bound(X, y, 5)
    weights = unbalance(balanced_rank_one(bound.w_star, 5, width=4), k=1)
    res = sharpness(as_model(weights), "square", X, y, tol=1e-11)
    assert res.all_converged
    assert float(res.values[0]) == pytest.approx(deep_linear_minimizer_sharpness(weights, X), rel=RTOL)
    assert deep_linear_minimizer_sharpness(as_model(weights), X) == deep_linear_minimizer_sharpness(weights, X)


@pytest.mark.parametrize("depth", [1, 2, 5, 10])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_s_min_attained_for_d_equal_one(depth, sign):
    X, y = regression_data(n=15, d=1, seed=depth)
    y = sign * y.abs()
    bound = deep_linear_sharpness_bound(X, y, depth)
    w = float(bound.w_star[0])
    layers = [torch.tensor([[abs(w) ** (1.0 / depth)]], dtype=torch.float64) for _ in range(depth)]
    layers[-1] = layers[-1] * math.copysign(1.0, w)  # balanced, signs carried by one layer
    assert explicit_top_eigenvalue(layers, X, y) == pytest.approx(bound.s_min, rel=RTOL)
    assert deep_linear_minimizer_sharpness(layers, X) == pytest.approx(bound.s_min, rel=RTOL)
    if depth > 1:  # an unbalanced minimizer is strictly sharper
        layers[0], layers[1] = 2.0 * layers[0], 0.5 * layers[1]
        assert explicit_top_eigenvalue(layers, X, y) > bound.s_min * 1.01


def test_bound_fields():
    X, y = regression_data(n=50, d=5, seed=3)
    b = deep_linear_sharpness_bound(X, y, 10)
    sigma = X.T @ X / 50
    lam = torch.linalg.eigvalsh(sigma)
    torch.testing.assert_close(b.w_star, torch.linalg.lstsq(X, y.unsqueeze(1)).solution[:, 0])
    torch.testing.assert_close(b.sigma, sigma)
    assert b.lambda_max == pytest.approx(float(lam[-1])) and b.kappa == pytest.approx(float(lam[-1] / lam[0]))
    assert float(lam[0]) <= b.a <= float(lam[-1])
    assert b.s_min == pytest.approx(2 * 10 * b.a * b.w_star_norm ** (2 - 2 / 10))
    assert b.upper_line == pytest.approx(8 * 10 * b.lambda_max)
    assert b.critical_step == pytest.approx(2 / b.s_min)
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.s_min = 0.0  # type: ignore[misc]
    # the digest's normalisation ‖w*‖ = 1 (y divided by ‖w*‖): S_min = 2La, critical step 1/(aL)
    unit_b = deep_linear_sharpness_bound(X, y / b.w_star_norm, 10)
    assert unit_b.w_star_norm == pytest.approx(1.0) and unit_b.critical_step == pytest.approx(1 / (unit_b.a * 10))


def test_underdetermined_data_has_infinite_condition_number():
    X, y = regression_data(n=4, d=7)
    b = deep_linear_sharpness_bound(X, y, 3)
    assert math.isinf(b.kappa)
    torch.testing.assert_close(X @ b.w_star, y)  # interpolates, minimum norm


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda X, y: deep_linear_sharpness_bound(X, y, 0), "depth"),
        (lambda X, y: deep_linear_sharpness_bound(X, y[:-1], 2), "entries"),
        (lambda X, y: deep_linear_sharpness_bound(X[:0], y[:0], 2), "non-empty"),
        (lambda X, y: deep_linear_sharpness_bound(X, 0 * y, 2), "w\\* = 0"),
        (lambda X, y: deep_linear_minimizer_sharpness([torch.ones(3, 3), torch.ones(1, 2)], X), "does not follow"),
        (lambda X, y: deep_linear_minimizer_sharpness([torch.ones(3, 3), torch.ones(2, 3)], X), "one output"),
        (lambda X, y: deep_linear_minimizer_sharpness([torch.ones(1, 4)], X), "d = 3"),
        (lambda X, y: deep_linear_minimizer_sharpness(nn.Sequential(nn.Linear(3, 1)), X), "no biases"),
    ],
)
def test_bad_input(call, match):
    X, y = regression_data(n=6, d=3)
    with pytest.raises(ValueError, match=match):
        call(X, y)


# ------------------------------------------------------------------------ the rank-one aligned minimizer

from implicitlab.references.deep_linear import rank_one_aligned_minimizer, rank_one_aligned_sharpness  # noqa: E402

RTOL_RANK_ONE = 1e-12  # closed form vs eigvalsh of the explicit float64 Hessian (the tolerance)


@pytest.mark.parametrize("depth, d, width", [(2, 3, 3), (3, 4, 6), (5, 5, 5), (6, 2, 4)])
def test_rank_one_aligned_sharpness_matches_explicit_hessian(depth, d, width):
    X, y = regression_data(n=25, d=d, seed=depth)
    bound = deep_linear_sharpness_bound(X, y, depth)
    v = torch.randn(width, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    weights = rank_one_aligned_minimizer(bound.w_star, depth, v=v)
    torch.testing.assert_close(end_to_end(weights), bound.w_star, rtol=1e-13, atol=1e-13)  # a minimizer
    assert [tuple(W.shape) for W in weights] == [(width, d)] + [(width, width)] * (depth - 2) + [(1, width)]
    norms = [float(torch.linalg.matrix_norm(W, ord=2)) for W in weights]
    assert norms == pytest.approx([float(bound.w_star_norm) ** (1 / depth)] * depth, rel=1e-13)  # balanced
    closed = rank_one_aligned_sharpness(X, y, depth)
    assert closed == pytest.approx(explicit_top_eigenvalue(weights, X, y), rel=RTOL_RANK_ONE)
    assert closed == pytest.approx(deep_linear_minimizer_sharpness(weights, X), rel=RTOL_RANK_ONE)


@pytest.mark.parametrize("depth", [2, 3, 6])
def test_rank_one_aligned_attains_s_min_when_w_star_is_the_top_eigenvector(depth):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 4, generator=g, dtype=torch.float64)
    top = torch.linalg.eigh(X.T @ X / X.shape[0]).eigenvectors[:, -1]
    y = X @ (1.7 * top)  # noiseless: w* = 1.7·(top eigenvector of Σ), up to rounding
    bound = deep_linear_sharpness_bound(X, y, depth)
    weights = rank_one_aligned_minimizer(bound.w_star, depth)
    assert rank_one_aligned_sharpness(X, y, depth) == pytest.approx(bound.s_min, rel=RTOL_RANK_ONE)
    assert explicit_top_eigenvalue(weights, X, y) == pytest.approx(bound.s_min, rel=RTOL_RANK_ONE)


@pytest.mark.parametrize("depth", [2, 3, 6, 10])
def test_rank_one_aligned_is_sharper_than_s_min_for_a_generic_w_star(depth):
    X, y = regression_data(n=50, d=5, seed=11)  # w* is no eigenvector of Σ
    bound = deep_linear_sharpness_bound(X, y, depth)
    sigma_u = bound.sigma @ bound.w_star
    assert float(torch.linalg.vector_norm(sigma_u - bound.a * bound.w_star)) > 1e-3  # not an eigenvector
    closed = rank_one_aligned_sharpness(X, y, depth)
    assert closed > bound.s_min * (1 + 1e-4)
    assert closed == pytest.approx(explicit_top_eigenvalue(rank_one_aligned_minimizer(bound.w_star, depth), X, y),
                                   rel=RTOL_RANK_ONE)


def test_rank_one_aligned_misses_s_min_for_a_small_eigenvector_at_small_depth():
    """u an eigenvector of λ_u with L·λ_u < Λ: S = 2‖w*‖^{2−2/L}·Λ > S_min (the extra condition)."""
    X = torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)).repeat(4, 1)  # Σ = diag(3, 1/3, 1/12)
    sigma = X.T @ X / X.shape[0]
    evals, evecs = torch.linalg.eigh(sigma)
    u = evecs[:, 0]  # the smallest eigenvalue
    y = X @ (2.0 * u)
    depth = 2
    assert depth * float(evals[0]) < float(evals[-1])
    bound = deep_linear_sharpness_bound(X, y, depth)
    expected = 2.0 * 2.0 ** (2.0 - 2.0 / depth) * float(evals[-1])
    assert rank_one_aligned_sharpness(X, y, depth) == pytest.approx(expected, rel=RTOL_RANK_ONE)
    assert expected > 2 * bound.s_min


@pytest.mark.parametrize("depth", [1, 4])
def test_rank_one_aligned_for_d_equal_one_is_s_min(depth):
    X, y = regression_data(n=15, d=1, seed=4)
    bound = deep_linear_sharpness_bound(X, y, depth)
    assert rank_one_aligned_sharpness(X, y, depth) == pytest.approx(bound.s_min, rel=RTOL_RANK_ONE)


@pytest.mark.parametrize("call, match", [
    (lambda: rank_one_aligned_minimizer(torch.zeros(3), 2), "nonzero"),
    (lambda: rank_one_aligned_minimizer(torch.ones(3), 0), "depth"),
    (lambda: rank_one_aligned_minimizer(torch.ones(3), 3, v=torch.zeros(4)), "v must"),
])
def test_rank_one_aligned_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()

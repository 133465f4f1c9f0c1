"""One model: Lanczos eigenpairs against torch.linalg.eigvalsh (float64), residuals, warm starts, bad input;
sharpness end to end; the power-iteration baseline."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from implicitlab.diagnostics.eigen import power_iteration, sharpness
from implicitlab.diagnostics.hessian import HessianOperator
from implicitlab.diagnostics.lanczos import EigenResult, lanczos_eigenpairs

EIG_RTOL = 1e-10  # the Done-when accuracy for top-k eigenvalues in float64


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tanh_mlp(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(5, 8, bias=False), nn.Tanh(), nn.Linear(8, 4, bias=False), nn.Tanh(), nn.Linear(4, 3, bias=False)
    ).double()
    X, y = torch.randn(30, 5, dtype=torch.float64), torch.randint(0, 3, (30,))
    return model, X, y


@pytest.fixture(scope="module")
def mlp_problem():
    model, X, y = tanh_mlp()
    H = HessianOperator(model, "ce", X, y, chunk_size=11)
    dense = H @ torch.eye(H.dim, dtype=torch.float64)
    return model, X, y, H, torch.linalg.eigvalsh(0.5 * (dense + dense.T)), dense


def synthetic(eigenvalues, seed: int = 0) -> torch.Tensor:
    """Q diag(λ) Qᵀ with a random orthogonal Q: a symmetric operator whose spectrum we choose."""
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(lam.numel(), lam.numel(), generator=g, dtype=torch.float64))
    return Q @ torch.diag(lam) @ Q.T


def explicit_residuals(A: torch.Tensor, res: EigenResult) -> torch.Tensor:
    V = res.vectors.to(torch.float64)
    return torch.linalg.vector_norm(A @ V - V * res.values, dim=0)


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_topk_matches_eigvalsh_with_small_residuals(mlp_problem, which):
    _, _, _, H, ref, dense = mlp_problem
    k, tol = 3, 1e-11
    res = lanczos_eigenpairs(H, k=k, which=which, tol=tol)
    order = {"LA": ref.flip(0), "SA": ref, "LM": ref[ref.abs().argsort(descending=True)]}[which]
    torch.testing.assert_close(res.values, order[:k], rtol=EIG_RTOL, atol=0.0)
    assert res.all_converged and res.num_matvecs <= H.dim
    assert res.values.dtype == torch.float64 and res.vectors.shape == (H.dim, k)
    assert res.vectors.dtype == H.dtype and res.converged.dtype == torch.bool
    bound = tol * res.values.abs()
    assert (res.residuals <= bound).all()  # the Lanczos estimate β|s_j| …
    assert (explicit_residuals(dense, res) <= 10 * bound).all()  # … and the true ‖Hv − λv‖ agree


def test_explicit_residuals_cost_k_products(mlp_problem):
    _, _, _, H, ref, dense = mlp_problem
    implicit = lanczos_eigenpairs(H, k=2, tol=1e-10)
    explicit = lanczos_eigenpairs(H, k=2, tol=1e-10, explicit_residuals=True)
    assert explicit.residual_kind == "explicit" and explicit.num_matvecs == implicit.num_matvecs + 2
    torch.testing.assert_close(explicit.residuals, explicit_residuals(dense, explicit), rtol=1e-6, atol=1e-15)


@pytest.mark.parametrize("reuse", ["graph", "linearized", "none"])
def test_sharpness_end_to_end(mlp_problem, reuse):
    model, X, y, _, ref, _ = mlp_problem
    res = sharpness(model, "ce", X, y, k=2, tol=1e-10, chunk_size=11, reuse=reuse)
    torch.testing.assert_close(res.values, ref.flip(0)[:2], rtol=EIG_RTOL, atol=0.0)
    assert "all converged" in repr(res)


def test_near_degenerate_top_pair_is_resolved():
    # relative gap 1e-6 between λ1 and λ2, the rest well below: power iteration cannot tell them apart
    lam = torch.cat([f64([1.0, 1.0 - 1e-6]), torch.linspace(-0.3, 0.9, 398, dtype=torch.float64)])
    A = synthetic(lam)
    res = lanczos_eigenpairs(A, k=2, tol=1e-12)
    assert res.all_converged and res.num_matvecs < 200  # resolved long before the Krylov space fills
    torch.testing.assert_close(res.values, lam[:2], rtol=EIG_RTOL, atol=0.0)
    assert float(res.values[0] - res.values[1]) == pytest.approx(1e-6, rel=1e-4)
    assert (explicit_residuals(A, res) <= 1e-11).all()
    baseline = power_iteration(A)
    assert abs(float(baseline.values[0]) - 1.0) > 1e-8  # the baseline stops long before that


def test_multiple_eigenvalue_is_found_twice():
    # a double top eigenvalue: single-vector Lanczos sees one copy until the Krylov space is
    # exhausted, then restarts from a fresh vector and finds the second
    lam = torch.cat([f64([2.0, 2.0]), torch.linspace(-1.0, 1.0, 28, dtype=torch.float64)])
    res = lanczos_eigenpairs(synthetic(lam, seed=3), k=3, tol=1e-10)
    torch.testing.assert_close(res.values, f64([2.0, 2.0, 1.0]), rtol=1e-10, atol=0.0)
    V = res.vectors
    torch.testing.assert_close(V.T @ V, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-8)


def test_gap_criterion_needs_fewer_products_for_the_same_accuracy():
    lam = torch.cat([f64([1.0, 0.83]), 0.8 * torch.rand(298, generator=seeded(1), dtype=torch.float64)])
    A = synthetic(lam)
    certified = lanczos_eigenpairs(A, tol=1e-8)
    fast = lanczos_eigenpairs(A, tol=1e-8, criterion="gap")
    assert fast.num_matvecs < certified.num_matvecs
    for res in (certified, fast):
        assert res.all_converged and abs(float(res.values[0]) - 1.0) <= 1e-8
    assert float(fast.error_bounds[0]) <= 1e-8 < float(fast.residuals[0])


def test_warm_start_from_the_previous_vector():
    lam = torch.cat([f64([1.0, 0.83]), torch.linspace(-0.2, 0.8, 198, dtype=torch.float64)])
    A = synthetic(lam)
    cold = lanczos_eigenpairs(A, tol=1e-8)
    exact = lanczos_eigenpairs(A, tol=1e-8, v0=cold.vectors[:, 0])  # already an eigenvector
    assert exact.num_matvecs <= 2 and exact.all_converged
    nearby = cold.vectors[:, 0] + 1e-3 * torch.randn(200, generator=seeded(2), dtype=torch.float64)
    warm = lanczos_eigenpairs(A, tol=1e-8, v0=nearby)
    assert warm.all_converged and warm.num_matvecs < cold.num_matvecs
    assert abs(float(warm.values[0]) - 1.0) <= 1e-8
    with_matrix = lanczos_eigenpairs(A, k=2, tol=1e-8, v0=lanczos_eigenpairs(A, k=2, tol=1e-8).vectors)  # (D, k)
    assert with_matrix.all_converged and with_matrix.num_matvecs <= 4


def test_unconverged_estimate_says_so():
    A = synthetic(torch.linspace(0.0, 1.0, 100, dtype=torch.float64))  # tiny gaps: slow convergence
    res = lanczos_eigenpairs(A, tol=1e-12, max_matvecs=5)
    assert not res.all_converged and not bool(res.converged[0]) and res.num_matvecs == 5
    assert "NOT CONVERGED" in repr(res) and "NOT converged" in repr(res)


def test_power_iteration_baseline():
    lam = torch.cat([f64([1.0, 0.5]), torch.linspace(-0.3, 0.4, 48, dtype=torch.float64)])
    res = power_iteration(synthetic(lam))
    assert res.method == "power" and res.which == "LM" and res.all_converged
    assert 2 <= res.num_matvecs < 100
    assert float(res.values[0]) == pytest.approx(1.0, rel=1e-3)
    capped = power_iteration(synthetic(torch.linspace(0.0, 1.0, 50, dtype=torch.float64)), max_iter=4, tol=1e-12)
    assert capped.num_matvecs == 4 and not capped.all_converged


def test_float32_operator_keeps_its_dtype():
    A = synthetic(torch.linspace(-1.0, 2.0, 40, dtype=torch.float64)).float()
    res = lanczos_eigenpairs(A, tol=1e-4)
    assert res.vectors.dtype == torch.float32 and res.values.dtype == torch.float64
    assert float(res.values[0]) == pytest.approx(2.0, rel=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=12), "only 11 dimensions"),
        (dict(k=0), "positive integer"),
        (dict(which="BE"), "unknown which"),
        (dict(tol=0.0), "tol must be positive"),
        (dict(criterion="eyeball"), "unknown criterion"),
        (dict(k=3, max_matvecs=2), "max_matvecs must be ≥ k"),
        (dict(v0=torch.zeros(11, dtype=torch.float64)), "nonzero"),
        (dict(v0=torch.ones(5, dtype=torch.float64)), "v0 must have shape"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lanczos_eigenpairs(torch.eye(11, dtype=torch.float64), **kwargs)


def test_k_larger_than_the_parameter_count():
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False).double()
    X, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    with pytest.raises(ValueError, match="parameters"):
        sharpness(model, "square", X, y, k=4)
    assert sharpness(model, "square", X, y, k=3).all_converged  # k = D: the whole spectrum

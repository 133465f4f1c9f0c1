"""Explicit Hessian and spectrum counts; stochastic trace and density estimators vs exact values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from implicitlab.diagnostics.determinism import NondeterministicHessianError
from implicitlab.diagnostics.hessian import HessianOperator
from implicitlab.diagnostics.spectrum import (
    explicit_hessian,
    hessian_spectrum,
    hutchinson_trace,
    hutchpp_trace,
    slq_spectral_density,
    spectrum_counts,
)


def small_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Conv2d(2, 2, 3, stride=2), nn.Flatten(), nn.Linear(8, 3)
    )
    return model, torch.randn(12, 1, 6, 6), torch.randint(0, 3, (12,))


def reference_hessian(model, X, y):
    named = list(model.named_parameters())
    sizes, shapes = [p.numel() for _, p in named], [p.shape for _, p in named]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def f(theta):
        params = {n: t.view(s) for (n, _), t, s in zip(named, torch.split(theta, sizes), shapes)}
        return F.cross_entropy(functional_call(model, params, (X,)), y)

    return torch.func.hessian(f)(flat)


def test_explicit_hessian_is_float64_and_matches_reference():
    model, X, y = small_cnn()  # a float32 model: the explicit Hessian is still float64
    H = explicit_hessian(model, "ce", X, y, chunk_size=5)
    assert H.dtype == torch.float64 and next(model.parameters()).dtype == torch.float32
    model64 = model.double()
    ref = reference_hessian(model64, X.double(), y)
    torch.testing.assert_close(H, ref, rtol=1e-10, atol=1e-13)
    op = HessianOperator(model64, "ce", X, y)  # and the matrix-free operator agrees
    torch.testing.assert_close(op @ torch.eye(op.dim, dtype=torch.float64), H, rtol=1e-10, atol=1e-13)


def test_explicit_hessian_refuses_train_mode_dropout():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.Linear(4, 1))
    with pytest.raises(NondeterministicHessianError, match="train mode"):
        explicit_hessian(model, "square", torch.randn(5, 3), torch.randn(5), mode="model")


def test_spectrum_and_counts():
    lam = torch.tensor([-1.0, 0.0, 3e-13, -2e-13, 2.0, 2.0 + 1e-12, 3.0, 3.0], dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    spec = hessian_spectrum(Q @ torch.diag(lam) @ Q.T)
    torch.testing.assert_close(spec, lam.sort().values, rtol=0, atol=1e-14)
    counts = spectrum_counts(spec, rtol=1e-9)
    assert (counts.zero, counts.negative, counts.positive, counts.distinct_nonzero) == (3, 1, 4, 3)
    assert counts.scale == pytest.approx(3.0)
    assert spectrum_counts(spec, rtol=0.4).zero == 4  # |−1| ≤ 0.4·3 counts as zero at that tolerance
    with pytest.raises(ValueError, match="no eigenvalues"):
        spectrum_counts(torch.zeros(0))


def test_spectrum_falls_back_to_syev_where_eigvalsh_fails(monkeypatch):
    """syevd (eigvalsh) can fail to converge on very degenerate matrices; syev then gives the values."""
    lam = torch.cat([torch.zeros(40, dtype=torch.float64), torch.tensor([-0.5, 1.0, 1.0, 3.0], dtype=torch.float64)])
    Q, _ = torch.linalg.qr(torch.randn(44, 44, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    H = Q @ torch.diag(lam) @ Q.T
    direct = hessian_spectrum(H)

    def fails(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge (simulated)")

    monkeypatch.setattr(torch.linalg, "eigvalsh", fails)
    fallback = hessian_spectrum(H)
    assert fallback.dtype == torch.float64 and fallback.shape == (44,)
    torch.testing.assert_close(fallback, lam.sort().values, rtol=0, atol=1e-13)
    torch.testing.assert_close(fallback, direct, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="square matrix"):
        hessian_spectrum(torch.zeros(2, 3))


def test_counts_of_a_rank_one_minimizer_hessian():
    # d = 1 deep linear net at a balanced minimizer: the Hessian is 2σ∇p∇pᵀ, rank one
    L = 4
    model = nn.Sequential(*[nn.Linear(1, 1, bias=False) for _ in range(L)]).double()
    X = torch.tensor([[1.0], [2.0], [-1.5]], dtype=torch.float64)
    y = 0.7 * X[:, 0]
    with torch.no_grad():
        for layer in model:
            layer.weight.fill_(0.7 ** (1 / L))
    counts = spectrum_counts(hessian_spectrum(explicit_hessian(model, "square", X, y)))
    assert (counts.zero, counts.negative, counts.positive, counts.distinct_nonzero) == (L - 1, 0, 1, 1)


def psd_with_decay(D: int = 60, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    lam = 10.0 * 0.8 ** torch.arange(D, dtype=torch.float64) - 0.05  # decaying, a few negative
    return Q @ torch.diag(lam) @ Q.T


def test_hutchinson_converges_within_its_error_bar():
    A = psd_with_decay()
    exact = float(torch.trace(A))
    small, large = hutchinson_trace(A, num_matvecs=50), hutchinson_trace(A, num_matvecs=2000)
    assert large.num_matvecs == 2000 and large.stderr < small.stderr / 4  # ~1/√m
    for est in (small, large):
        assert abs(est.value - exact) <= 4 * est.stderr


def test_hutchpp_beats_hutchinson_on_a_decaying_spectrum():
    A = psd_with_decay()
    exact = float(torch.trace(A))
    plain, plus = hutchinson_trace(A, num_matvecs=60, seed=1), hutchpp_trace(A, num_matvecs=60, seed=1)
    assert plus.num_matvecs == 60 and plus.method == "hutch++"
    assert abs(plus.value - exact) <= 4 * plus.stderr
    assert abs(plus.value - exact) < abs(plain.value - exact) and plus.stderr < plain.stderr / 10
    with pytest.raises(ValueError, match="≥ 3"):
        hutchpp_trace(A, num_matvecs=2)


def test_slq_moments_converge_to_the_exact_ones():
    A = psd_with_decay(D=80)
    lam = torch.linalg.eigvalsh(A)
    density = slq_spectral_density(A, num_probes=200, num_steps=12, seed=0)
    assert density.num_matvecs == 200 * 12 and density.nodes.shape == (200, 12)
    torch.testing.assert_close(density.weights.sum(1), torch.ones(200, dtype=torch.float64))
    for p in (1, 2, 3):  # Gauss quadrature is exact to degree 23: only the probe noise remains
        est, err = density.moment(p)
        assert abs(est - float((lam**p).mean())) <= 4 * err, p
    trace, err = density.trace()
    assert abs(trace - float(lam.sum())) <= 4 * err
    grid = torch.linspace(-2.0, 12.0, 3001, dtype=torch.float64)
    mass = torch.trapezoid(density.density(grid, sigma=0.1), grid)
    assert float(mass) == pytest.approx(1.0, abs=1e-3)


def test_estimators_on_a_hessian_operator_with_an_exhausted_krylov_space():
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False).double()
    X, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    H = HessianOperator(model, "square", X, y)
    lam = torch.linalg.eigvalsh(2 * X.T @ X / 10)
    exact = float(lam.sum())
    assert hutchpp_trace(H, num_matvecs=9).value == pytest.approx(exact, rel=1e-10)  # s = 3 = D: Q spans everything
    plain = hutchinson_trace(H, num_matvecs=20)
    assert abs(plain.value - exact) <= 4 * plain.stderr
    density = slq_spectral_density(H, num_probes=3, num_steps=10)  # D = 3: quadrature exact
    assert density.nodes.shape == (3, 3)
    for p in range(6):  # degree ≤ 2·3 − 1: per-probe exact, so only the Rademacher noise remains
        est, err = density.moment(p)
        assert abs(est - float((lam**p).mean())) <= 4 * err + 1e-12


def test_slq_quadrature_is_exact_to_degree_2m_minus_1():
    # for a diagonal A and a Rademacher probe, qᵀA^p q = tr(A^p)/D exactly: no probe noise, so
    # the m-node Gauss rule must reproduce the moments of degree ≤ 2m − 1 to rounding
    lam = torch.linspace(-1.0, 2.0, 50, dtype=torch.float64)
    density = slq_spectral_density(torch.diag(lam), num_probes=2, num_steps=6)
    for p in range(12):
        est, _ = density.moment(p)
        assert est == pytest.approx(float((lam**p).mean()), rel=1e-10, abs=1e-12), p
    est, _ = density.moment(16)  # beyond the exact degree: an approximation only
    assert est != pytest.approx(float((lam**16).mean()), rel=1e-6)


# ------------------------------------------------------------- estimators on a model ---
def tiny_problem():
    """A float64 tanh MLP, D = 21, on 10 square-loss examples; its exact Hessian and spectrum."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    X, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    H = explicit_hessian(model, "square", X, y)
    return model, X, y, H, torch.linalg.eigvalsh(H)


def test_hutchinson_on_a_model_is_the_operator_estimate_and_converges_to_the_exact_trace():
    model, X, y, H, _ = tiny_problem()
    before = [p.detach().clone() for p in model.parameters()]
    est = hutchinson_trace(model, "square", X, y, num_matvecs=400, seed=3, chunk_size=4)
    op = HessianOperator(model, "square", X, y, chunk_size=4, seed=3)
    assert est == hutchinson_trace(op, num_matvecs=400, seed=3)  # the same operator, the same probes
    assert est.num_matvecs == 400 and est.method == "hutchinson"
    assert abs(est.value - float(torch.trace(H))) <= 4 * est.stderr
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))  # the model is left as it was


def test_hutchpp_on_a_model_is_exact_when_the_sketch_spans_everything():
    model, X, y, H, _ = tiny_problem()
    exact = float(torch.trace(H))
    assert hutchpp_trace(model, "square", X, y, num_matvecs=63).value == pytest.approx(exact, rel=1e-10)  # s = 21 = D
    mean_square = lambda out, target: (out.reshape(-1) - target).square().mean()  # a callable loss: the batch mean
    assert hutchpp_trace(model, mean_square, X, y, num_matvecs=63).value == pytest.approx(exact, rel=1e-10)
    summed = hutchpp_trace(model, "square", X, y, num_matvecs=63, reduction="sum")
    assert summed.value == pytest.approx(10 * exact, rel=1e-10)


def test_slq_on_a_model_matches_the_explicit_spectrum():
    model, X, y, _, lam = tiny_problem()
    density = slq_spectral_density(model, "square", X, y, num_probes=20, num_steps=30, seed=1)
    assert density.dim == 21 and density.nodes.shape == (20, 21)  # m = min(num_steps, D)
    for p in range(5):  # 21 Gauss nodes: exact per probe to degree 41, only the Rademacher noise remains
        est, err = density.moment(p)
        assert abs(est - float((lam**p).mean())) <= 4 * err + 1e-12, p
    op = HessianOperator(model, "square", X, y, seed=1)
    again = slq_spectral_density(op, num_probes=20, num_steps=30, seed=1)
    assert torch.equal(density.nodes, again.nodes) and torch.equal(density.weights, again.weights)


def test_estimators_refuse_mixed_calling_conventions():
    model, X, y, H, _ = tiny_problem()
    with pytest.raises(TypeError, match="needs a loss and data"):
        hutchinson_trace(model, num_matvecs=5)
    with pytest.raises(TypeError, match="go with a model"):
        hutchpp_trace(H, "square", X, y, num_matvecs=6)
    with pytest.raises(TypeError, match="num_matvecs"):
        hutchinson_trace(H, 5)  # num_matvecs is keyword-only
    with pytest.raises(TypeError, match="go with a model"):
        slq_spectral_density(H, 5)

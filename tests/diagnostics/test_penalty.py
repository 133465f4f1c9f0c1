"""penalty=: a callable of the parameter dict added once to the full-data objective, against
torch.func.hessian of the whole objective written out by hand (float64, a model with biases)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from implicitlab.diagnostics import (
    HessianOperator,
    SharpnessTracker,
    explicit_hessian,
    hutchpp_trace,
    sharpness,
    slq_spectral_density,
)

RTOL = 1e-10  # float64 products vs the dense reference: exact up to rounding
WD = 0.3


def problem(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()  # biases: D = 31
    X, y = torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 3, (30,))
    return model, X, y


def weight_decay(p):
    return WD * sum((w**2).sum() for w in p.values())


def quartic(p):  # not quadratic: its Hessian depends on θ; reads one parameter by name
    return 0.1 * (p["0.weight"] ** 4).sum() + 0.05 * (p["2.bias"] ** 2).sum()


def dense_objective_hessian(model, X, y, penalty) -> torch.Tensor:
    """torch.func.hessian of mean CE + penalty over all parameters, in one piece (no chunks)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(theta):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        return F.cross_entropy(functional_call(model, params, (X,)), y) + penalty(params)

    return torch.func.hessian(f)(flat)


def close(actual, expected, rtol=RTOL):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * float(expected.abs().max()))


@pytest.mark.parametrize("penalty", [weight_decay, quartic], ids=["weight_decay", "quartic"])
@pytest.mark.parametrize("reuse", ["none", "graph", "linearized"])
@pytest.mark.parametrize("chunk_size", [7, 30])
def test_operator_counts_the_penalty_once(penalty, reuse, chunk_size):
    model, X, y = problem()
    ref = dense_objective_hessian(model, X, y, penalty)
    H = HessianOperator(model, "ce", X, y, penalty=penalty, chunk_size=chunk_size, reuse=reuse)
    close(H @ torch.eye(H.dim, dtype=torch.float64), ref)
    close(H @ torch.eye(H.dim, dtype=torch.float64)[:, 0], ref[:, 0])  # one vector: same
    close(explicit_hessian(model, "ce", X, y, penalty=penalty, chunk_size=chunk_size), ref)


def test_penalty_with_sum_reduction_is_added_once_to_the_sum():
    model, X, y = problem()
    names = [n for n, _ in model.named_parameters()]
    ref = dense_objective_hessian(model, X, y, lambda p: quartic(p) / len(X)) * len(X)  # Σℓ + P
    H = HessianOperator(model, "ce", X, y, penalty=quartic, reduction="sum", chunk_size=8)
    close(H @ torch.eye(H.dim, dtype=torch.float64), ref)
    assert len(names) == 4


def test_sharpness_tracker_and_spectra_see_the_penalty():
    model, X, y = problem(1)
    ref = dense_objective_hessian(model, X, y, weight_decay)
    eig = torch.linalg.eigvalsh(ref)
    res = sharpness(model, "ce", X, y, penalty=weight_decay, chunk_size=11, tol=1e-10)
    assert res.all_converged
    torch.testing.assert_close(res.values[0], eig[-1], rtol=1e-9, atol=0.0)
    tracker = SharpnessTracker(model, "ce", X, y, penalty=weight_decay, tol=1e-8)
    torch.testing.assert_close(tracker().values[0], eig[-1], rtol=3e-8, atol=0.0)
    # Hutch++ with s ≥ D sketch probes is exact: the trace of the full objective's Hessian
    est = hutchpp_trace(model, "ce", X, y, num_matvecs=3 * ref.shape[0], penalty=weight_decay)
    assert abs(est.value - float(torch.trace(ref))) <= 1e-9 * float(ref.abs().sum())
    # SLQ with D steps: a probe's Krylov space is all of R^D, its Gauss nodes are H's eigenvalues
    slq = slq_spectral_density(model, "ce", X, y, num_probes=1, num_steps=ref.shape[0], penalty=weight_decay)
    assert abs(float(slq.nodes[0].max()) - float(eig[-1])) <= 1e-8 * float(eig[-1])
    assert abs(float(slq.nodes[0][slq.weights[0] > 0].min()) - float(eig[0])) <= 1e-8 * float(eig[-1])


def test_loss_and_gradient_include_the_penalty():
    model, X, y = problem(2)
    H = HessianOperator(model, "ce", X, y, penalty=quartic, chunk_size=9)
    value, g = H.loss_and_gradient()
    model.zero_grad()
    total = F.cross_entropy(model(X), y) + quartic(dict(model.named_parameters()))
    total.backward()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert abs(value - float(total.detach())) <= 1e-12 * abs(float(total.detach()))
    close(g, expected, rtol=1e-12)


def test_penalty_sees_every_parameter_under_a_filter():
    """params= selects the variables; the penalty still gets the whole dict (fixed ones as constants)."""
    model, X, y = problem(3)
    seen = []

    def penalty(p):
        seen.append(sorted(p))
        return weight_decay(p)

    H = HessianOperator(model, "ce", X, y, params=["2.weight"], penalty=penalty, check_determinism=False)
    assert seen[0] == ["0.bias", "0.weight", "2.bias", "2.weight"]
    full = dense_objective_hessian(model, X, y, weight_decay)
    block = slice(4 * 3 + 4, 4 * 3 + 4 + 12)  # 2.weight follows 0.weight (12) and 0.bias (4)
    close(H @ torch.eye(H.dim, dtype=torch.float64), full[block, block])


def test_bad_penalties_are_refused_before_any_product():
    model, X, y = problem()
    with pytest.raises(ValueError, match="penalty must return a finite scalar"):
        HessianOperator(model, "ce", X, y, penalty=lambda p: p["0.weight"] ** 2)
    with pytest.raises(ValueError, match="penalty must return a finite scalar"):
        HessianOperator(model, "ce", X, y, penalty=lambda p: p["0.weight"].sum() * float("nan"))
    with pytest.raises(TypeError, match="penalty must be a callable"):
        HessianOperator(model, "ce", X, y, penalty=0.1)

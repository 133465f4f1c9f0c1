"""params=: the Hessian block of a parameter subset (names or a predicate), the others held
fixed, against the sub-block of the explicit float64 Hessian of all parameters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hessian_problems import dense_hessian
from implicitlab.diagnostics import HessianOperator, explicit_hessian, hutchinson_trace, sharpness

RTOL = 1e-10  # float64 products vs the dense reference: exact up to rounding


def problem(seed: int = 0):
    torch.manual_seed(seed)
    # named_parameters order: 0.weight (15), 0.bias (5), 2.weight (10), 2.bias (2): D = 32
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    X, y = torch.randn(24, 3, dtype=torch.float64), torch.randint(0, 2, (24,))
    return model, X, y


OFFSETS = {"0.weight": (0, 15), "0.bias": (15, 20), "2.weight": (20, 30), "2.bias": (30, 32)}


def block(H: torch.Tensor, names) -> torch.Tensor:
    idx = torch.cat([torch.arange(*OFFSETS[n]) for n in names])
    return H[idx][:, idx]


def close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * float(expected.abs().max()))


@pytest.mark.parametrize(
    "params, names",
    [
        (["2.weight", "2.bias"], ["2.weight", "2.bias"]),
        (["2.bias", "0.weight"], ["0.weight", "2.bias"]),  # any order in: named_parameters order out
        (lambda n, p: n.endswith("bias"), ["0.bias", "2.bias"]),
        (lambda n, p: p.ndim == 2, ["0.weight", "2.weight"]),
    ],
    ids=["last-layer", "unordered-names", "biases", "matrices"],
)
@pytest.mark.parametrize("reuse", ["graph", "linearized"])
def test_operator_is_the_block_of_the_selected_parameters(params, names, reuse):
    model, X, y = problem()
    full = dense_hessian(model, F.cross_entropy, X, y)
    H = HessianOperator(model, "ce", X, y, params=params, chunk_size=10, reuse=reuse)
    assert H.names == names and H.dim == sum(b - a for a, b in (OFFSETS[n] for n in names))
    close(H @ torch.eye(H.dim, dtype=torch.float64), block(full, names))
    close(explicit_hessian(model, "ce", X, y, params=params), block(full, names))
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen by hand, nothing left frozen


def test_sharpness_and_trace_of_a_block():
    model, X, y = problem(1)
    sub = block(dense_hessian(model, F.cross_entropy, X, y), ["0.weight"])
    res = sharpness(model, "ce", X, y, params=["0.weight"], tol=1e-10)
    torch.testing.assert_close(res.values[0], torch.linalg.eigvalsh(sub)[-1], rtol=1e-9, atol=0.0)
    assert res.vectors.shape == (15, 1)
    est = hutchinson_trace(model, "ce", X, y, params=lambda n, p: n == "0.weight", num_matvecs=4)
    assert est.num_matvecs == 4 and abs(est.value - float(torch.trace(sub))) < 10 * est.stderr + 1e-12


@pytest.mark.parametrize(
    "params, match",
    [
        (["2.weight", "3.weight"], r"names no parameter of the model: \['3.weight'\]"),
        ([], "params is empty"),
        (lambda n, p: False, "predicate selected no trainable parameter"),
        ("2.weight", "a list of names or a predicate"),
    ],
)
def test_bad_filters_are_refused(params, match):
    model, X, y = problem()
    with pytest.raises((ValueError, TypeError), match=match):
        HessianOperator(model, "ce", X, y, params=params)


def test_a_frozen_name_is_refused():
    model, X, y = problem()
    model[0].bias.requires_grad_(False)
    with pytest.raises(ValueError, match=r"frozen parameters \(requires_grad=False\): \['0.bias'\]"):
        HessianOperator(model, "ce", X, y, params=["0.bias"])


@pytest.mark.parametrize("reuse", ["none", "graph", "linearized"])
def test_products_carry_no_graph_to_the_held_parameters(reuse):
    model, X, y = problem(2)
    H = HessianOperator(model, "ce", X, y, params=["2.weight"], reuse=reuse)
    out = H @ torch.ones(H.dim, dtype=torch.float64)
    assert not out.requires_grad and all(p.grad is None for p in model.parameters())

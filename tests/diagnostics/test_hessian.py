"""HessianOperator: products against a dense torch.func.hessian reference (float64), the backends,
the scipy view, counts, and the operator's own bad input. (The data-set objective, the kept state
and the determinism probe have their own test modules.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hessian_problems import RTOL, as_matrix, cnn, deep_linear, dense_hessian, make_problem, mlp, reference_loss
from implicitlab.diagnostics.hessian import HessianOperator, hessian_vector_product


@pytest.mark.parametrize("reuse", ["graph", "linearized", "none"])
@pytest.mark.parametrize("arch", [mlp, cnn, deep_linear], ids=["mlp", "cnn", "deep_linear"])
@pytest.mark.parametrize("loss", ["square", "exp", "logistic", "ce"])
def test_products_match_dense_hessian(arch, loss, reuse):
    model, X, y = make_problem(arch, loss)
    H = HessianOperator(model, loss, X, y, chunk_size=7, reuse=reuse)  # chunks 7, 7, 6: weights matter
    ref = dense_hessian(model, reference_loss(loss), X, y)
    got = as_matrix(H)  # 32 columns per pass: batched (vmapped) products
    single = H @ torch.eye(H.dim, dtype=H.dtype)[:, 0]  # one column: the unbatched path
    assert got.dtype == torch.float64 and H.backend == "func"
    assert H.reuse_status == reuse and (H.graph_bytes > 0) == (reuse != "none")
    torch.testing.assert_close(got, ref, rtol=RTOL, atol=RTOL * float(ref.abs().max()))
    torch.testing.assert_close(single, ref[:, 0], rtol=RTOL, atol=RTOL * float(ref.abs().max()))


def test_double_backward_fallback_matches():
    model, X, y = make_problem(cnn, "ce")
    func = as_matrix(HessianOperator(model, "ce", X, y, backend="func"))
    auto = HessianOperator(model, "ce", X, y, backend="autograd")
    torch.testing.assert_close(as_matrix(auto), func, rtol=RTOL, atol=1e-14)
    assert auto.backend == "autograd"


def test_to_scipy_and_counts():
    model, X, y = make_problem(mlp, "square")
    H = HessianOperator(model, "square", X, y)
    assert H.num_matvecs == 2  # the determinism probe
    D = H.dim
    v = np.random.default_rng(0).standard_normal(D)
    op = H.to_scipy()
    assert op.shape == (D, D) and op.dtype == np.float64
    np.testing.assert_allclose(op.matvec(v), (H @ torch.from_numpy(v)).numpy(), rtol=1e-13)
    assert H.num_matvecs == 4
    H @ torch.zeros(D, 3, dtype=torch.float64)
    assert H.num_matvecs == 7


def test_operator_follows_the_model_as_it_trains():
    model, X, y = make_problem(mlp, "exp")
    H = HessianOperator(model, "exp", X, y)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.3)
    torch.testing.assert_close(as_matrix(H), dense_hessian(model, reference_loss("exp"), X, y), rtol=RTOL, atol=1e-12)


def test_float32_model_gives_float32_products_and_data_are_cast():
    model, X, y = make_problem(mlp, "square", dtype=torch.float32)
    H = HessianOperator(model, "square", X.double(), y.double())  # float64 data cast to the model's dtype
    out = H @ torch.ones(H.dim, dtype=torch.float64)
    assert H.dtype == torch.float32 and out.dtype == torch.float32
    ref = dense_hessian(model.double(), reference_loss("square"), X.double(), y.double()).sum(1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)  # float32 rounding


def test_one_shot_product():
    model, X, y = make_problem(deep_linear, "square")
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    expected = dense_hessian(model, reference_loss("square"), X, y) @ v
    torch.testing.assert_close(hessian_vector_product(model, "square", X, y, v), expected)


@pytest.mark.parametrize(
    "kwargs, match", [(dict(backend="jax"), "unknown backend"), (dict(reuse="everything"), "unknown reuse")]
)
def test_clear_errors(kwargs, match):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=match):
        HessianOperator(nn.Linear(3, 1), "square", torch.randn(4, 3), torch.randn(4), **kwargs)

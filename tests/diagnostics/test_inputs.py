"""Inputs: NaN/inf data, loaders that change between passes, one-shot generators and dict batches
are refused before any product with a message naming the cause; a batch adapter and lists of
batches give the dense float64 reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hessian_problems import dense_hessian
from implicitlab.diagnostics import HessianOperator, explicit_hessian, sharpness

RTOL = 1e-10  # float64 products vs the dense reference: exact up to rounding


def problem(n: int = 30, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    X, y = torch.randn(n, 3, dtype=torch.float64), torch.randint(0, 3, (n,))
    return model, X, y


class Counting(nn.Module):
    """Wraps a model and counts forward calls: a refusal must come before any product."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_nan_and_inf_in_the_data_are_refused_before_any_forward():
    model, X, y = problem()
    counting = Counting(model)
    X[17, 0] = X[20, 1] = X[25, 2] = float("nan")
    for build in (HessianOperator, explicit_hessian, sharpness):
        with pytest.raises(ValueError, match=r"^X contains 3 NaN values \(first at row 17\)$"):
            build(counting, "ce", X, y)
    assert counting.calls == 0
    Xs, ys = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    ys[4, 1] = float("inf")
    with pytest.raises(ValueError, match=r"^y contains 1 infinite value \(first at row 4\)$"):
        HessianOperator(counting, "square", Xs, ys)
    loader = [(X[:10], y[:10]), (X[10:20], y[10:20])]
    with pytest.raises(ValueError, match=r"^X of batch 1 of the loader contains 1 NaN value \(first at row 7\)$"):
        HessianOperator(counting, "ce", loader)
    assert counting.calls == 0


def test_loaders_that_change_between_passes_are_named():
    model, X, y = problem()
    data = TensorDataset(X, y)
    with pytest.raises(ValueError, match=r"DataLoader samples at random \(sampler RandomSampler, e.g. shuffle=True\)"):
        HessianOperator(model, "ce", DataLoader(data, batch_size=8, shuffle=True))
    with pytest.raises(ValueError, match=r"DataLoader drops its last 6 examples \(drop_last=True, batch_size=8, 30 examples\)"):
        HessianOperator(model, "ce", DataLoader(data, batch_size=8, drop_last=True))
    full = dense_hessian(model, F.cross_entropy, X, y)
    H = HessianOperator(model, "ce", DataLoader(data, batch_size=10, drop_last=True))  # nothing dropped
    torch.testing.assert_close(H @ torch.eye(H.dim, dtype=torch.float64), full, rtol=RTOL, atol=RTOL * float(full.abs().max()))


def test_a_generator_is_refused_as_not_re_iterable():
    model, X, y = problem()
    batches = ((X[i : i + 10], y[i : i + 10]) for i in range(0, 30, 10))
    with pytest.raises(TypeError, match=r"must be re-iterable \(a DataLoader, a list of \(X, y\) batches\): got a generator"):
        HessianOperator(model, "ce", batches)


def test_dict_batches_need_an_adapter_and_then_give_the_reference():
    model, X, y = problem()
    batches = [{"image": X[i : i + 7], "label": y[i : i + 7]} for i in range(0, 30, 7)]
    with pytest.raises(TypeError, match=r"dict batch \(keys \['image', 'label'\]\); pass an adapter, e\.g\. batch="):
        HessianOperator(model, "ce", batches)
    adapter = lambda b: (b["image"], b["label"])
    full = dense_hessian(model, F.cross_entropy, X, y)
    H = HessianOperator(model, "ce", batches, batch=adapter, chunk_size=5)
    assert H.num_examples == 30
    torch.testing.assert_close(H @ torch.eye(H.dim, dtype=torch.float64), full, rtol=RTOL, atol=RTOL * float(full.abs().max()))
    torch.testing.assert_close(explicit_hessian(model, "ce", batches, batch=adapter), full, rtol=RTOL, atol=RTOL * float(full.abs().max()))


def test_a_tuple_of_batches_is_batches_not_one_pair():
    model, X, y = problem()
    batches = tuple((X[i : i + 10], y[i : i + 10]) for i in range(0, 30, 10))
    full = dense_hessian(model, F.cross_entropy, X, y)
    H = HessianOperator(model, "ce", batches)
    assert H.num_examples == 30
    torch.testing.assert_close(H @ torch.eye(H.dim, dtype=torch.float64), full, rtol=RTOL, atol=RTOL * float(full.abs().max()))

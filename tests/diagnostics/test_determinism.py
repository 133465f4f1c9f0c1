"""The determinism probe: with mode="model" (the model's own mode), train-mode dropout and batch
norm are refused (buffers restored), eval mode passes; the probe itself on hand-made products.
(The default mode="eval" measures the eval objective whatever the model's mode: test_modes.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hessian_problems import as_matrix, dense_hessian, reference_loss
from implicitlab.diagnostics.determinism import (
    NondeterministicHessianError,
    check_determinism,
    suspects_in_train_mode,
)
from implicitlab.diagnostics.hessian import HessianOperator


def test_dropout_in_train_mode_fails_the_determinism_probe():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 1)).double()
    X, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    with pytest.raises(NondeterministicHessianError, match="train mode") as info:
        HessianOperator(model, "square", X, y, mode="model")  # the model's own (train) mode
    assert "Dropout" in str(info.value) and "model.eval()" in str(info.value)
    HessianOperator(model.eval(), "square", X, y)  # eval mode: one fixed operator


def test_batch_norm_in_train_mode_is_refused_and_buffers_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1)).double()
    X, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    before = {n: b.clone() for n, b in model.named_buffers()}
    with pytest.raises(NondeterministicHessianError, match="batch-norm"):
        HessianOperator(model, "square", X, y, mode="model")  # the model's own (train) mode
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), n
    H = HessianOperator(model.eval(), "square", X, y)
    torch.testing.assert_close(as_matrix(H), dense_hessian(model, reference_loss("square"), X, y.reshape(-1, 1)))


def test_probe_on_hand_made_products():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)).double().eval()
    A = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    kw = dict(dtype=torch.float64, device=torch.device("cpu"))
    check_determinism(lambda v: A @ v, model, 5, **kw)  # a fixed matrix passes
    noise = torch.Generator().manual_seed(0)
    noisy = lambda v: A @ v + 1e-6 * torch.randn(5, generator=noise, dtype=torch.float64)
    with pytest.raises(NondeterministicHessianError, match="determinism probe failed"):
        check_determinism(noisy, model, 5, **kw)
    check_determinism(noisy, model, 5, rtol=1e-3, **kw)  # within a looser tolerance
    with pytest.raises(ValueError, match="not finite"):
        check_determinism(lambda v: A @ v * float("inf"), model, 5, **kw)
    assert suspects_in_train_mode(model) == []
    assert suspects_in_train_mode(model.train()) == [("1", "Dropout")]

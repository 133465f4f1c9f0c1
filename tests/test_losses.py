"""Losses: values against closed forms, log-domain exactness far below float64 underflow."""

import math

import pytest
import torch

from implicitlab.losses import log_loss, log_softplus, loss, loss_terms, margins

F64 = torch.float64


def test_exp_log_loss_exact_at_margin_1000():
    # L = mean(e^{-1000}, e^{-1001}) underflows to 0 in float64; log L is exact.
    f = torch.tensor([[1000.0], [-1001.0]], dtype=F64)
    y = torch.tensor([1.0, -1.0], dtype=F64)
    assert loss("exp", f, y).item() == 0.0  # the hazard we guard against
    expected = -1000.0 + math.log1p(math.exp(-1.0)) - math.log(2.0)
    assert log_loss("exp", f, y).item() == pytest.approx(expected, rel=1e-15)


def test_logistic_log_loss_exact_at_margin_1000():
    f = torch.tensor([1000.0, 1002.0], dtype=F64)
    y = torch.tensor([1.0, 1.0], dtype=F64)
    # log softplus(-m) = -m - e^{-m}/2 + O(e^{-2m}) = -m to float64 precision here.
    expected = math.log(math.exp(-1000.0 + 1000) + math.exp(-1002.0 + 1000)) - 1000 - math.log(2)
    got = log_loss("logistic", f, y).item()
    assert math.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-15)


def test_log_softplus_matches_direct_formula_where_representable():
    z = torch.linspace(-40, 30, 701, dtype=F64)
    direct = torch.log(torch.log1p(torch.exp(z)))
    assert torch.allclose(log_softplus(z), direct, rtol=1e-13, atol=0)


def test_log_softplus_gradient_finite_at_minus_1000():
    z = torch.tensor([-1000.0, -30.0, 0.0], dtype=F64, requires_grad=True)
    log_softplus(z).sum().backward()
    assert torch.isfinite(z.grad).all()
    # d/dz log softplus(z) = σ(z)/softplus(z) → 1 as z → −∞
    assert z.grad[0].item() == pytest.approx(1.0, abs=1e-15)


def test_ce_matches_torch_and_log_domain():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(7, 4, generator=g, dtype=F64)
    y = torch.randint(0, 4, (7,), generator=g)
    ref = torch.nn.functional.cross_entropy(f, y)
    assert loss("ce", f, y).item() == pytest.approx(ref.item(), rel=1e-14)
    # at a margin of 1000 the log-domain value is −1000 + log(#other classes share)
    big = torch.zeros(1, 3, dtype=F64)
    big[0, 1] = 1000.0
    lab = torch.tensor([1])
    assert log_loss("ce", big, lab).item() == pytest.approx(-1000.0 + math.log(2.0), rel=1e-15)


def test_margins_binary_and_multiclass():
    f = torch.tensor([[2.0], [-3.0]], dtype=F64)
    assert margins(f, torch.tensor([1.0, 1.0], dtype=F64)).tolist() == [2.0, -3.0]
    logits = torch.tensor([[1.0, 5.0, 2.0]], dtype=F64)
    assert margins(logits, torch.tensor([1])).item() == 3.0


def test_square_mean_and_sum_conventions():
    f = torch.tensor([[1.0], [2.0], [4.0]], dtype=F64)
    y = torch.tensor([0.0, 2.0, 1.0], dtype=F64)
    assert loss("square", f, y).item() == pytest.approx((1 + 0 + 9) / 3)
    assert loss("square", f, y, reduction="sum").item() == pytest.approx(10.0)
    # vector targets: summed over outputs, averaged over examples
    F = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=F64)
    Y = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=F64)
    assert loss("square", F, Y).item() == pytest.approx((1 + 4 + 1 + 1) / 2)


def test_ensemble_shapes_reduce_per_run():
    f = torch.randn(3, 5, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    y = torch.ones(5, dtype=F64)
    assert loss_terms("exp", f, y).shape == (3, 5)
    assert log_loss("logistic", f, y).shape == (3,)


def test_unknown_loss_and_reduction():
    with pytest.raises(ValueError, match="unknown loss"):
        loss("hinge", torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        loss("exp", torch.zeros(2), torch.ones(2), reduction="max")


def test_softplus_gradient_is_sigmoid_including_zero():
    from implicitlab.losses import softplus

    z = torch.tensor([-800.0, -1.0, 0.0, 1.0, 25.0, 800.0], dtype=F64, requires_grad=True)
    softplus(z).sum().backward()
    assert torch.allclose(z.grad, torch.sigmoid(z.detach()), rtol=1e-15, atol=0)

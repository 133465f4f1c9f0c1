"""The data-set objective: loss conventions, chunking and loaders, reduction, the gradient, and bad
input (seen through the HessianOperator that uses it, and directly)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hessian_problems import RTOL, as_matrix, cnn, dense_hessian, make_problem, mlp, reference_loss
from implicitlab.diagnostics.hessian import HessianOperator
from implicitlab.diagnostics.objective import DatasetObjective, iterate_chunks, resolve_loss


def test_loader_and_chunking_give_the_same_operator():
    model, X, y = make_problem(mlp, "logistic", n=23)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=6)
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    whole = HessianOperator(model, "logistic", X, y, chunk_size=1000) @ v
    from_loader = HessianOperator(model, "logistic", loader, chunk_size=4) @ v  # batches split 4 + 2
    torch.testing.assert_close(from_loader, whole, rtol=RTOL, atol=1e-14)


def test_callable_loss_is_a_batch_mean_and_reduction_sum():
    model, X, y = make_problem(mlp, "ce")
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    named = HessianOperator(model, "ce", X, y, chunk_size=6) @ v
    torch.testing.assert_close(HessianOperator(model, F.cross_entropy, X, y, chunk_size=6) @ v, named)
    summed = HessianOperator(model, "ce", X, y, chunk_size=6, reduction="sum") @ v
    torch.testing.assert_close(summed, X.shape[0] * named)


def test_square_loss_convention_no_half_and_scalar_targets():
    # one output (n, 1) with targets (n,): R = mean (f − y)², Hessian 2/n XᵀX for a linear model
    torch.manual_seed(1)
    X, y = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    torch.testing.assert_close(as_matrix(HessianOperator(model, "square", X, y)), 2 * X.T @ X / 9)
    with pytest.raises(ValueError, match="as many targets as outputs"):
        HessianOperator(nn.Linear(3, 2, bias=False).double(), "square", X, y)


def test_gradient_matches_autograd():
    model, X, y = make_problem(cnn, "logistic")
    H = HessianOperator(model, "logistic", X, y, chunk_size=3)
    value, g = H.loss_and_gradient()
    model.zero_grad()
    ref = reference_loss("logistic")(model(X), y)
    ref.backward()
    torch.testing.assert_close(g, torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert value == pytest.approx(float(ref.detach()), rel=1e-12)


def test_chunks_are_balanced_and_cast():
    X = torch.zeros(1000, 2, dtype=torch.float64)
    y = torch.arange(1000)
    chunks = list(iterate_chunks((X, y), 256, torch.device("cpu"), torch.float32))
    assert [int(Xc.shape[0]) for Xc, _ in chunks] == [250] * 4  # not 3 × 256 + 232: one shape, one trace
    assert all(Xc.dtype == torch.float32 and yc.dtype == torch.int64 for Xc, yc in chunks)  # labels stay integers
    assert torch.equal(torch.cat([yc for _, yc in chunks]), y)


@pytest.mark.parametrize("name", ["square", "exp", "logistic", "ce"])
def test_named_losses_are_the_written_out_conventions(name):
    model, X, y = make_problem(mlp, name)
    out = model(X)
    torch.testing.assert_close(resolve_loss(name)(out, y), reference_loss(name)(out, y), rtol=1e-14, atol=0)


def test_objective_reads_the_models_current_parameters():
    model, X, y = make_problem(mlp, "square")
    objective = DatasetObjective(model, "square", X, y, chunk_size=6)
    assert objective.dim == sum(p.numel() for p in model.parameters()) and objective.num_examples == 20
    with torch.no_grad():
        model[0].weight.mul_(2.0)
        expected = float(reference_loss("square")(model(X), y))
    value, _ = objective.loss_and_gradient()
    assert value == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------------ bad input ---
def test_parameters_on_two_dtypes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3).double(), nn.Linear(3, 1).float())
    with pytest.raises(ValueError, match="several dtypes"):
        HessianOperator(model, "square", torch.randn(4, 3), torch.randn(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_parameters_on_two_devices():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1).cuda())
    with pytest.raises(ValueError, match="devices"):
        HessianOperator(model, "square", torch.randn(4, 3), torch.randn(4))


def test_empty_data_set():
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    with pytest.raises(ValueError, match="empty"):
        HessianOperator(model, "square", torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, dtype=torch.float64))
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, dtype=torch.float64))
    with pytest.raises(ValueError, match="empty"):
        HessianOperator(model, "square", torch.utils.data.DataLoader(empty, batch_size=4))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(loss="hinge"), "unknown loss"),
        (dict(loss="exp", out=2, y=torch.tensor([1.0, -1.0, 1.0, -1.0])), "one output per example"),
        (dict(y=torch.zeros(5)), "same number of examples"),
        (dict(y=None), "y is required"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(reduction="max"), "unknown reduction"),
    ],
)
def test_clear_errors(kwargs, match):
    torch.manual_seed(0)
    loss, out = kwargs.pop("loss", "square"), kwargs.pop("out", 1)
    y = kwargs.pop("y", torch.randn(4))
    with pytest.raises(ValueError, match=match):
        HessianOperator(nn.Linear(3, out), loss, torch.randn(4, 3), y, **kwargs)


def test_no_trainable_parameters():
    torch.manual_seed(0)
    model = nn.Linear(3, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        HessianOperator(model, "square", torch.randn(4, 3), torch.randn(4))


def test_loader_must_yield_pairs():
    torch.manual_seed(0)
    X, y = torch.randn(4, 3), torch.randn(4)
    with pytest.raises(TypeError, match=r"\(X, y\) pairs"):
        HessianOperator(nn.Linear(3, 1), "square", [(X, y, X)])


# ----------------------------------------------------------------- loss callables' reduction ---
def sum_ce(outputs, targets):
    return F.cross_entropy(outputs, targets, reduction="sum")


def biased_problem(n: int = 40, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()  # biases
    return model, torch.randn(n, 4, dtype=torch.float64), torch.randint(0, 3, (n,))


@pytest.mark.parametrize("chunk_size", [7, 13, 40])
def test_a_summing_loss_callable_gives_the_sum_objective_at_every_chunk_size(chunk_size):
    """Before: 131.6, 65.8, 263.2 for three chunk sizes; now the full-batch sum at each."""
    model, X, y = biased_problem()
    ref = dense_hessian(model, sum_ce, X, y)  # ∇² Σ_n ℓ_n, in one piece
    H = HessianOperator(model, sum_ce, X, y, chunk_size=chunk_size)
    assert H.reduction == "sum" and H.objective.loss_reduction == "sum"
    torch.testing.assert_close(as_matrix(H), ref, rtol=RTOL, atol=RTOL * float(ref.abs().max()))
    value, g = H.loss_and_gradient()
    assert abs(value - float(sum_ce(model(X), y).detach())) <= 1e-12 * value
    # an explicit reduction that agrees is accepted; the mean callable keeps the mean objective
    HessianOperator(model, sum_ce, X, y, chunk_size=chunk_size, reduction="sum", check_determinism=False)
    mean = HessianOperator(model, F.cross_entropy, X, y, chunk_size=chunk_size)
    assert mean.reduction == "mean"
    torch.testing.assert_close(as_matrix(mean), ref / len(X), rtol=RTOL, atol=RTOL * float(ref.abs().max()) / len(X))


def test_a_summing_loss_that_is_zero_on_the_data_is_still_recognised():
    """Square loss at an exact fit: 0 on every split; the shifted outputs tell sum from mean."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    X = torch.randn(10, 3, dtype=torch.float64)
    y = model(X).detach()
    sq_sum = lambda f, t: ((f - t) ** 2).sum()
    H = HessianOperator(model, sq_sum, X, y, chunk_size=4)
    assert H.reduction == "sum"
    ref = dense_hessian(model, sq_sum, X, y)  # 2 Σ x xᵀ ⊗ I
    torch.testing.assert_close(as_matrix(H), ref, rtol=RTOL, atol=RTOL * float(ref.abs().max()))


@pytest.mark.parametrize(
    "loss",
    [
        lambda f, t: F.cross_entropy(f, t) ** 2,
        lambda f, t: F.cross_entropy(f, t, reduction="none").max(),
        lambda f, t: F.cross_entropy(f, t, reduction="sum") / f.shape[0] ** 0.5,
    ],
    ids=["squared-mean", "max", "sum-over-sqrt-n"],
)
def test_a_loss_callable_that_is_neither_sum_nor_mean_is_refused(loss):
    model, X, y = biased_problem()
    counting = []
    model.register_forward_hook(lambda *a: counting.append(1))
    with pytest.raises(ValueError, match=r"^loss callable is neither a sum nor a mean over the batch: on 40 examples"):
        HessianOperator(model, loss, X, y, chunk_size=40)
    assert len(counting) == 1  # one forward of the first chunk, no product


def test_a_loss_callable_that_disagrees_with_reduction_is_refused():
    model, X, y = biased_problem()
    with pytest.raises(ValueError, match=r"loss callable is a sum over the batch but reduction='mean' was asked"):
        HessianOperator(model, sum_ce, X, y, reduction="mean")
    with pytest.raises(ValueError, match=r"loss callable is a mean over the batch but reduction='sum' was asked"):
        HessianOperator(model, F.cross_entropy, X, y, reduction="sum")
    with pytest.raises(ValueError, match=r"must return a scalar .*got \(40,\)"):
        HessianOperator(model, lambda f, t: F.cross_entropy(f, t, reduction="none"), X, y)

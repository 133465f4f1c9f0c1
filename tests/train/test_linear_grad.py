"""Closed-form gradients of linear chains against autograd, in float64.

The reference is autograd through the explicit chain F = X W_1ᵀ ⋯ W_Lᵀ [headᵀ] and the package's
loss (or log-loss, for normalized GD), one graph per call, summed over runs (the runs share no
parameter, so each run gets its own gradient). Every loss, depth 1…4, mean and sum, plain and
normalized, and each of the three paths of :func:`linear_chain_gradients` (outputs, square-loss
sufficient statistics, pre-multiplied ``yX``) plus per-run mini-batches and a fixed head.
"""

import pytest
import torch

from implicitlab.losses import SquareLossStats, log_loss, loss
from implicitlab.models import Architecture
from implicitlab.train.linear_grad import linear_chain_gradients

F64 = torch.float64
R, D, WIDTH = 2, 3, 4
LOSS_SETUP = {"square": (1, "real"), "exp": (1, "pm1"), "logistic": (1, "pm1"), "ce": (3, "classes")}

# Full-batch square loss *without* the sufficient statistics: _dloss_doutputs unsqueezes the targets
# only when ``t.ndim == F.ndim − 1``, which is the per-run mini-batch case (R, B). Shared scalar
# targets (n,) then broadcast against F (R, n, 1) to (R, n, n), and vector targets (n, d_out) are
# unsqueezed to (n, d_out, 1). gradient_descent never takes this path (it always passes the
# statistics for a full-batch square loss), but linear_chain_gradients accepts the call.


def loss_and_mode_cases(losses):
    """(loss, normalized) pairs, with readable ids."""
    return [pytest.param(name, normalized, id=f"{name}-{'normalized' if normalized else 'plain'}")
            for name in losses for normalized in (False, True)]


def make_chain(depth: int, d_out: int, seed: int = 0, scale: float = 0.7) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dims = [D] + [WIDTH] * (depth - 1) + [d_out]
    return [scale * torch.randn(R, dims[k + 1], dims[k], generator=g, dtype=F64) for k in range(depth)]


def make_data(labels: str, n: int = 6, d_out: int = 1, batch: tuple[int, ...] = (), seed: int = 1):
    """X ``(*batch, n, D)`` and matching targets."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(*batch, n, D, generator=g, dtype=F64)
    if labels == "real":
        shape = (*batch, n) if d_out == 1 else (*batch, n, d_out)
        y = torch.randn(*shape, generator=g, dtype=F64)
    elif labels == "pm1":
        y = torch.where(torch.randn(*batch, n, generator=g, dtype=F64) >= 0, 1.0, -1.0).to(F64)
    else:
        y = torch.randint(0, 3, (*batch, n), generator=g)
    return X, y


def autograd_reference(weights, head, X, y, loss_name, reduction, normalized):
    ws = [W.detach().clone().requires_grad_(True) for W in weights]
    h = X
    for W in ws:
        h = torch.matmul(h, W.mT)  # (R, n, out_k)
    if head is not None:
        h = torch.matmul(h, head.mT)  # (R, n, d_out)
    obj = (log_loss if normalized else loss)(loss_name, h, y, reduction)  # (R,)
    return obj.detach(), torch.autograd.grad(obj.sum(), ws)


def assert_matches(value, grads, ref_value, ref_grads, rtol):
    assert value.shape == (R,) and value.dtype == F64
    torch.testing.assert_close(value, ref_value, rtol=rtol, atol=rtol * float(ref_value.abs().max()))
    assert len(grads) == len(ref_grads)
    for k, (g, r) in enumerate(zip(grads, ref_grads)):
        assert g.shape == r.shape and g.dtype == F64, k
        # absolute slack relative to the layer's largest entry: entries near zero carry rounding only
        torch.testing.assert_close(g, r, rtol=rtol, atol=rtol * float(r.abs().max()), msg=lambda m: f"layer {k}: {m}")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("loss_name, normalized", loss_and_mode_cases(LOSS_SETUP))
def test_output_path_matches_autograd(loss_name, depth, reduction, normalized, tol):
    d_out, labels = LOSS_SETUP[loss_name]
    weights = make_chain(depth, d_out)
    X, y = make_data(labels, d_out=d_out)
    value, grads = linear_chain_gradients(weights, None, X, y, loss_name, reduction, normalized)
    assert_matches(value, grads, *autograd_reference(weights, None, X, y, loss_name, reduction, normalized), tol[F64])


@pytest.mark.parametrize("normalized", [False, True], ids=["plain", "normalized"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("d_out", [1, 2])
def test_square_sufficient_statistics_path_matches_autograd(d_out, depth, reduction, normalized, tol):
    weights = make_chain(depth, d_out)
    X, y = make_data("real", d_out=d_out)
    stats = SquareLossStats(X, y, reduction)
    value, grads = linear_chain_gradients(weights, None, X, y, "square", reduction, normalized, stats=stats)
    # (the expanded form R(P) = tr(PΣPᵀ) − 2tr(Pb) + c cancels near an interpolant; far from one, as
    # here, it keeps full float64 accuracy)
    assert_matches(value, grads, *autograd_reference(weights, None, X, y, "square", reduction, normalized),
                   tol[F64])


@pytest.mark.parametrize("normalized", [False, True], ids=["plain", "normalized"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("loss_name", ["exp", "logistic"])
def test_premultiplied_yx_path_matches_autograd(loss_name, depth, reduction, normalized, tol):
    weights = make_chain(depth, 1)
    X, y = make_data("pm1")
    yX = y.unsqueeze(1) * X  # (n, D) rows y_n x_n
    value, grads = linear_chain_gradients(weights, None, X, y, loss_name, reduction, normalized, yX=yX)
    assert_matches(value, grads, *autograd_reference(weights, None, X, y, loss_name, reduction, normalized), tol[F64])


@pytest.mark.parametrize("normalized", [False, True], ids=["plain", "normalized"])
@pytest.mark.parametrize("loss_name", list(LOSS_SETUP))
def test_per_run_minibatches_match_autograd(loss_name, normalized, tol):
    # X (R, B, D): each run its own batch, as SGD passes them
    d_out, labels = LOSS_SETUP[loss_name]
    weights = make_chain(3, d_out)
    X, y = make_data(labels, n=4, d_out=d_out, batch=(R,))
    value, grads = linear_chain_gradients(weights, None, X, y, loss_name, "mean", normalized)
    assert_matches(value, grads, *autograd_reference(weights, None, X, y, loss_name, "mean", normalized), tol[F64])


@pytest.mark.parametrize("loss_name, normalized", loss_and_mode_cases(["square", "exp", "logistic"]))
def test_residual_chain_with_fixed_head_matches_autograd(loss_name, normalized, tol):
    arch = Architecture("residual", d_in=D, depth=3)
    per_run = [arch.init(1.5, seed) for seed in range(R)]
    weights = [torch.stack([w[k] for w, _ in per_run]) for k in range(arch.depth)]
    head = torch.stack([h for _, h in per_run])  # (R, 1, D), not trained
    X, y = make_data(LOSS_SETUP[loss_name][1])
    value, grads = linear_chain_gradients(weights, head, X, y, loss_name, "mean", normalized)
    assert len(grads) == arch.depth  # one gradient per trained layer, none for the head
    assert_matches(value, grads, *autograd_reference(weights, head, X, y, loss_name, "mean", normalized), tol[F64])


@pytest.mark.parametrize("normalized", [False, True], ids=["plain", "normalized"])
def test_residual_chain_with_fixed_head_square_statistics_match_autograd(normalized, tol):
    arch = Architecture("residual", d_in=D, depth=3)
    per_run = [arch.init(1.5, seed) for seed in range(R)]
    weights = [torch.stack([w[k] for w, _ in per_run]) for k in range(arch.depth)]
    head = torch.stack([h for _, h in per_run])  # (R, 1, D)
    X, y = make_data("real")
    stats = SquareLossStats(X, y, "mean")
    value, grads = linear_chain_gradients(weights, head, X, y, "square", "mean", normalized, stats=stats)
    assert_matches(value, grads, *autograd_reference(weights, head, X, y, "square", "mean", normalized), tol[F64])


@pytest.mark.parametrize("use_yx", [False, True], ids=["outputs", "yX"])
@pytest.mark.parametrize("loss_name", ["exp", "logistic"])
def test_normalized_gradient_is_exact_where_the_loss_underflows(loss_name, use_yx, tol):
    # margins ≈ 10³: L < e^{-745} is 0 in float64, yet ∇log L is finite and autograd of log_loss
    # (log domain throughout) gives its exact value
    X, _ = make_data("pm1")
    teacher = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    y = torch.sign(X @ teacher)  # separable by the teacher
    u = teacher / teacher.norm()
    scale = 1000.0 / float((y * (X @ u)).min())  # smallest margin exactly 1000
    w = (scale * u).reshape(1, 1, D)
    weights = [torch.cat([w, 1.5 * w])]  # depth 1, R = 2: smallest margins 1000 and 1500
    assert float(loss(loss_name, torch.matmul(X, weights[0].mT), y).max()) == 0.0  # underflowed
    yX = y.unsqueeze(1) * X if use_yx else None
    value, grads = linear_chain_gradients(weights, None, X, y, loss_name, "mean", True, yX=yX)
    assert torch.isfinite(value).all() and all(torch.isfinite(g).all() for g in grads)
    m = y * torch.matmul(X, weights[0].mT)[..., 0]  # (R, n) margins
    if loss_name == "exp":  # log L = logsumexp(−m) − log n, written out
        expected = torch.logsumexp(-m, -1) - torch.log(torch.tensor(6.0, dtype=F64))
        torch.testing.assert_close(value, expected, rtol=tol[F64], atol=0.0)
    assert float(value.max()) < -990.0
    assert float(grads[0].abs().max()) > 0.0  # the step does not vanish with the loss
    assert_matches(value, grads, *autograd_reference(weights, None, X, y, loss_name, "mean", True), tol[F64])


def test_square_vector_targets_full_batch_without_statistics(tol):
    # (scalar targets are in test_output_path_matches_autograd[square-plain-*])
    weights = make_chain(2, 2)
    X, y = make_data("real", d_out=2)
    value, grads = linear_chain_gradients(weights, None, X, y, "square", "mean", False)
    assert_matches(value, grads, *autograd_reference(weights, None, X, y, "square", "mean", False), tol[F64])

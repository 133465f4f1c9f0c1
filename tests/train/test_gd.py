"""Training: run r of an ensemble equals the same run trained alone; divergence; normalized GD."""

import math

import numpy as np
import pytest
import torch

from implicitlab.losses import loss
from implicitlab.models import Architecture, Ensemble, LayeredNet
from implicitlab.train import every, log_spaced, loss_probe, norms_probe, gradient_descent

F64 = torch.float64


def _data(n=20, d=4, seed=0, labels=False):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, dtype=F64, generator=g)
    y = X @ torch.randn(d, dtype=F64, generator=g)
    return (X, torch.sign(y)) if labels else (X, y)


def _solo_gd(model: LayeredNet, X, y, loss_name, lr, steps, reduction="mean"):
    """An independent plain PyTorch loop: autograd on the single model, manual update."""
    for _ in range(steps):
        value = loss(loss_name, model(X), y, reduction)
        grads = torch.autograd.grad(value, list(model.weights))
        with torch.no_grad():
            for W, g in zip(model.weights, grads):
                W -= lr * g
    return model


@pytest.mark.parametrize(
    "arch,loss_name,labels",
    [
        (Architecture("deep_linear", d_in=4, depth=5), "square", False),  # sufficient-statistics path
        (Architecture("residual", d_in=4, depth=4), "square", False),
        (Architecture("mlp", d_in=4, depth=3, width=6, activation="gelu"), "square", False),
        (Architecture("deep_linear", d_in=4, depth=3), "exp", True),
        (Architecture("mlp", d_in=4, depth=2, width=6, activation="relu"), "logistic", True),
        (Architecture("deep_linear", d_in=4, depth=2), "logistic", True),
        (Architecture("deep_linear", d_in=4, depth=1), "exp", True),
    ],
    ids=["dln-square", "res-square", "gelu-square", "dln-exp", "relu-logistic", "dln-logistic", "linear-exp"],
)
def test_run_r_equals_run_trained_alone(arch, loss_name, labels, tol):
    X, y = _data(labels=labels)
    scales, seeds, lrs = [0.4, 0.6, 0.5], [10, 11, 12], [0.01, 0.02, 0.005]
    ens = Ensemble.create(arch, scales, seeds)
    gradient_descent(ens, loss_name, X, y, lr=lrs, num_steps=60)
    for r in range(3):
        solo = _solo_gd(LayeredNet.create(arch, scales[r], seeds[r]), X, y, loss_name, lrs[r], 60)
        for a, b in zip(ens.member(r).weights, solo.weights):
            # float64 rounding only: the sufficient-statistics path sums in another order.
            torch.testing.assert_close(a, b, rtol=tol[F64], atol=tol[F64] * float(b.detach().abs().max()))


def test_divergence_is_recorded_and_others_go_on(tol):
    arch = Architecture("deep_linear", d_in=4, depth=3)
    X, y = _data()
    ens = Ensemble.create(arch, [0.5, 0.5], [0, 0])
    res = gradient_descent(ens, "square", X, y, lr=[0.01, 50.0], num_steps=100, probe_steps=every(10, 100))
    assert res.diverged.tolist() == [False, True]
    assert res.diverged_step[1] is not None and res.diverged_step[1] < 100
    last = res.table[res.table.step == 100].set_index("run")
    assert math.isnan(last.loc[1, "loss"]) and bool(last.loc[1, "diverged"])
    assert math.isfinite(last.loc[0, "loss"])
    solo = _solo_gd(LayeredNet.create(arch, 0.5, 0), X, y, "square", 0.01, 100)
    for a, b in zip(ens.member(0).weights, solo.weights):
        torch.testing.assert_close(a, b, rtol=tol[F64], atol=tol[F64] * float(b.detach().abs().max()))


@pytest.mark.parametrize("loss_name", ["exp", "logistic", "square"])
@pytest.mark.parametrize("depth", [1, 3])
def test_normalized_gd_step_is_gradient_over_loss(loss_name, depth, tol):
    arch = Architecture("deep_linear", d_in=3, depth=depth)
    X, y = _data(n=10, d=3, labels=loss_name != "square")
    ens = Ensemble.create(arch, [0.5], [0])
    w0 = [w.detach().clone() for w in ens.weights]
    single = ens.member(0)
    L = loss(loss_name, single(X), y)
    grads = torch.autograd.grad(L, list(single.weights))
    gradient_descent(ens, loss_name, X, y, lr=0.3, num_steps=1, normalized=True)
    for W, W0, g in zip(ens.weights, w0, grads):
        expected = W0[0] - 0.3 * g / L.detach()
        torch.testing.assert_close(W[0].detach(), expected, rtol=tol[F64], atol=tol[F64] * float(expected.abs().max()))


def test_normalized_gd_keeps_moving_when_loss_underflows():
    # margins of ~1000: L = e^{-1000} is 0 in float64 but ∇log L is well defined
    arch = Architecture("deep_linear", d_in=2, depth=1)
    X = torch.tensor([[1.0, 0.2], [0.8, -0.1]], dtype=F64)
    y = torch.tensor([1.0, 1.0], dtype=F64)
    ens = Ensemble(arch, [torch.tensor([[[1000.0, 0.0]]], dtype=F64)])
    before = ens.weights[0].detach().clone()
    res = gradient_descent(ens, "exp", X, y, lr=1.0, num_steps=3, normalized=True, probe_steps=[0, 3])
    assert not res.diverged[0]
    assert (ens.weights[0] - before).abs().max() > 0.1
    assert np.isfinite(res.table["log_loss"]).all() and (res.table["loss"] == 0).all()


def test_sgd_runs_are_independent_of_their_neighbours():
    arch = Architecture("mlp", d_in=4, depth=2, width=5, activation="relu")
    X, y = _data(n=24)
    a = Ensemble.create(arch, [1.0, 1.0, 1.0], [0, 1, 2])
    b = Ensemble.create(arch, [1.0], [1])
    gradient_descent(a, "square", X, y, lr=0.05, num_steps=30, batch_size=5)
    gradient_descent(b, "square", X, y, lr=0.05, num_steps=30, batch_size=5)
    for wa, wb in zip(a.member(1).weights, b.member(0).weights):
        torch.testing.assert_close(wa, wb, rtol=1e-13, atol=1e-14)
    first = loss("square", Ensemble.create(arch, [1.0], [1])(X), y).item()
    assert loss("square", b(X), y).item() < first


def test_table_is_tidy_and_probes_scheduled():
    arch = Architecture("deep_linear", d_in=4, depth=3)
    X, y = _data()
    ens = Ensemble.create(arch, [0.5] * 4, [0, 1, 2, 3])
    steps = log_spaced(200, 10)
    res = gradient_descent(ens, "square", X, y, lr=0.01, num_steps=200, probe_steps=steps,
                probes=(loss_probe, norms_probe))
    assert len(res.table) == 4 * len(steps)
    assert set(res.table.step) == set(steps.tolist())
    assert {"run", "step", "loss", "log_loss", "norm_1", "norm_3", "norm_product", "diverged"} <= set(res.table)


def test_bad_training_input():
    arch = Architecture("deep_linear", d_in=4, depth=2)
    X, y = _data()
    ens = Ensemble.create(arch, [0.5], [0])
    with pytest.raises(ValueError, match="positive"):
        gradient_descent(ens, "square", X, y, lr=-0.1, num_steps=1)
    with pytest.raises(ValueError, match="unknown loss"):
        gradient_descent(ens, "hinge", X, y, lr=0.1, num_steps=1)
    with pytest.raises(ValueError, match="empty"):
        gradient_descent(ens, "square", X[:0], y[:0], lr=0.1, num_steps=1)
    with pytest.raises(ValueError, match=r"X must be"):
        gradient_descent(ens, "square", X[:, :3], y, lr=0.1, num_steps=1)
    with pytest.raises(ValueError, match="step sizes for"):
        gradient_descent(ens, "square", X, y, lr=[0.1, 0.2], num_steps=1)


class _Subclassed(Ensemble):
    """An ensemble with its own forward: gradient_descent takes the autograd path."""

    def forward(self, X):
        return super().forward(X)


@pytest.mark.parametrize(
    "arch,loss_name,labels,cls",
    [
        (Architecture("deep_linear", d_in=4, depth=4), "square", False, Ensemble),  # sufficient statistics
        (Architecture("deep_linear", d_in=4, depth=3), "exp", True, Ensemble),  # linear chain, margins
        (Architecture("mlp", d_in=4, depth=3, width=6, activation="relu"), "logistic", True, Ensemble),  # chain
        (Architecture("mlp", d_in=4, depth=3, width=6, activation="gelu"), "square", False, _Subclassed),  # autograd
    ],
)
def test_probes_see_the_training_loss_the_step_computed(arch, loss_name, labels, cls):
    """ctx.training_loss is L(θ) at the probed weights, equal to a fresh forward pass to 1e-12
    (float64), on every gradient path; None at the last step (no gradient taken there)."""
    X, y = _data(labels=labels)
    model = cls.create(arch, [0.25, 0.35], [0, 1], dtype=F64)
    seen = {}

    def probe(ctx):
        fresh = loss(ctx.loss, ctx.model(ctx.X), ctx.y, ctx.reduction)
        seen[ctx.step] = None if ctx.training_loss is None else (ctx.training_loss.clone(), fresh)
        return {"loss": fresh}

    gradient_descent(model, loss_name, X, y, lr=0.01, num_steps=6, probe_steps=range(7), probes=(probe,))
    assert seen[6] is None
    assert all(torch.isfinite(seen[s][1]).all() for s in range(6))
    for step in range(6):
        got, fresh = seen[step]
        assert got.shape == (2,) and not got.requires_grad
        torch.testing.assert_close(got, fresh, rtol=1e-12, atol=0)
    # consecutive steps differ: the loss seen is the step's own, not a stale one
    assert not torch.equal(seen[0][0], seen[5][0])


def test_training_loss_is_withheld_for_sgd_and_normalized_gd():
    """Mini-batch objectives and normalized GD's log loss are not L(θ): probes get None."""
    X, y = _data(labels=True)
    arch = Architecture("mlp", d_in=4, depth=2, width=5, activation="relu")
    for kwargs in ({"batch_size": 5}, {"normalized": True}):
        model = Ensemble.create(arch, [1.0], [0], dtype=F64)
        seen = []
        gradient_descent(model, "logistic", X, y, lr=0.05, num_steps=3, probe_steps=range(4),
                         probes=(lambda ctx: (seen.append(ctx.training_loss), {})[1],), **kwargs)
        assert seen == [None] * 4

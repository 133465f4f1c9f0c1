"""Written-out gradients of nonlinear chains against autograd on each run alone.

The reference for run r is autograd through run r's own chain (2-D weights, ``torch.tanh`` or the
package's :func:`~implicitlab.models.activate`) and the package's loss or log-loss — one graph per
run, no batching — so a batching error (runs mixed, a NaN leaking) cannot cancel out. Every
activation × loss (plain and normalized) × dtype, uneven widths, a fixed head, per-run mini-batches,
diverging runs; then whole trajectories of :func:`gradient_descent` against per-run autograd GD,
and run r of an ensemble against the same run trained alone.
"""

import math

import pytest
import torch

from implicitlab.losses import log_loss, loss
from implicitlab.models import Architecture, Ensemble, LayeredNet, activate
from implicitlab.models.architecture import activate_with_derivatives
from implicitlab.train import gradient_descent
from implicitlab.train.chain_grad import ChainWorkspace, chain_gradients

F64, F32 = torch.float64, torch.float32
R, D = 3, 3
WIDTHS = (5, 2, 4)  # uneven hidden widths
ACTS = ("gelu", "relu", "smooth_relu", "tanh", "none")
LOSS_SETUP = {"square": (1, "real"), "exp": (1, "pm1"), "logistic": (1, "pm1"), "ce": (3, "classes")}
CASES = [pytest.param(name, norm, id=f"{name}-{'normalized' if norm else 'plain'}")
         for name in LOSS_SETUP for norm in (False, True)] + [pytest.param("square-vector", False, id="square-vector")]


def sigma(h, activation, eps=0.1):
    return torch.tanh(h) if activation == "tanh" else activate(h, activation, eps)


def make_chain(widths, d_out, dtype, seed=0, scale=0.9):
    g = torch.Generator().manual_seed(seed)
    dims = [D, *widths, d_out]
    return [(scale * torch.randn(R, dims[k + 1], dims[k], generator=g, dtype=F64)).to(dtype) for k in range(len(dims) - 1)]


def make_data(labels, dtype, n=7, d_out=1, batch=(), seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(*batch, n, D, generator=g, dtype=F64).to(dtype)
    if labels == "real":
        y = torch.randn(*batch, n, *((d_out,) if d_out > 1 else ()), generator=g, dtype=F64).to(dtype)
    elif labels == "pm1":
        y = torch.where(torch.randn(*batch, n, generator=g) >= 0, 1.0, -1.0).to(dtype)
    else:
        y = torch.randint(0, 3, (*batch, n), generator=g)
    return X, y


def per_run_autograd(weights, head, X, y, loss_name, reduction, normalized, activation, r):
    """Run r alone: its own 2-D weights and graph."""
    ws = [W[r].detach().clone().requires_grad_(True) for W in weights]
    Xr, yr = (X[r], y[r]) if X.ndim == 3 else (X, y)
    h = Xr
    for k, W in enumerate(ws):
        h = h @ W.T  # (n, out_k)
        if k < len(ws) - 1:
            h = sigma(h, activation)
    if head is not None:
        h = h @ head[r].T
    obj = (log_loss if normalized else loss)(loss_name, h, yr, reduction)
    return obj.detach(), [g.detach() for g in torch.autograd.grad(obj, ws)]


def assert_runs_match(value, grads, weights, head, X, y, loss_name, reduction, normalized, activation, rtol,
                      runs=range(R)):
    for r in runs:
        ref_value, ref_grads = per_run_autograd(weights, head, X, y, loss_name, reduction, normalized, activation, r)
        torch.testing.assert_close(value[r], ref_value, rtol=rtol, atol=rtol * max(1.0, float(ref_value.abs())))  # log L may be exactly 0
        for k, (g, ref) in enumerate(zip(grads, ref_grads)):
            # absolute slack relative to the layer's largest entry: entries near zero carry rounding only
            torch.testing.assert_close(g[r], ref, rtol=rtol, atol=rtol * float(ref.abs().max()),
                                       msg=lambda m, k=k, r=r: f"run {r}, layer {k}: {m}")


def setup(case, dtype):
    loss_name, d_out = (case, LOSS_SETUP[case][0]) if case in LOSS_SETUP else ("square", 2)
    labels = LOSS_SETUP.get(case, (2, "real"))[1]
    return loss_name, d_out, labels


@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("case, normalized", CASES)
def test_gradients_match_per_run_autograd(case, normalized, activation, dtype, tol):
    loss_name, d_out, labels = setup(case, dtype)
    weights = make_chain(WIDTHS, d_out, dtype)
    X, y = make_data(labels, dtype, d_out=d_out)
    for reduction in ("mean", "sum"):
        value, grads = chain_gradients(weights, None, X, y, loss_name, reduction, normalized, activation)
        assert value.shape == (R,) and value.dtype == dtype
        assert [g.shape for g in grads] == [W.shape for W in weights] and all(g.dtype == dtype for g in grads)
        assert_runs_match(value, grads, weights, None, X, y, loss_name, reduction, normalized, activation, tol[dtype])


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("loss_name, normalized", [("square", False), ("logistic", True), ("exp", False)])
def test_fixed_head_and_per_run_minibatches(loss_name, normalized, activation, tol):
    labels = LOSS_SETUP[loss_name][1]
    weights = make_chain((4, 4), 4, F64)  # residual-style: the last layer feeds a fixed head (R, 1, 4)
    head = torch.randn(R, 1, 4, dtype=F64, generator=torch.Generator().manual_seed(3))
    X, y = make_data(labels, F64)
    value, grads = chain_gradients(weights, head, X, y, loss_name, "mean", normalized, activation)
    assert_runs_match(value, grads, weights, head, X, y, loss_name, "mean", normalized, activation, tol[F64])
    Xb, yb = make_data(labels, F64, n=4, batch=(R,), seed=2)  # (R, B, d): one mini-batch per run
    value, grads = chain_gradients(weights, head, Xb, yb, loss_name, "mean", normalized, activation)
    assert_runs_match(value, grads, weights, head, Xb, yb, loss_name, "mean", normalized, activation, tol[F64])


@pytest.mark.parametrize("activation", ("gelu", "smooth_relu", "relu"))
def test_diverging_run_stays_its_own_outcome(activation, tol):
    """Run 1 overflows (inf/NaN); runs 0 and 2 must equal their per-run autograd gradients exactly."""
    weights = make_chain(WIDTHS, 1, F64)
    weights[0][1] *= 1e200  # pre-activations ~1e200: the square loss overflows to inf
    weights[1][1, 0, 0] = float("nan")
    X, y = make_data("real", F64)
    ws = ChainWorkspace()
    value, grads = chain_gradients(weights, None, X, y, "square", "mean", False, activation, workspace=ws)
    assert not bool(torch.isfinite(value[1]))
    assert bool(torch.isfinite(value[[0, 2]]).all())
    assert all(bool(torch.isfinite(g[[0, 2]]).all()) for g in grads)
    assert_runs_match(value, grads, weights, None, X, y, "square", "mean", False, activation, tol[F64], runs=(0, 2))


def test_activation_derivatives_match_autograd(tol):
    z = torch.linspace(-6, 6, 241, dtype=F64)
    for act in ("gelu", "relu", "smooth_relu", "tanh"):
        a, d1, d2 = activate_with_derivatives(z, act, 0.3, order=2)
        zz = z.clone().requires_grad_(True)
        ref = torch.tanh(zz) if act == "tanh" else activate(zz, act, 0.3)
        (g,) = torch.autograd.grad(ref.sum(), zz, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), zz) if act != "relu" else (torch.zeros_like(z),)
        for mine, theirs, what in ((a, ref.detach(), "σ"), (d1, g.detach(), "σ′"), (d2, h, "σ″")):
            torch.testing.assert_close(mine, theirs, rtol=tol[F64], atol=tol[F64], msg=lambda m: f"{act} {what}: {m}")


def test_bad_input_is_refused_before_compute():
    weights = make_chain(WIDTHS, 1, F64)
    X, y = make_data("real", F64)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        chain_gradients(weights, None, X, y, "square", "mean", False, "swish")
    with pytest.raises(ValueError, match="takes 2 inputs but layer 0 has 5 outputs"):
        chain_gradients([weights[0], weights[2]], None, X, y, "square", "mean", False, "gelu")
    with pytest.raises(ValueError, match="features"):
        chain_gradients(weights, None, X[:, :2], y, "square", "mean", False, "gelu")


# ------------------------------------------------------------------------------ trajectories


def per_run_autograd_gd(arch, scale, seed, X, y, loss_name, lr, steps, normalized=False):
    """Plain GD on one LayeredNet with autograd: the reference trajectory of one run."""
    net = LayeredNet.create(arch, scale, seed)
    params = list(net.parameters())
    for _ in range(steps):
        out = net(X)
        obj = (log_loss if normalized else loss)(loss_name, out, y, "mean")
        grads = torch.autograd.grad(obj, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(lr * g)
    return [p.detach() for p in params]


@pytest.mark.parametrize("activation, loss_name, normalized", [
    ("gelu", "square", False), ("smooth_relu", "logistic", False), ("relu", "exp", True), ("gelu", "ce", False),
])
def test_trajectories_equal_per_run_autograd_gd(activation, loss_name, normalized, tol):
    d_out, labels = LOSS_SETUP[loss_name]
    arch = Architecture("mlp", d_in=D, depth=4, width=5, d_out=d_out, activation=activation)
    X, y = make_data(labels, F64, n=10)
    scales, seeds, lrs = [0.8, 1.0, 1.3], [4, 5, 6], [0.05, 0.1, 0.02]
    ens = Ensemble.create(arch, scales, seeds)
    gradient_descent(ens, loss_name, X, y, lr=lrs, num_steps=40, normalized=normalized)
    for r in range(3):
        ref = per_run_autograd_gd(arch, scales[r], seeds[r], X, y, loss_name, lrs[r], 40, normalized)
        for k, (W, Wr) in enumerate(zip(ens.weights, ref)):
            # 40 steps compound rounding: 100× the one-evaluation tolerance, relative to the layer's scale
            torch.testing.assert_close(W.detach()[r], Wr, rtol=100 * tol[F64], atol=100 * tol[F64] * float(Wr.abs().max()),
                                       msg=lambda m, k=k, r=r: f"run {r}, layer {k}: {m}")


def test_run_r_of_an_ensemble_equals_the_run_trained_alone():
    arch = Architecture("deep_linear", d_in=5, depth=6, activation="gelu")
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, 5, generator=g, dtype=F64)
    y = X @ torch.randn(5, generator=g, dtype=F64)
    scales, seeds, lrs = [0.45, 0.6, 0.7, 3.0], [11, 12, 13, 14], [0.05, 0.07, 0.02, 0.5]  # run 3 diverges
    ens = Ensemble.create(arch, scales, seeds)
    res = gradient_descent(ens, "square", X, y, lr=lrs, num_steps=200, probe_steps=[0, 100, 200])
    assert res.diverged_step[3] is not None and not any(res.diverged[:3])
    for r in range(4):
        alone = Ensemble.create(arch, [scales[r]], [seeds[r]])
        res_r = gradient_descent(alone, "square", X, y, lr=lrs[r], num_steps=200, probe_steps=[0, 100, 200])
        assert res_r.diverged_step[0] == res.diverged_step[r]
        for W, Wr in zip(ens.weights, alone.weights):
            # the same products in the same order per run: equal to rounding (one GEMM row vs another)
            torch.testing.assert_close(W.detach()[r], Wr.detach()[0], rtol=1e-13, atol=1e-13, equal_nan=True)
        mine = res.table[res.table.run == r].loss.to_numpy()
        theirs = res_r.table.loss.to_numpy()
        assert all((math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-13 * max(1.0, abs(b))
                   for a, b in zip(mine, theirs))

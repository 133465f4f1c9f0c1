"""LayeredNet: the forward pass written out, parameters vs buffers, copies, gradients, homogeneity."""

import math

import pytest
import torch

from implicitlab.models import Architecture, LayeredNet, activate

F64 = torch.float64


def data(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def hand_forward(weights, head, X, activation, eps=0.1):
    """[head ·] W_L σ(⋯ σ(W_1 x)) one example at a time, as the docstring writes it."""
    rows = []
    for x in X:  # x (d_in,)
        h = x
        for k, W in enumerate(weights):
            h = W @ h
            if k < len(weights) - 1:
                h = activate(h, activation, eps)
        rows.append(head @ h if head is not None else h)
    return torch.stack(rows)  # (n, d_out)


@pytest.mark.parametrize(
    "arch",
    [
        Architecture("deep_linear", d_in=3, depth=1),
        Architecture("deep_linear", d_in=3, depth=4, width=5, d_out=2),
        Architecture("residual", d_in=3, depth=3),
        Architecture("mlp", d_in=3, depth=3, width=6, activation="relu"),
        Architecture("mlp", d_in=3, depth=2, width=4, d_out=3, activation="gelu"),
        Architecture("mlp", d_in=3, depth=3, width=4, activation="smooth_relu", eps=0.3),
    ],
    ids=lambda a: f"{a.kind}-{a.activation}-L{a.depth}-out{a.d_out}",
)
def test_forward_against_the_chain_written_out(arch, tol):
    net = LayeredNet.create(arch, init_scale=0.9, seed=4)
    X = data(7, arch.d_in)
    with torch.no_grad():
        out = net(X)
        expected = hand_forward(list(net.weights), net.head, X, arch.activation, arch.eps)
    assert out.shape == (7, arch.d_out) and out.dtype == F64
    torch.testing.assert_close(out, expected, rtol=tol[F64], atol=tol[F64] * float(expected.abs().max()))


def test_no_activation_after_the_last_layer():
    # a depth-1 ReLU "mlp" is linear: negative outputs survive
    arch = Architecture("mlp", d_in=2, depth=1, activation="relu")
    net = LayeredNet(arch, [torch.tensor([[1.0, 0.0]], dtype=F64)])
    assert net(torch.tensor([[-3.0, 1.0]], dtype=F64)).item() == -3.0


def test_create_uses_the_architecture_init():
    arch = Architecture("residual", d_in=3, depth=2)
    net = LayeredNet.create(arch, init_scale=0.5, seed=8)
    weights, head = arch.init(0.5, seed=8)
    assert all(torch.equal(p, w) for p, w in zip(net.weights, weights))
    assert torch.equal(net.head, head)


def test_weights_are_parameters_and_the_head_is_a_buffer():
    arch = Architecture("residual", d_in=3, depth=2)
    net = LayeredNet.create(arch, init_scale=0.5, seed=0)
    params = dict(net.named_parameters())
    assert set(params) == {"weights.0", "weights.1"}
    assert sum(p.numel() for p in params.values()) == arch.num_params
    assert [n for n, _ in net.named_buffers()] == ["head"] and not net.head.requires_grad
    assert set(net.state_dict()) == {"weights.0", "weights.1", "head"}
    assert net.layer_weights() == list(net.weights)
    plain = LayeredNet.create(Architecture("deep_linear", d_in=3, depth=2), init_scale=0.5, seed=0)
    assert plain.head is None and list(plain.buffers()) == []


def test_construction_copies_its_inputs():
    arch = Architecture("residual", d_in=2, depth=1)
    W, head = torch.eye(2, dtype=F64), torch.tensor([[0.6, 0.8]], dtype=F64)
    net = LayeredNet(arch, [W], head)
    W.mul_(5.0)
    head.zero_()
    assert torch.equal(net.weights[0], torch.eye(2, dtype=F64))
    assert torch.equal(net.head, torch.tensor([[0.6, 0.8]], dtype=F64))


def test_state_dict_round_trip():
    arch = Architecture("residual", d_in=3, depth=2)
    a = LayeredNet.create(arch, init_scale=1.0, seed=1)
    b = LayeredNet.create(arch, init_scale=1.0, seed=2)
    X = data(5, 3)
    assert not torch.equal(a(X), b(X))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(X), b(X))


def test_dtype_of_created_and_converted_models():
    arch = Architecture("residual", d_in=3, depth=2)
    net = LayeredNet.create(arch, init_scale=1.0, seed=0, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in net.parameters()) and net.head.dtype == torch.float32
    assert net(torch.zeros(2, 3)).dtype == torch.float32
    net64 = net.to(F64)
    assert all(p.dtype == F64 for p in net64.parameters()) and net64.head.dtype == F64


def test_gradient_of_a_linear_predictor_is_the_least_squares_gradient(tol):
    # depth 1, mean square loss (no ½): ∇_w (1/n)‖Xw − y‖² = (2/n) Xᵀ(Xw − y)
    arch = Architecture("deep_linear", d_in=4, depth=1)
    net = LayeredNet.create(arch, init_scale=1.0, seed=3)
    X = data(6, 4, seed=1)
    y = data(6, 1, seed=2)[:, 0]
    ((net(X)[:, 0] - y) ** 2).mean().backward()
    w = net.weights[0].detach()[0]
    expected = 2.0 / 6 * X.T @ (X @ w - y)
    torch.testing.assert_close(net.weights[0].grad[0], expected, rtol=tol[F64], atol=tol[F64])


@pytest.mark.parametrize("c", [0.1, 2.0, 7.5])
def test_bias_free_relu_net_is_homogeneous(c, tol):
    # f(c·x) = c f(x) for c > 0 and f with every W_k scaled by c_k is ∏c_k f
    arch = Architecture("mlp", d_in=3, depth=3, width=5, activation="relu")
    net = LayeredNet.create(arch, init_scale=1.0, seed=6)
    X = data(8, 3)
    out = net(X)
    torch.testing.assert_close(net(c * X), c * out, rtol=tol[F64], atol=tol[F64])
    factors = [c, 1.0 / math.sqrt(c), 3.0]
    scaled = LayeredNet(arch, [f * W.detach() for f, W in zip(factors, net.weights)])
    torch.testing.assert_close(scaled(X), math.prod(factors) * out, rtol=tol[F64], atol=tol[F64])

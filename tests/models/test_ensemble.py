"""The ensemble against single runs: forward, gradients, initialisation."""

import pytest
import torch

from implicitlab.losses import loss
from implicitlab.models import Architecture, Ensemble, LayeredNet
from implicitlab.train.chain_grad import chain_forward

F64 = torch.float64
ARCHS = [
    Architecture("deep_linear", d_in=4, depth=3),
    Architecture("deep_linear", d_in=4, depth=3, width=6, d_out=2),
    Architecture("residual", d_in=4, depth=3),
    Architecture("mlp", d_in=4, depth=3, width=7, activation="relu"),
    Architecture("mlp", d_in=4, depth=2, width=5, activation="gelu"),
    Architecture("mlp", d_in=4, depth=3, width=5, activation="smooth_relu", eps=0.5),
]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"{a.kind}-{a.activation}-{a.d_out}")
def test_member_matches_single_model_and_forward(arch, tol):
    scales, seeds = [0.5, 1.0, 1.5], [3, 4, 5]
    ens = Ensemble.create(arch, scales, seeds)
    X = torch.randn(9, arch.d_in, dtype=F64, generator=torch.Generator().manual_seed(1))
    out = ens(X)
    assert out.shape == (3, 9, arch.d_out)
    for r in range(3):
        single = LayeredNet.create(arch, scales[r], seeds[r])
        for a, b in zip(single.weights, ens.member(r).weights):
            assert torch.equal(a, b)
        # batched and plain matmul may accumulate in different orders: float64 rounding only
        expected = single(X).detach()
        torch.testing.assert_close(out[r], expected, rtol=tol[F64], atol=tol[F64] * float(expected.abs().max()))


@pytest.mark.parametrize("loss_name", ["square", "exp", "logistic"])
@pytest.mark.parametrize("arch", [a for a in ARCHS if a.d_out == 1], ids=lambda a: f"{a.kind}-{a.activation}")
def test_batched_gradients_equal_per_run_autograd(arch, loss_name):
    g = torch.Generator().manual_seed(2)
    X = torch.randn(11, arch.d_in, dtype=F64, generator=g)
    y = torch.sign(torch.randn(11, dtype=F64, generator=g))
    ens = Ensemble.create(arch, [0.7, 1.1], [0, 1])
    total = loss(loss_name, ens(X), y).sum()
    grads = torch.autograd.grad(total, list(ens.weights))
    for r in range(2):
        single = ens.member(r)
        ref = torch.autograd.grad(loss(loss_name, single(X), y), list(single.weights))
        for gb, gr in zip(grads, ref):
            torch.testing.assert_close(gb[r], gr, rtol=1e-13, atol=1e-15)


def test_ce_gradients_multiclass(tol):
    arch = Architecture("mlp", d_in=3, depth=2, width=4, d_out=3, activation="relu")
    X = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    ens = Ensemble.create(arch, [1.0, 2.0], [0, 1])
    grads = torch.autograd.grad(loss("ce", ens(X), y).sum(), list(ens.weights))
    for r in range(2):
        m = ens.member(r)
        ref = torch.autograd.grad(torch.nn.functional.cross_entropy(m(X), y), list(m.weights))
        for gb, gr in zip(grads, ref):
            torch.testing.assert_close(gb[r], gr, rtol=tol[F64], atol=tol[F64] * float(gr.abs().max()))


def test_end_to_end_product():
    arch = Architecture("residual", d_in=3, depth=4)
    ens = Ensemble.create(arch, [0.5, 0.9], [0, 1])
    X = torch.eye(3, dtype=F64)
    # f(e_j) is column j of the end-to-end matrix
    torch.testing.assert_close(ens.end_to_end().mT, ens(X), rtol=1e-14, atol=1e-14)


def test_init_is_device_and_dtype_independent_in_distribution():
    arch = Architecture("deep_linear", d_in=3, depth=2)
    w64, _ = arch.init(0.5, seed=7, dtype=torch.float64)
    w32, _ = arch.init(0.5, seed=7, dtype=torch.float32)
    assert w32[0].dtype == torch.float32
    torch.testing.assert_close(w64[0].float(), w32[0])


def test_residual_init_scale_and_head():
    arch = Architecture("residual", d_in=5, depth=10)
    weights, head = arch.init(0.0, seed=0)
    for W in weights:
        assert torch.equal(W, torch.eye(5, dtype=F64))
    assert head.shape == (1, 5) and abs(head.norm().item() - 1.0) < 1e-15


def test_bad_architectures():
    from implicitlab.config import ConfigError

    with pytest.raises(ConfigError, match="width == d_in"):
        Architecture("residual", d_in=4, depth=2, width=3)
    with pytest.raises(ConfigError, match="activation"):
        Architecture("mlp", activation="tanh")
    with pytest.raises(ConfigError, match="depth"):
        Architecture("mlp", depth=0)


@pytest.mark.parametrize("kind, activation", [("mlp", "gelu"), ("mlp", "relu"), ("mlp", "smooth_relu"),
                                              ("deep_linear", "none"), ("residual", "none")])
def test_forward_equals_the_written_out_chain(kind, activation):
    """The training engine's forward pass (examples as columns, one GEMM for the shared first layer)
    computes the same outputs as Ensemble.forward, for every run."""
    arch = Architecture(kind, d_in=3, depth=3, width=None if kind == "residual" else 4, activation=activation)
    ens = Ensemble.create(arch, [0.5, 1.0, 2.0], [1, 2, 3])
    X = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    FT, _, _ = chain_forward(list(ens.weights), ens.head, X, activation, arch.eps)
    with torch.no_grad():
        ref = ens(X)  # (R, n, d_out)
    torch.testing.assert_close(FT.transpose(-1, -2), ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))

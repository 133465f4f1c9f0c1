"""Architectures as data: activations by formula, shapes, validation, and the initialisation recipe."""

import dataclasses
import math

import pytest
import torch

from implicitlab.config import ConfigError
from implicitlab.models import ACTIVATIONS, Architecture, activate

F64 = torch.float64


def grid(dtype=F64) -> torch.Tensor:
    return torch.tensor([-30.0, -2.5, -1.0, -0.05, 0.0, 0.05, 1.0, 2.5, 30.0], dtype=dtype)


# ------------------------------------------------------------------------------ activations ---
def test_activations_by_formula(tol):
    h = grid()
    torch.testing.assert_close(activate(h, "none"), h, rtol=0, atol=0)
    torch.testing.assert_close(activate(h, "relu"), torch.tensor([max(v, 0.0) for v in h.tolist()], dtype=F64),
                               rtol=0, atol=0)
    # GELU(x) = x Φ(x) = x (1 + erf(x/√2)) / 2 (the exact form, not the tanh approximation)
    gelu = torch.tensor([v * (1 + math.erf(v / math.sqrt(2))) / 2 for v in h.tolist()], dtype=F64)
    torch.testing.assert_close(activate(h, "gelu"), gelu, rtol=tol[F64], atol=tol[F64])
    # smooth ReLU of Poggio et al. 2018: x / (1 + e^{−x/ε²}), written as x e^{z}/(1 + e^{z}) for z < 0
    def smooth_relu(v: float, eps: float) -> float:
        z = v / eps**2
        return v / (1 + math.exp(-z)) if z >= 0 else v * math.exp(z) / (1 + math.exp(z))

    for eps in (0.1, 0.5, 1.0):
        smooth = torch.tensor([smooth_relu(v, eps) for v in h.tolist()], dtype=F64)
        torch.testing.assert_close(activate(h, "smooth_relu", eps), smooth, rtol=tol[F64], atol=tol[F64])
    assert set(ACTIVATIONS) == {"none", "relu", "gelu", "smooth_relu"}


def test_smooth_relu_tends_to_relu_as_eps_shrinks():
    h = grid()
    gap = [float((activate(h, "smooth_relu", eps) - torch.relu(h)).abs().max()) for eps in (1.0, 0.3, 0.1, 0.03)]
    assert all(b < a for a, b in zip(gap, gap[1:]))
    # |x σ(x/ε²) − relu(x)| = |x| σ(−|x|/ε²) ≤ ε² max_t t σ(−t) < 0.28 ε²
    assert gap[-1] < 0.28 * 0.03**2


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_activations_keep_shape_and_dtype(activation, dtype):
    h = torch.zeros(2, 3, 4, dtype=dtype)
    out = activate(h, activation)
    assert out.shape == h.shape and out.dtype == dtype
    assert torch.equal(out, h)  # every activation maps 0 to 0 (bias-free homogeneity rests on it)


def test_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        activate(grid(), "tanh")


# ----------------------------------------------------------------------------------- shapes ---
@pytest.mark.parametrize(
    "arch, shapes",
    [
        (Architecture("deep_linear", d_in=3, depth=4, width=5, d_out=2), [(5, 3), (5, 5), (5, 5), (2, 5)]),
        (Architecture("deep_linear", d_in=3, depth=2), [(3, 3), (1, 3)]),  # width defaults to d_in
        (Architecture("deep_linear", d_in=7, depth=1, width=4, d_out=3), [(3, 7)]),  # a linear predictor
        (Architecture("mlp", d_in=2, depth=3, width=6, activation="relu"), [(6, 2), (6, 6), (1, 6)]),
        (Architecture("residual", d_in=4, depth=3), [(4, 4)] * 3),  # the head is not a trained layer
    ],
)
def test_shapes_and_parameter_count(arch, shapes):
    assert arch.shapes() == shapes
    assert arch.num_params == sum(o * i for o, i in shapes)
    weights, _ = arch.init(1.0, seed=0)
    assert [tuple(W.shape) for W in weights] == shapes


def test_hidden_width():
    assert Architecture(d_in=5, width=None).hidden == 5
    assert Architecture(d_in=5, width=9).hidden == 9


def test_architecture_is_a_frozen_value():
    a = Architecture("mlp", d_in=3, depth=2, activation="gelu")
    assert a == Architecture("mlp", d_in=3, depth=2, activation="gelu") and hash(a) == hash(dataclasses.replace(a))
    assert a != dataclasses.replace(a, eps=0.2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.depth = 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="cnn"), "unknown architecture kind 'cnn'"),
        (dict(activation="tanh"), "unknown activation 'tanh'"),
        (dict(d_in=0), "d_in must be ≥ 1"),
        (dict(depth=0), "depth must be ≥ 1"),
        (dict(d_out=0), "d_out must be ≥ 1"),
        (dict(width=0), "width must be ≥ 1"),
        (dict(kind="residual", d_in=4, width=5), "width == d_in"),
        (dict(eps=0.0), "eps must be positive"),
        (dict(eps=-0.1), "eps must be positive"),
    ],
)
def test_invalid_architectures(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Architecture(**kwargs)


# ------------------------------------------------------------------------------- init recipe ---
def test_deep_linear_init_recipe():
    # every entry init_scale · N(0, 1), drawn layer by layer from Generator(seed) in float64
    arch = Architecture("deep_linear", d_in=3, depth=3, width=4, d_out=2)
    weights, head = arch.init(0.3, seed=5)
    g = torch.Generator().manual_seed(5)
    for W, (o, i) in zip(weights, arch.shapes()):
        assert torch.equal(W, 0.3 * torch.randn(o, i, generator=g, dtype=F64))
    assert head is None


def test_mlp_init_recipe_scales_by_fan_in():
    arch = Architecture("mlp", d_in=3, depth=3, width=4, activation="relu")
    weights, head = arch.init(2.0, seed=9)
    g = torch.Generator().manual_seed(9)
    for W, (o, i) in zip(weights, arch.shapes()):
        assert torch.equal(W, 2.0 / math.sqrt(i) * torch.randn(o, i, generator=g, dtype=F64))
    assert head is None


def test_residual_init_recipe_and_unit_head(tol):
    # W_k = I + (s/√(L d)) N_k, then a fixed head w/‖w‖ drawn after the weights
    d, L, s = 4, 3, 1.7
    arch = Architecture("residual", d_in=d, depth=L)
    weights, head = arch.init(s, seed=2)
    g = torch.Generator().manual_seed(2)
    for W in weights:
        expected = torch.eye(d, dtype=F64) + s / math.sqrt(L * d) * torch.randn(d, d, generator=g, dtype=F64)
        assert torch.equal(W, expected)
    w = torch.randn(1, d, generator=g, dtype=F64)
    torch.testing.assert_close(head, w / w.norm(), rtol=tol[F64], atol=0.0)
    assert float(head.norm()) == pytest.approx(1.0, rel=tol[F64])


def test_init_is_reproducible_and_seed_dependent():
    arch = Architecture("mlp", d_in=3, depth=2, width=5, activation="gelu")
    a, _ = arch.init(1.0, seed=4)
    b, _ = arch.init(1.0, seed=4)
    c, _ = arch.init(1.0, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.equal(x, z) for x, z in zip(a, c))


def test_init_scale_is_a_factor():
    arch = Architecture("deep_linear", d_in=3, depth=3)
    unit, _ = arch.init(1.0, seed=1)
    scaled, _ = arch.init(0.25, seed=1)
    for W1, Ws in zip(unit, scaled):
        assert torch.equal(Ws, 0.25 * W1)  # one draw, then a power-of-two factor: exact


@pytest.mark.parametrize("kind", ["deep_linear", "mlp", "residual"])
def test_init_in_float32_is_the_float64_draw_rounded(kind):
    arch = Architecture(kind, d_in=3, depth=2, activation="relu" if kind == "mlp" else "none")
    w64, h64 = arch.init(0.8, seed=3, dtype=F64)
    w32, h32 = arch.init(0.8, seed=3, dtype=torch.float32)
    for a, b in zip(w64, w32):
        assert b.dtype == torch.float32 and torch.equal(a.float(), b)
    if kind == "residual":
        assert h32.dtype == torch.float32 and torch.equal(h64.float(), h32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_init_on_cuda_is_the_cpu_draw():
    arch = Architecture("residual", d_in=3, depth=2)
    cpu, hc = arch.init(0.8, seed=3)
    gpu, hg = arch.init(0.8, seed=3, device="cuda")
    assert all(torch.equal(a, b.cpu()) and b.is_cuda for a, b in zip(cpu, gpu))
    assert torch.equal(hc, hg.cpu())

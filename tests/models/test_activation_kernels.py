"""The fused activation kernels of the batched chains (activate_into, activation_backward) against
activate and autograd: σ(z) and grad ⊙ σ′(z), float64, including z = 0, large |z| and NaN."""

import pytest
import torch

from implicitlab.models.architecture import activate, activate_into, activate_with_derivatives, activation_backward

F64 = torch.float64


def _z() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(4, 5, 50, generator=g, dtype=F64)
    z[0, 0, :6] = torch.tensor([0.0, -0.0, 40.0, -40.0, 1e-300, -1e-8], dtype=F64)
    return z


def _reference(z: torch.Tensor, activation: str) -> torch.Tensor:
    """σ by name: activate, and tanh (which activate does not offer) by torch.tanh."""
    return torch.tanh(z) if activation == "tanh" else activate(z, activation, 0.1)


@pytest.mark.parametrize("activation", ["gelu", "relu", "smooth_relu", "tanh"])
def test_activate_into_equals_activate(activation):
    z = _z()
    out = torch.empty_like(z)
    got = activate_into(z, activation, 0.1, out=out)
    assert got.data_ptr() == out.data_ptr()
    ref = _reference(z, activation)
    # GELU: the same aten.gelu kernel as activate (exact erf form), so equal to the last bit; the bound
    # asked of it is 1e-15 relative to max |σ|.
    torch.testing.assert_close(got, ref, rtol=0.0, atol=1e-15 * float(ref.abs().max()))


@pytest.mark.parametrize("activation", ["gelu", "relu", "smooth_relu", "tanh"])
def test_activation_backward_equals_autograd(activation):
    z = _z()
    grad = torch.randn(z.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    zz = z.clone().requires_grad_(True)
    _reference(zz, activation).backward(grad)
    a, d1, _ = activate_with_derivatives(z, activation, 0.1)
    saved = {"gelu": z, "relu": z, "tanh": a, "smooth_relu": d1}[activation]
    out = torch.empty_like(z)
    got = activation_backward(grad, saved, activation, out=out)
    scale = float(zz.grad.abs().max())
    torch.testing.assert_close(got, zz.grad, rtol=0.0, atol=1e-15 * scale)
    # the hand-written σ′ (ensemble_curvature's) agrees with the fused kernels to rounding
    torch.testing.assert_close(got, grad * d1, rtol=0.0, atol=1e-14 * scale)
    # out may be grad itself (the chain's backward pass writes Δ in place)
    g2 = grad.clone()
    torch.testing.assert_close(activation_backward(g2, saved, activation, out=g2), got, rtol=0.0, atol=0.0)


def test_nan_and_none_pass_through():
    z = torch.tensor([float("nan"), 1.0], dtype=F64)
    grad = torch.ones_like(z)
    for activation in ("gelu", "tanh"):
        a = activate_into(z, activation, out=torch.empty_like(z))
        assert a[0].isnan() and not a[1].isnan()
        saved = a if activation == "tanh" else z
        d = activation_backward(grad, saved, activation, out=torch.empty_like(z))
        assert d[0].isnan() and not d[1].isnan()  # a diverged entry stays a NaN, it does not vanish
    assert activate_into(z, "none", out=torch.empty_like(z)) is z
    assert activation_backward(grad, z, "none", out=torch.empty_like(z)) is grad
    with pytest.raises(ValueError, match="unknown activation"):
        activate_into(z, "swish", out=torch.empty_like(z))
    with pytest.raises(ValueError, match="unknown activation"):
        activation_backward(grad, z, "swish", out=torch.empty_like(z))

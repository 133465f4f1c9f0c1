"""Architectures as data: a chain of bias-free linear maps with an optional activation between them.

Every model in the papers we reproduce is such a chain, so one description serves the single
model (:class:`~implicitlab.models.layered.LayeredNet`) and the batched ensemble
(:class:`~implicitlab.models.ensemble.Ensemble`), and both initialise from the *same* function with
a per-run ``torch.Generator`` — which is what makes run r of an ensemble equal to the same run
trained alone.

Kinds
-----
- ``"deep_linear"`` (Marion & Chizat 2024, "MLP"): W_1…W_{L−1} ∈ R^{width×·}, W_L ∈ R^{d_out×width},
  every entry ``init_scale · N(0, 1)`` (no fan-in scaling, as in the authors' code).
- ``"residual"`` (Marion & Chizat 2024): W_k = I + (s/√(L d)) N_k ∈ R^{d×d}, k = 1…L, and a fixed
  (untrained) random unit output vector w: f(x) = wᵀ W_L ⋯ W_1 x.
- ``"mlp"``: bias-free, activation between layers (``relu``, ``gelu``, ``smooth_relu``), entries
  ``init_scale · N(0, 1/fan_in)``. A deep linear net with GELU is ``kind="deep_linear",
  activation="gelu"`` (Marion & Chizat's GELU experiment keeps the deep-linear initialisation).

The smooth ReLU of Poggio et al. 2018 is x / (1 + e^{−x/ε²}) = x · σ(x/ε²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..config import ConfigError

Kind = Literal["deep_linear", "residual", "mlp"]
Activation = Literal["none", "relu", "gelu", "smooth_relu"]
ACTIVATIONS = ("none", "relu", "gelu", "smooth_relu")


def activate(h: torch.Tensor, activation: str, eps: float = 0.1) -> torch.Tensor:
    """Apply an activation by name (``"none"`` is the identity)."""
    if activation == "none":
        return h
    if activation == "relu":
        return torch.relu(h)
    if activation == "gelu":
        return torch.nn.functional.gelu(h)
    if activation == "smooth_relu":
        return h * torch.sigmoid(h / eps**2)
    raise ValueError(f"unknown activation {activation!r}; choose one of {list(ACTIVATIONS)}")


DIFFERENTIABLE = ("none", "relu", "gelu", "smooth_relu", "tanh")
"""Activations with written-out derivatives (:func:`activate_with_derivatives`). ``"tanh"`` is here for
the batched chains of :mod:`implicitlab.train.chain_grad`; :func:`activate` and :class:`Architecture`
do not offer it yet (their tests pin the set of activations)."""

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def activate_with_derivatives(
    z: torch.Tensor,
    activation: str,
    eps: float = 0.1,
    *,
    order: int = 1,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """σ(z), σ′(z) and (``order=2``) σ″(z), sharing the expensive parts (one erf, one exp for GELU).

    - ``"gelu"`` (the exact erf form of ``torch.nn.functional.gelu``, as :func:`activate` uses, not
      the tanh approximation): σ = zΦ(z), Φ(z) = ½(1 + erf(z/√2)); σ′ = Φ + zφ,
      φ(z) = e^{−z²/2}/√(2π); σ″ = φ(2 − z²).
    - ``"smooth_relu"``: σ = z s, s = sigmoid(z/ε²); σ′ = s + (z/ε²) s(1 − s);
      σ″ = s(1 − s)(2 + (z/ε²)(1 − 2s))/ε².
    - ``"relu"``: σ′ = 1[z > 0] (autograd's choice at 0), σ″ = 0.
    - ``"tanh"``: σ′ = 1 − σ², σ″ = −2σσ′.
    - ``"none"``: σ = z (the same tensor), σ′ = σ″ = None (the identity needs no product).

    Args:
        z: pre-activations, any shape.
        order: 1 (σ, σ′) or 2 (also σ″; None otherwise).
        out: optional buffers ``(σ, σ′, scratch)`` shaped and typed like z (a training loop reuses
            them from step to step: no allocation); z itself is left unchanged.
    """
    if activation == "none":
        return z, None, None
    if activation not in DIFFERENTIABLE:
        raise ValueError(f"unknown activation {activation!r}; choose one of {list(DIFFERENTIABLE)}")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    a, d1, t = out if out is not None else (torch.empty_like(z), torch.empty_like(z), torch.empty_like(z))
    second = None
    if activation == "gelu":
        torch.mul(z, _INV_SQRT2, out=t)  # u = z/√2
        torch.erf(t, out=d1)  # e = erf(u)
        t.mul_(t).neg_().exp_()  # e^{−z²/2} = √(2π) φ(z)
        torch.mul(z, 0.5, out=a)
        a.addcmul_(a, d1)  # σ = ½z(1 + e)
        if order == 2:
            second = torch.mul(z, z).neg_().add_(2.0).mul_(t).mul_(_INV_SQRT2PI)
        d1.mul_(0.5).add_(0.5).addcmul_(z, t, value=_INV_SQRT2PI)  # σ′ = Φ + zφ
    elif activation == "smooth_relu":
        scale = 1.0 / eps**2
        torch.mul(z, scale, out=t).sigmoid_()  # s
        torch.mul(z, t, out=a)  # σ = z s
        torch.sub(1.0, t, out=d1).mul_(t)  # s(1 − s)
        if order == 2:
            second = torch.mul(t, -2.0).add_(1.0).mul_(z).mul_(scale).add_(2.0).mul_(d1).mul_(scale)
        d1.mul_(z).mul_(scale).add_(t)  # σ′ = s + (z/ε²) s(1 − s)
    elif activation == "relu":
        torch.clamp(z, min=0.0, out=a)
        d1.copy_(z > 0)  # 1[z > 0] in z's dtype
        if order == 2:
            second = torch.zeros_like(z)
    else:  # tanh
        torch.tanh(z, out=a)
        torch.mul(a, a, out=d1).neg_().add_(1.0)
        if order == 2:
            second = torch.mul(a, d1).mul_(-2.0)
    return a, d1, second


def activate_into(z: torch.Tensor, activation: str, eps: float = 0.1, *, out: torch.Tensor) -> torch.Tensor:
    """σ(z) written into ``out`` (shaped and typed like z) with one fused kernel where PyTorch has one.

    The same numbers as :func:`activate` (``"gelu"`` is the same ``aten.gelu`` kernel, exact erf form;
    ``"relu"`` is max(z, 0)); ``"tanh"`` as in :data:`DIFFERENTIABLE`; ``"none"`` returns z itself.
    """
    if activation == "none":
        return z
    if activation == "gelu":
        return torch.ops.aten.gelu.out(z, out=out)
    if activation == "relu":
        return torch.clamp(z, min=0.0, out=out)
    if activation == "tanh":
        return torch.tanh(z, out=out)
    if activation == "smooth_relu":
        torch.div(z, eps**2, out=out).sigmoid_()  # as activate: z · sigmoid(z/ε²)
        return out.mul_(z)
    raise ValueError(f"unknown activation {activation!r}; choose one of {list(DIFFERENTIABLE)}")


def activation_backward(
    grad: torch.Tensor, saved: torch.Tensor, activation: str, *, out: torch.Tensor
) -> torch.Tensor:
    """grad ⊙ σ′(z) in one fused pass, from what the forward pass kept (``saved``); written into ``out``.

    ``saved`` is z itself for ``"gelu"`` (``aten.gelu_backward``: Φ(z) + zφ(z), exact erf form, the
    kernel autograd uses) and ``"relu"`` (``aten.threshold_backward``: grad where z > 0, else 0 — autograd's
    choice at 0), σ(z) for ``"tanh"`` (``aten.tanh_backward``: grad·(1 − σ²)) and σ′(z) itself for
    ``"smooth_relu"`` (no fused kernel: one product). ``out`` may be ``grad`` (an exact alias: each
    element is read before it is written). ``"none"`` returns grad.
    """
    if activation == "none":
        return grad
    if activation == "gelu":
        return torch.ops.aten.gelu_backward.grad_input(grad, saved, grad_input=out)
    if activation == "relu":
        return torch.ops.aten.threshold_backward.grad_input(grad, saved, 0.0, grad_input=out)
    if activation == "tanh":
        return torch.ops.aten.tanh_backward.grad_input(grad, saved, grad_input=out)
    if activation == "smooth_relu":
        return torch.mul(grad, saved, out=out)
    raise ValueError(f"unknown activation {activation!r}; choose one of {list(DIFFERENTIABLE)}")


@dataclass(frozen=True)
class Architecture:
    """A chain of bias-free linear layers.

    Args:
        kind: ``"deep_linear"``, ``"residual"`` or ``"mlp"``.
        d_in: input dimension d.
        depth: number of weight matrices L (≥ 1; L = 1 is a linear predictor).
        width: hidden width (default d_in; residual nets require width = d_in).
        d_out: output dimension (1 for regression and binary classification, C for classes).
        activation: between layers (never after the last one).
        eps: the smooth ReLU's ε.
    """

    kind: Kind = "deep_linear"
    d_in: int = 5
    depth: int = 10
    width: int | None = None
    d_out: int = 1
    activation: Activation = "none"
    eps: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in ("deep_linear", "residual", "mlp"):
            raise ConfigError(f"unknown architecture kind {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {list(ACTIVATIONS)}")
        for name in ("d_in", "depth", "d_out"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.width is not None and self.width < 1:
            raise ConfigError(f"width must be ≥ 1, got {self.width}")
        if self.kind == "residual" and self.hidden != self.d_in:
            raise ConfigError("a residual network needs width == d_in")
        if self.eps <= 0:
            raise ConfigError(f"eps must be positive, got {self.eps}")

    @property
    def hidden(self) -> int:
        return self.width if self.width is not None else self.d_in

    def shapes(self) -> list[tuple[int, int]]:
        """(out, in) of each trained weight matrix, first layer first."""
        if self.kind == "residual":
            return [(self.d_in, self.d_in)] * self.depth
        dims = [self.d_in] + [self.hidden] * (self.depth - 1) + [self.d_out]
        return [(dims[k + 1], dims[k]) for k in range(self.depth)]

    @property
    def num_params(self) -> int:
        return sum(o * i for o, i in self.shapes())

    def init(
        self,
        init_scale: float,
        seed: int,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Initial weights (list of (out, in) tensors) and the fixed head (or None) of one run.

        Random numbers come from a CPU ``torch.Generator`` seeded with ``seed`` in float64 and are
        then cast and moved, so a run's initialisation is the same on every device and dtype.
        """
        gen = torch.Generator().manual_seed(int(seed))
        weights = []
        head = None
        if self.kind == "residual":
            d, L = self.d_in, self.depth
            for o, i in self.shapes():
                noise = torch.randn(o, i, generator=gen, dtype=torch.float64)
                weights.append(torch.eye(d, dtype=torch.float64) + init_scale / math.sqrt(L * d) * noise)
            w = torch.randn(self.d_out, d, generator=gen, dtype=torch.float64)
            head = (w / w.norm(dim=-1, keepdim=True)).to(device=device, dtype=dtype)
        else:
            for o, i in self.shapes():
                std = init_scale / math.sqrt(i) if self.kind == "mlp" else init_scale
                weights.append(std * torch.randn(o, i, generator=gen, dtype=torch.float64))
        return [w.to(device=device, dtype=dtype) for w in weights], head

"""One run: a chain of bias-free linear layers as an ordinary ``nn.Module``.

Works with every diagnostic written for a generic PyTorch model (HVPs, Lanczos) and is what
:meth:`Ensemble.member` returns.
"""

from __future__ import annotations

import torch
from torch import nn

from .architecture import Architecture, activate


class LayeredNet(nn.Module):
    """f(x) = [head ·] W_L σ(⋯ σ(W_1 x)) with weights ``(out, in)`` and no biases.

    Args:
        arch: the architecture.
        weights: initial weight matrices, first layer first (copied into parameters).
        head: fixed (untrained) output matrix ``(d_out, d)`` of residual nets, or None.

    ``forward(X)``: X ``(n, d_in)`` → outputs ``(n, d_out)``.
    """

    def __init__(self, arch: Architecture, weights: list[torch.Tensor], head: torch.Tensor | None = None):
        super().__init__()
        self.arch = arch
        self.weights = nn.ParameterList([nn.Parameter(w.detach().clone()) for w in weights])
        if head is not None:
            self.register_buffer("head", head.detach().clone())
        else:
            self.head = None

    @classmethod
    def create(cls, arch: Architecture, init_scale: float, seed: int, dtype=torch.float64, device="cpu") -> "LayeredNet":
        weights, head = arch.init(init_scale, seed, dtype=dtype, device=device)
        return cls(arch, weights, head)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        h = X  # (n, d_in)
        last = len(self.weights) - 1
        for k, W in enumerate(self.weights):
            h = h @ W.T  # (n, out_k)
            if k < last:
                h = activate(h, self.arch.activation, self.arch.eps)
        if self.head is not None:
            h = h @ self.head.T  # (n, d_out)
        return h

    def layer_weights(self) -> list[torch.Tensor]:
        return list(self.weights)

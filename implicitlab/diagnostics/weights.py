"""The weight matrices of a model, for diagnostics that act on layers.

``LayeredNet`` and ``Ensemble`` expose ``layer_weights()``; any other ``nn.Module`` contributes its
parameters with two or more dimensions in registration order, each flattened to ``(out, -1)``
(a convolution's kernel becomes out_channels × (in_channels·k·k)). Biases are skipped: the
papers' homogeneity statements are about bias-free networks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def layer_weights(model: nn.Module | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Layer matrices ``(…, out, in)``; a leading run dimension is kept for ensembles."""
    if isinstance(model, (list, tuple)):
        ws = list(model)
    elif hasattr(model, "layer_weights"):
        ws = list(model.layer_weights())
    elif isinstance(model, nn.Module):
        ws = [p.reshape(p.shape[0], -1) for p in model.parameters() if p.ndim >= 2]
    else:
        raise TypeError(f"expected an nn.Module or a list of weight tensors, got {type(model).__name__}")
    if not ws:
        raise ValueError("the model has no weight matrices (parameters with ≥ 2 dimensions)")
    return ws


def split_finite(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W with non-finite matrices zeroed, mask ``(…)`` of the finite ones).

    SVD-based diagnostics fail on a NaN matrix; a diverged run of an ensemble must give NaN for
    that run only, not an error for all.
    """
    ok = torch.isfinite(W).flatten(-2).all(-1)
    return torch.where(ok[..., None, None], W, torch.zeros_like(W)), ok


def nan_where_not(ok: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` with NaN where ``ok`` is False (``ok`` broadcasts over trailing dims)."""
    while ok.ndim < values.ndim:
        ok = ok.unsqueeze(-1)
    return torch.where(ok, values, torch.full_like(values, float("nan")))

"""Per-layer norms and their products.

For an L-layer bias-free network the output scales as ∏_k ‖W_k‖ (multi-homogeneity); Poggio et
al. 2018 (Sec. 12–14) and Lyu & Li 2020 normalise by this product or by ‖θ‖^L.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .weights import layer_weights, nan_where_not, split_finite


@dataclass(frozen=True)
class LayerNorms:
    """Norms of each layer; every field has the leading run dimension of the model (if any).

    Attributes:
        frobenius: ``(…, L)`` ‖W_k‖_F.
        spectral: ``(…, L)`` ‖W_k‖_2 (largest singular value).
        frobenius_product: ``(…,)`` ∏_k ‖W_k‖_F.
        spectral_product: ``(…,)`` ∏_k ‖W_k‖_2.
        param_norm: ``(…,)`` ‖θ‖ = (Σ_k ‖W_k‖_F²)^{1/2}.
    """

    frobenius: torch.Tensor
    spectral: torch.Tensor
    frobenius_product: torch.Tensor
    spectral_product: torch.Tensor
    param_norm: torch.Tensor


@torch.no_grad()
def layer_norms(model: nn.Module | list[torch.Tensor]) -> LayerNorms:
    """Frobenius and spectral norms of every layer, their products and ‖θ‖."""
    ws = layer_weights(model)
    fro = torch.stack([torch.linalg.matrix_norm(W, ord="fro") for W in ws], dim=-1)
    spec = torch.stack([nan_where_not(ok, torch.linalg.matrix_norm(Wf, ord=2))
                        for Wf, ok in map(split_finite, ws)], dim=-1)
    return LayerNorms(
        frobenius=fro,
        spectral=spec,
        frobenius_product=fro.prod(-1),
        spectral_product=spec.prod(-1),
        param_norm=fro.pow(2).sum(-1).sqrt(),
    )

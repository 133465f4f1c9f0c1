"""Per-layer norms and their products.

For an L-layer bias-free network the output scales as ∏_k ‖W_k‖ (multi-homogeneity); Poggio et
al. 2018 (Sec. 12–14) and Lyu & Li 2020 normalise by this product or by ‖θ‖^L.

Layers are found in forward order (:func:`~implicitlab.diagnostics.weights.layer_weights`); a
convolution's norms are those of its kernel reshaped to ``(out, in·k·k)`` — the Frobenius norm is the
kernel's, the spectral norm is the reshape's (not the operator norm of the convolution). The norms
are defined for any model; only their reading as a margin proxy needs homogeneity, and
:func:`~implicitlab.diagnostics.margin.normalized_margin` warns where it fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .weights import layer_weights, nan_where_not, param_norm, split_finite


@dataclass(frozen=True)
class LayerNorms:
    """Norms of each layer; every field has the leading run dimension of the model (if any).

    Attributes:
        frobenius: ``(…, L)`` ‖W_k‖_F.
        spectral: ``(…, L)`` ‖W_k‖_2 (largest singular value).
        frobenius_product: ``(…,)`` ∏_k ‖W_k‖_F.
        spectral_product: ``(…,)`` ∏_k ‖W_k‖_2.
        param_norm: ``(…,)`` ‖θ‖ over **all** parameters of the model (biases, batch-norm scales
            included); = (Σ_k ‖W_k‖_F²)^{1/2} for a bias-free chain or a list of matrices.
    """

    frobenius: torch.Tensor
    spectral: torch.Tensor
    frobenius_product: torch.Tensor
    spectral_product: torch.Tensor
    param_norm: torch.Tensor


@torch.no_grad()
def layer_norms(model: nn.Module | list[torch.Tensor]) -> LayerNorms:
    """Frobenius and spectral norms of every layer (forward order), their products and ‖θ‖."""
    ws = layer_weights(model)
    fro = torch.stack([torch.linalg.matrix_norm(W, ord="fro") for W in ws], dim=-1)
    spec = torch.stack([nan_where_not(ok, torch.linalg.matrix_norm(Wf, ord=2))
                        for Wf, ok in map(split_finite, ws)], dim=-1)
    return LayerNorms(
        frobenius=fro,
        spectral=spec,
        frobenius_product=fro.prod(-1),
        spectral_product=spec.prod(-1),
        param_norm=fro.pow(2).sum(-1).sqrt() if isinstance(model, (list, tuple)) or hasattr(model, "layer_weights")
        else param_norm(model),
    )

"""Balancedness, stable rank and alignment of consecutive layers.

Ji & Telgarsky (ICLR 2019): for deep linear networks on separable data, W_k/‖W_k‖_F tends to rank
one (‖W_k‖_2/‖W_k‖_F → 1) and consecutive layers align, |v_{k+1}ᵀ u_k| → 1, where u_k is the top
left singular vector of W_k and v_{k+1} the top right singular vector of W_{k+1}. Gradient flow
conserves the balancedness matrices D_k = W_{k+1}ᵀW_{k+1} − W_k W_kᵀ (Arora et al. 2018; Du et al.
2018), which makes the layers' norms grow together.

Layers are taken in forward order (:mod:`.weights`). Balancedness and alignment relate consecutive
fully connected layers: a plain module with a convolution is refused, naming the layer (a reshaped
kernel is not the layer's linear map). Stable rank and the rank-one ratio are per-layer and defined
for a convolution's kernel reshaped to ``(out, in·k·k)``.
"""

from __future__ import annotations

import torch
from torch import nn

from .weights import layer_weights, matrix_layers, nan_where_not, split_finite, warn_if_not_homogeneous


@torch.no_grad()
def balancedness(model: nn.Module | list[torch.Tensor]) -> list[torch.Tensor]:
    """D_k = W_{k+1}ᵀW_{k+1} − W_k W_kᵀ for k = 1…L−1, each ``(…, d_k, d_k)``.

    Conserved by gradient flow when the model is positively homogeneous layer by layer (no biases,
    batch norm or residual connections): otherwise a :class:`~.weights.NotHomogeneousWarning` names
    the cause (the matrices are still returned). Convolutions are refused (module docstring).
    """
    ws = matrix_layers(model, "balancedness")
    warn_if_not_homogeneous(model, "balancedness (conserved by gradient flow)")
    return [ws[k + 1].mT @ ws[k + 1] - ws[k] @ ws[k].mT for k in range(len(ws) - 1)]


@torch.no_grad()
def stable_rank(model: nn.Module | list[torch.Tensor]) -> torch.Tensor:
    """‖W_k‖_F² / ‖W_k‖_2² per layer ``(…, L)``: 1 for a rank-one matrix, the rank for a flat spectrum."""
    out = []
    for W in layer_weights(model):
        Wf, ok = split_finite(W)
        ratio = torch.linalg.matrix_norm(Wf, "fro") ** 2 / torch.linalg.matrix_norm(Wf, 2) ** 2
        out.append(nan_where_not(ok, ratio))
    return torch.stack(out, -1)


@torch.no_grad()
def rank_one_ratio(model: nn.Module | list[torch.Tensor]) -> torch.Tensor:
    """‖W_k‖_2 / ‖W_k‖_F per layer ``(…, L)`` (→ 1 when W_k tends to rank one)."""
    return stable_rank(model).rsqrt()


@torch.no_grad()
def alignment(model: nn.Module | list[torch.Tensor]) -> torch.Tensor:
    """|v_{k+1}ᵀ u_k| for consecutive layers ``(…, L−1)``.

    u_k: top left singular vector of W_k (``(…, out_k)``); v_{k+1}: top right singular vector of
    W_{k+1} (``(…, in_{k+1})`` = ``(…, out_k)``). The sign ambiguity of singular vectors is removed
    by the absolute value. When the top singular value is (nearly) repeated the vectors are not
    determined and the number means little: check the stable rank alongside.
    """
    ws = matrix_layers(model, "alignment")
    if len(ws) < 2:
        return torch.empty(*ws[0].shape[:-2], 0, dtype=ws[0].dtype, device=ws[0].device)
    parts = [split_finite(W) for W in ws]
    tops = [torch.linalg.svd(Wf, full_matrices=False) for Wf, _ in parts]
    out = []
    for k in range(len(ws) - 1):
        u_k = tops[k].U[..., :, 0]  # (…, out_k)
        v_next = tops[k + 1].Vh[..., 0, :]  # (…, in_{k+1})
        out.append(nan_where_not(parts[k][1] & parts[k + 1][1], (u_k * v_next).sum(-1).abs()))
    return torch.stack(out, -1)

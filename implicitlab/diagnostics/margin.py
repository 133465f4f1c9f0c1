"""Normalized margins of (multi-)homogeneous networks.

For a bias-free L-layer network f(θ; x) with positive homogeneity f(cθ; x) = c^L f(θ; x), the
normalized margin γ̄(θ) = min_n y_n f(θ; x_n) / ‖θ‖^L (Lyu & Li, ICLR 2020) — or, per layer,
min_n y_n f(x_n) / ∏_k ‖W_k‖ (Poggio et al. 2018, Sec. 12: f = ∏_k ρ_k f̃) — is invariant to
rescaling the weights. Under gradient descent on an exponential-type loss it is (nearly)
non-decreasing once the data are fitted, and converges to a KKT value of the max-margin problem.
For C > 1 outputs the margin of example n is f_{y_n}(x_n) − max_{j≠y_n} f_j(x_n).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..losses import margins
from .norms import layer_norms
from .weights import layer_weights


@torch.no_grad()
def normalized_margin(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    normalization: Literal["frobenius", "spectral", "param"] = "frobenius",
) -> torch.Tensor:
    """min_n y_n f(x_n) divided by ∏_k ‖W_k‖_F (default), ∏_k ‖W_k‖_2, or ‖θ‖^L.

    Args:
        model: a ``LayeredNet``, an ``Ensemble`` (one value per run) or any bias-free module
            whose layers :func:`layer_weights` finds.
        X: ``(n, d)`` inputs; y: ``(n,)`` labels in {−1, +1} (scalar output) or class indices.
    Returns:
        a scalar tensor, or ``(R,)`` for an ensemble. Negative when some example is misclassified.
    """
    if X.shape[0] == 0:
        raise ValueError("normalized_margin needs at least one example")
    out = model(X)
    m = margins(out, y.to(out.device)).amin(-1)
    norms = layer_norms(model)
    if normalization == "frobenius":
        denom = norms.frobenius_product
    elif normalization == "spectral":
        denom = norms.spectral_product
    elif normalization == "param":
        denom = norms.param_norm ** len(layer_weights(model))
    else:
        raise ValueError(f"unknown normalization {normalization!r}")
    return m / denom


@torch.no_grad()
def min_margin(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """min_n y_n f(x_n) (unnormalized), per run for an ensemble."""
    out = model(X)
    return margins(out, y.to(out.device)).amin(-1)

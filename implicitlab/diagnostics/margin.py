"""Normalized margins of (multi-)homogeneous networks.

For a bias-free L-layer network f(θ; x) with positive homogeneity f(cθ; x) = c^L f(θ; x), the
normalized margin γ̄(θ) = min_n y_n f(θ; x_n) / ‖θ‖^L (Lyu & Li, ICLR 2020) — or, per layer,
min_n y_n f(x_n) / ∏_k ‖W_k‖ (Poggio et al. 2018, Sec. 12: f = ∏_k ρ_k f̃) — is invariant to
rescaling the weights. Under gradient descent on an exponential-type loss it is (nearly)
non-decreasing once the data are fitted, and converges to a KKT value of the max-margin problem.
For C > 1 outputs the margin of example n is f_{y_n}(x_n) − max_{j≠y_n} f_j(x_n).

What is refused before any forward pass: non-finite inputs (count and first row named), labels
other than −1/+1 for a scalar output or class indices in [0, C) for C outputs
(:func:`implicitlab.losses.check_targets`; labels in {0, 1} would give class 0 the margin 0), a
module whose layers cannot be found in forward order. What is warned
(:class:`~.weights.NotHomogeneousWarning`, once per call): a model that is not positively homogeneous
(biases, batch norm, residual connections, GELU…), for which the normalized margin is not invariant
to θ → cθ. The model is evaluated in eval mode and its mode restored; nothing in it is changed.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..losses import margins
from .norms import layer_norms
from .weights import named_layer_weights, warn_if_not_homogeneous


def _check_inputs(X: torch.Tensor, what: str) -> None:
    """At least one example, and every entry finite (else the count and the first bad row)."""
    if X.ndim == 0 or X.numel() == 0:
        raise ValueError(f"{what} needs at least one example")
    bad = ~torch.isfinite(X)
    if bool(bad.any()):
        first = int(torch.nonzero(bad.reshape(X.shape[0], -1).any(1))[0, 0])
        raise ValueError(
            f"X holds {int(bad.sum())} non-finite entries (NaN or inf), the first in row {first}: "
            f"{what} needs finite inputs"
        )


def _outputs(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """f(X) in eval mode (batch norm with its running statistics, no dropout), the mode restored."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        return model(X)
    finally:
        for m, mode in modes.items():
            m.training = mode


@torch.no_grad()
def normalized_margin(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    normalization: Literal["frobenius", "spectral", "param"] = "frobenius",
) -> torch.Tensor:
    """min_n y_n f(x_n) divided by ∏_k ‖W_k‖_F (default), ∏_k ‖W_k‖_2, or ‖θ‖^L.

    Args:
        model: a ``LayeredNet``, an ``Ensemble`` (one value per run) or any module whose layers
            :func:`~.weights.layer_weights` finds (in forward order). L is the degree of
            homogeneity (the depth of a chain, read from the trace of a plain module; the number
            of layers when the model is not homogeneous, which is warned about).
        X: ``(n, d)`` inputs (finite); y: ``(n,)`` labels in {−1, +1} (scalar output) or class
            indices in [0, C) (C outputs); other labels are refused (``y = 2*y - 1`` maps {0, 1}).
    Returns:
        a scalar tensor, or ``(R,)`` for an ensemble. Negative when some example is misclassified.
    Warns:
        NotHomogeneousWarning: the model is not positively homogeneous (biases, batch norm,
        residual connections, non-homogeneous activations): the value is then not invariant to θ → cθ.
    """
    if normalization not in ("frobenius", "spectral", "param"):
        raise ValueError(f"unknown normalization {normalization!r}; use 'frobenius', 'spectral' or 'param'")
    _check_inputs(X, "normalized_margin")
    num_layers = len(named_layer_weights(model))  # refuses an untraceable module before the forward pass
    out = _outputs(model, X)
    m = margins(out, y.to(out.device)).amin(-1)  # refuses labels that are not ±1 / class indices
    degree = warn_if_not_homogeneous(model, "normalized_margin (invariant to θ → cθ)")
    norms = layer_norms(model)
    if normalization == "frobenius":
        denom = norms.frobenius_product
    elif normalization == "spectral":
        denom = norms.spectral_product
    else:
        denom = norms.param_norm ** (degree if degree is not None else num_layers)
    return m / denom


@torch.no_grad()
def min_margin(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """min_n y_n f(x_n) (unnormalized), per run for an ensemble; inputs and labels checked as in
    :func:`normalized_margin`, the model evaluated in eval mode."""
    _check_inputs(X, "min_margin")
    out = _outputs(model, X)
    return margins(out, y.to(out.device)).amin(-1)

"""Diagnostics: norms, margins, balancedness and alignment (and curvature, see hessian/eigen)."""

from .alignment import alignment, balancedness, rank_one_ratio, stable_rank
from .margin import min_margin, normalized_margin
from .norms import LayerNorms, layer_norms
from .weights import layer_weights

__all__ = [
    "LayerNorms",
    "alignment",
    "balancedness",
    "layer_norms",
    "layer_weights",
    "min_margin",
    "normalized_margin",
    "rank_one_ratio",
    "stable_rank",
]

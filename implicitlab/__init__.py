"""implicitlab: measure the implicit regularization of gradient descent.

Public API, grouped: models, losses, training, diagnostics, references, experiments.
"""

from .version import __version__

from .diagnostics import (
    HessianOperator,
    SharpnessTracker,
    alignment,
    ensemble_sharpness,
    explicit_hessian,
    hessian_vector_product,
    sharpness,
    spectrum_counts,
    balancedness,
    layer_norms,
    normalized_margin,
    rank_one_ratio,
    stable_rank,
)
from .losses import log_loss, loss, margins
from .models import Architecture, Ensemble, LayeredNet
from .references import (
    MinNormResult,
    deep_linear_sharpness_bound,
    SVMResult,
    angle_to,
    margin_gap,
    min_norm_solution,
    null_space_projector,
    row_space_projector,
    solve_norm_growth,
    svm_max_margin,
    svm_max_margin_nnls,
)
from .train import every, gradient_descent, log_spaced

__all__ = [
    "Architecture",
    "HessianOperator",
    "SharpnessTracker",
    "deep_linear_sharpness_bound",
    "ensemble_sharpness",
    "explicit_hessian",
    "hessian_vector_product",
    "sharpness",
    "spectrum_counts",
    "MinNormResult",
    "SVMResult",
    "angle_to",
    "margin_gap",
    "min_norm_solution",
    "null_space_projector",
    "row_space_projector",
    "solve_norm_growth",
    "svm_max_margin",
    "svm_max_margin_nnls",
    "Ensemble",
    "LayeredNet",
    "__version__",
    "alignment",
    "balancedness",
    "every",
    "layer_norms",
    "log_loss",
    "log_spaced",
    "loss",
    "margins",
    "normalized_margin",
    "rank_one_ratio",
    "stable_rank",
    "gradient_descent",
]

"""Exact float64 references: the hard-margin SVM, minimum-norm least squares, the norm-growth ODE.

numpy/scipy/clarabel only; torch tensors are accepted as inputs and converted.
"""

from .deep_linear import DeepLinearSharpnessBound, deep_linear_minimizer_sharpness, deep_linear_sharpness_bound
from .growth_ode import (
    NormGrowthSolution,
    excess_over_log,
    gd_norm_growth,
    product_norm_asymptotic,
    product_norm_k1,
    product_norm_k2_balanced,
    solve_norm_growth,
)
from .min_norm import MinNormResult, min_norm_solution, null_space_projector, row_space_projector
from .svm import SVMResult, angle_to, margin_gap, svm_max_margin, svm_max_margin_nnls

__all__ = [
    "DeepLinearSharpnessBound",
    "deep_linear_minimizer_sharpness",
    "deep_linear_sharpness_bound",
    "MinNormResult",
    "NormGrowthSolution",
    "SVMResult",
    "angle_to",
    "excess_over_log",
    "gd_norm_growth",
    "margin_gap",
    "min_norm_solution",
    "null_space_projector",
    "product_norm_asymptotic",
    "product_norm_k1",
    "product_norm_k2_balanced",
    "row_space_projector",
    "solve_norm_growth",
    "svm_max_margin",
    "svm_max_margin_nnls",
]

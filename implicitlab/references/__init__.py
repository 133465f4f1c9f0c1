"""Exact references: the hard-margin SVM, minimum-norm least squares (float64, and in high precision
for monomial features), deep-linear sharpness at minimizers, the norm-growth ODE.

float64 throughout (numpy/scipy/clarabel; torch for the deep-linear quantities), except
:func:`monomial_min_norm_exact`, which works in mpmath at a chosen number of digits. Torch tensors
are accepted as inputs and converted.
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
from .min_norm_exact import ExactMinNormFit, monomial_min_norm_exact
from .svm import SVMResult, angle_to, margin_gap, svm_max_margin, svm_max_margin_nnls

__all__ = [
    "DeepLinearSharpnessBound",
    "ExactMinNormFit",
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
    "monomial_min_norm_exact",
    "null_space_projector",
    "product_norm_asymptotic",
    "product_norm_k1",
    "product_norm_k2_balanced",
    "row_space_projector",
    "solve_norm_growth",
    "svm_max_margin",
    "svm_max_margin_nnls",
]

"""implicitlab: measure the implicit regularization of gradient descent.

The public API, grouped as below (every name is also importable from its subpackage):

- **models**: ``Architecture`` (chains of bias-free layers), ``LayeredNet`` (one run),
  ``Ensemble`` (R runs as one batched model).
- **losses**: ``loss``, ``log_loss`` (exact log-domain form), ``margins``, ``SquareLossStats``.
- **training**: ``gradient_descent(model, loss, X, y, *, lr, num_steps, ...)`` (GD, SGD,
  normalized GD on an ensemble), ``TrainResult``, probe schedules ``every``, ``log_spaced``.
- **diagnostics**: norms, margins, balancedness, alignment (``homogeneity`` says whether their
  meaning holds for a model; ``MarginNormTracker`` follows them along training); curvature of any ``nn.Module``
  (``sharpness(model, loss, X, y, *, ...)``, ``HessianOperator``, ``SharpnessTracker``,
  ``lanczos_eigenpairs`` and its ``EigenResult``, ``explicit_hessian``, ``hessian_spectrum``,
  ``spectrum_counts``, ``slq_spectral_density``, ``hutchinson_trace``, ``hutchpp_trace``) and of
  every run of an ensemble (``ensemble_sharpness``).
- **references**: exact values to compare with — the hard-margin SVM, min-norm solutions and
  projectors, deep-linear sharpness at minimizers, the norm-growth ODE.

Experiments, sweeps and the report are in :mod:`implicitlab.experiments`, :mod:`implicitlab.sweep`
and :mod:`implicitlab.check`; the command line is ``implicitlab`` (:mod:`implicitlab.cli`).
"""

from .version import __version__

# models
from .models import Architecture, Ensemble, LayeredNet

# losses
from .losses import SquareLossStats, log_loss, loss, margins

# training
from .train import TrainResult, every, gradient_descent, log_spaced

# diagnostics: weights, margins
from .diagnostics import (
    LayerNorms,
    MarginNormTracker,
    NotHomogeneousWarning,
    alignment,
    balancedness,
    homogeneity,
    layer_norms,
    min_margin,
    normalized_margin,
    rank_one_ratio,
    stable_rank,
)

# diagnostics: curvature
from .diagnostics import (
    EigenResult,
    HessianOperator,
    SharpnessTracker,
    SpectralDensity,
    SpectrumCounts,
    TraceEstimate,
    ensemble_sharpness,
    explicit_hessian,
    hessian_spectrum,
    hessian_vector_product,
    hutchinson_trace,
    hutchpp_trace,
    lanczos_eigenpairs,
    sharpness,
    slq_spectral_density,
    spectrum_counts,
)

# references
from .references import (
    DeepLinearSharpnessBound,
    MinNormResult,
    NormGrowthSolution,
    SVMResult,
    angle_to,
    deep_linear_minimizer_sharpness,
    deep_linear_sharpness_bound,
    margin_gap,
    min_norm_solution,
    null_space_projector,
    row_space_projector,
    solve_norm_growth,
    svm_max_margin,
    svm_max_margin_nnls,
)

__all__ = [
    "__version__",
    # models
    "Architecture",
    "Ensemble",
    "LayeredNet",
    # losses
    "SquareLossStats",
    "log_loss",
    "loss",
    "margins",
    # training
    "TrainResult",
    "every",
    "gradient_descent",
    "log_spaced",
    # diagnostics: weights, margins
    "LayerNorms",
    "MarginNormTracker",
    "NotHomogeneousWarning",
    "alignment",
    "balancedness",
    "homogeneity",
    "layer_norms",
    "min_margin",
    "normalized_margin",
    "rank_one_ratio",
    "stable_rank",
    # diagnostics: curvature
    "EigenResult",
    "HessianOperator",
    "SharpnessTracker",
    "SpectralDensity",
    "SpectrumCounts",
    "TraceEstimate",
    "ensemble_sharpness",
    "explicit_hessian",
    "hessian_spectrum",
    "hessian_vector_product",
    "hutchinson_trace",
    "hutchpp_trace",
    "lanczos_eigenpairs",
    "sharpness",
    "slq_spectral_density",
    "spectrum_counts",
    # references
    "DeepLinearSharpnessBound",
    "MinNormResult",
    "NormGrowthSolution",
    "SVMResult",
    "angle_to",
    "deep_linear_minimizer_sharpness",
    "deep_linear_sharpness_bound",
    "margin_gap",
    "min_norm_solution",
    "null_space_projector",
    "row_space_projector",
    "solve_norm_growth",
    "svm_max_margin",
    "svm_max_margin_nnls",
]

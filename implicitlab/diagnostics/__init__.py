"""Diagnostics: norms, margins, balancedness and alignment; curvature.

Curvature: Hessian–vector products (:mod:`.hessian`), one Lanczos for one model or a batch of runs
(:mod:`.lanczos`: ``lanczos_eigenpairs``, ``EigenResult``, ``WarmStart``), sharpness of a model
(:mod:`.eigen`) or of every run of an ensemble (:mod:`.ensemble_curvature`), tracked along training
(:mod:`.tracking`), spectra and traces (:mod:`.spectrum`).
"""

from .alignment import alignment, balancedness, rank_one_ratio, stable_rank
from .eigen import power_iteration, sharpness
from .ensemble_curvature import (
    EnsembleHessian,
    MidpointSharpnessProbe,
    SharpnessProbe,
    ensemble_sharpness,
)
from .determinism import NondeterministicHessianError
from .distributed import DistributedError
from .hessian import HessianOperator, hessian_vector_product
from .spectrum import (
    SpectralDensity,
    SpectrumCounts,
    TraceEstimate,
    explicit_hessian,
    hessian_spectrum,
    hutchinson_trace,
    hutchpp_trace,
    slq_spectral_density,
    spectrum_counts,
)
from .lanczos import EigenResult, Lanczos, WarmStart, check_curvature_dtype, lanczos_eigenpairs
from .tracking import SharpnessTracker
from .weight_tracking import MarginNormTracker
from .margin import min_margin, normalized_margin
from .norms import LayerNorms, layer_norms
from .weights import NotHomogeneousWarning, homogeneity, layer_weights

__all__ = [
    "DistributedError",
    "EigenResult",
    "EnsembleHessian",
    "HessianOperator",
    "Lanczos",
    "MidpointSharpnessProbe",
    "NondeterministicHessianError",
    "SharpnessProbe",
    "SharpnessTracker",
    "SpectralDensity",
    "SpectrumCounts",
    "TraceEstimate",
    "WarmStart",
    "ensemble_sharpness",
    "explicit_hessian",
    "hessian_spectrum",
    "hessian_vector_product",
    "hutchinson_trace",
    "hutchpp_trace",
    "lanczos_eigenpairs",
    "power_iteration",
    "sharpness",
    "slq_spectral_density",
    "spectrum_counts",
    "LayerNorms",
    "alignment",
    "balancedness",
    "layer_norms",
    "layer_weights",
    "NotHomogeneousWarning",
    "MarginNormTracker",
    "check_curvature_dtype",
    "homogeneity",
    "min_margin",
    "normalized_margin",
    "rank_one_ratio",
    "stable_rank",
]

"""Data: synthetic sets of the theory and scikit-learn's bundled sets."""

from .synthetic import gaussian_regression, separable_through_origin
from .tabular import digits_binary

__all__ = ["digits_binary", "gaussian_regression", "separable_through_origin"]

"""Data: synthetic sets of the theory, scikit-learn's bundled sets, CIFAR-10 and MNIST."""

from .synthetic import gaussian_regression, marion_chizat_regression, separable_through_origin
from .tabular import digits_binary
from .vision import (
    CIFAR10_CLASSES,
    DataError,
    Standardized,
    balanced_subset,
    load_cifar10,
    load_mnist,
    random_label_mask,
    randomize_labels,
    resolve_cache_dir,
    resolve_data_root,
    standardize,
)

__all__ = [
    "CIFAR10_CLASSES",
    "DataError",
    "Standardized",
    "balanced_subset",
    "digits_binary",
    "gaussian_regression",
    "load_cifar10",
    "load_mnist",
    "marion_chizat_regression",
    "random_label_mask",
    "randomize_labels",
    "resolve_cache_dir",
    "resolve_data_root",
    "separable_through_origin",
    "standardize",
]

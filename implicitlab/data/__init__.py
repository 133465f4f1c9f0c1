"""Data: synthetic sets of the theory, scikit-learn's bundled sets, CIFAR-10 and MNIST from local files.

Modules: ``synthetic`` (generated sets), ``tabular`` (scikit-learn), ``cifar10`` and ``mnist``
(loaders; ``unpickle`` is CIFAR's restricted unpickler, ``cache`` the decoded-array cache),
``paths`` (data root, cache folder), ``checks`` (``DataError``), ``subsets`` (balanced subsets,
random labels), ``standardization``.
"""

# generated and bundled sets
from .synthetic import gaussian_regression, marion_chizat_regression, separable_through_origin
from .tabular import digits_binary

# image sets from local files
from .checks import DataError
from .cifar10 import CIFAR10_CLASSES, load_cifar10
from .mnist import load_mnist
from .paths import resolve_cache_dir, resolve_data_root

# what is done with them
from .standardization import Standardized, standardize
from .subsets import balanced_subset, random_label_mask, randomize_labels

__all__ = [
    # generated and bundled sets
    "digits_binary",
    "gaussian_regression",
    "marion_chizat_regression",
    "separable_through_origin",
    # image sets from local files
    "CIFAR10_CLASSES",
    "DataError",
    "load_cifar10",
    "load_mnist",
    "resolve_cache_dir",
    "resolve_data_root",
    # what is done with them
    "Standardized",
    "balanced_subset",
    "random_label_mask",
    "randomize_labels",
    "standardize",
]

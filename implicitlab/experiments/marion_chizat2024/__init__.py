"""Marion & Chizat 2024: deep linear networks for regression are implicitly regularized towards flat minima."""

from . import extra, fig1, resnet  # noqa: F401  (register every mc2024-* experiment)

"""Marion & Chizat 2024: deep linear networks for regression are implicitly regularized towards flat minima."""

from . import fig1  # noqa: F401  (registers mc2024-fig1 and mc2024-fig3)

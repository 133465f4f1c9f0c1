"""Soudry et al. 2018: the implicit bias of GD on separable data (linear predictors)."""

from . import linear  # noqa: F401  (registers soudry2018-linear)

"""Soudry et al. 2018: the implicit bias of GD on separable data (linear predictors).

One experiment per module; the list of experiments is in :mod:`implicitlab.experiments`."""

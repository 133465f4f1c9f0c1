"""Marion & Chizat 2024: deep linear networks for regression are implicitly regularized towards flat minima.

One experiment per module; the list of experiments is in :mod:`implicitlab.experiments`."""

"""Poggio et al. 2018, Theory IIIb: generalization in deep networks.

One experiment per module; the list of experiments is in :mod:`implicitlab.experiments`."""

"""Poggio et al. 2018, Theory IIIb: generalization in deep networks."""

from . import fig7  # noqa: F401  (registers poggio2018-fig7)

"""Poggio et al. 2018, Theory IIIb: generalization in deep networks."""

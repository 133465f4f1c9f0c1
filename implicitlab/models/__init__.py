"""Models: architectures as data, a single run (``LayeredNet``) and many runs (``Ensemble``)."""

from .architecture import ACTIVATIONS, Architecture, activate
from .ensemble import Ensemble
from .layered import LayeredNet

__all__ = ["ACTIVATIONS", "Architecture", "Ensemble", "LayeredNet", "activate"]

"""Models: architectures as data, a single run (``LayeredNet``), many runs (``Ensemble``), the papers' CNNs."""

from .architecture import ACTIVATIONS, Architecture, activate
from .convnet import ConvNet, num_params, poggio_fig1_channels, poggio_fig1_net, poggio_fig1_num_params, poggio_fig5_net
from .ensemble import Ensemble
from .layered import LayeredNet

__all__ = [
    "ACTIVATIONS",
    "Architecture",
    "ConvNet",
    "Ensemble",
    "LayeredNet",
    "activate",
    "num_params",
    "poggio_fig1_channels",
    "poggio_fig1_net",
    "poggio_fig1_num_params",
    "poggio_fig5_net",
]

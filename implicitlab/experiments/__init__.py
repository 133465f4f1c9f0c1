"""Named experiments reproducing the papers' figures and checking their claims."""

from .claims import Claim
from .registry import Experiment, experiments, get, register

__all__ = ["Claim", "Experiment", "experiments", "get", "register"]

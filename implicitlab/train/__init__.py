"""Training: GD / SGD / normalized GD on ensembles, probe schedules and probes."""

from .gd import TrainResult, train
from .probes import ProbeContext, alignment_probe, loss_probe, margin_probe, norms_probe
from .schedule import every, log_spaced

__all__ = [
    "ProbeContext",
    "TrainResult",
    "alignment_probe",
    "every",
    "log_spaced",
    "loss_probe",
    "margin_probe",
    "norms_probe",
    "train",
]

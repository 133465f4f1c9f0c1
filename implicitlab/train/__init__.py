"""Training: GD / SGD / normalized GD on ensembles, probe schedules and probes."""

from .gd import TrainResult, gradient_descent
from .perturb import PerturbationSchedule, gaussian_perturbations, perturbed_gd
from .quadratic import QuadraticGD
from .probes import ProbeContext, alignment_probe, loss_probe, margin_probe, norms_probe
from .schedule import every, log_spaced

__all__ = [
    "PerturbationSchedule",
    "QuadraticGD",
    "gaussian_perturbations",
    "perturbed_gd",
    "ProbeContext",
    "TrainResult",
    "alignment_probe",
    "every",
    "log_spaced",
    "loss_probe",
    "margin_probe",
    "norms_probe",
    "gradient_descent",
]

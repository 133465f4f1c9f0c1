"""Training: GD / SGD / normalized GD on ensembles, probe schedules and probes."""

from .gd import TrainResult, gradient_descent
from .perturb import (
    PerturbationSchedule,
    gaussian_perturbations,
    perturb_parameters_,
    perturbed_gd,
    perturbed_gd_moments,
)
from .quadratic import QuadraticGD
from .probes import ProbeContext, alignment_probe, loss_probe, margin_probe, norms_probe
from .schedule import every, log_spaced

__all__ = [
    "PerturbationSchedule",
    "QuadraticGD",
    "gaussian_perturbations",
    "perturb_parameters_",
    "perturbed_gd",
    "perturbed_gd_moments",
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

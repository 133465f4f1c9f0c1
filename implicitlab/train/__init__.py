"""Training: GD / SGD / normalized GD on ensembles, probe schedules and probes; the exact GD fast-forward on
least squares and weight perturbations; mini-batch SGD of a classifier ``nn.Module`` and its evaluation."""

from .gd import TrainResult, gradient_descent
from .minibatch import Evaluation, evaluate, fit, full_batch_gradient, gather_rows, make_optimizer, run_epoch
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
    "Evaluation",
    "evaluate",
    "fit",
    "full_batch_gradient",
    "gather_rows",
    "make_optimizer",
    "run_epoch",
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

"""Named experiments reproducing the papers' figures and checking their claims.

Every experiment is one module (config, ``PRESETS``, ``run``, ``plot``, ``claims`` and one
``EXPERIMENT`` record, see :mod:`.experiment`) and one line in :data:`EXPERIMENTS` below. Nothing
registers itself on import: this list is the whole registry, so :func:`experiments` gives the same
answer in a fresh interpreter as after any other import. ``template.py`` is the module to copy.
"""

from __future__ import annotations

from ..config import ConfigError
from . import demo, template
from .claims import Claim, Control, Threshold
from .experiment import Experiment, Progress, check_views, merged_run_batch
from .marion_chizat2024 import alignment as mc2024_alignment
from .marion_chizat2024 import constant as mc2024_constant
from .marion_chizat2024 import fig1 as mc2024_fig1
from .marion_chizat2024 import fig2 as mc2024_fig2
from .marion_chizat2024 import fig3 as mc2024_fig3
from .marion_chizat2024 import fig6 as mc2024_fig6
from .marion_chizat2024 import gelu as mc2024_gelu
from .marion_chizat2024 import lower_bound as mc2024_lower_bound
from .marion_chizat2024 import resnet as mc2024_resnet
from .poggio2018 import fig1_cifar, fig2_cifar, fig3, fig4, fig5_cifar, fig6, fig7, hessian, init_independence
from .poggio2018 import rates as poggio2018_rates
from .poggio2018 import norm_criterion as poggio_norm_criterion
from .poggio2018 import normalized_dynamics as poggio_normalized_dynamics
from .soudry2018 import linear as soudry2018_linear

EXPERIMENTS: tuple[Experiment, ...] = (
    soudry2018_linear.EXPERIMENT,
    fig1_cifar.EXPERIMENT,
    fig2_cifar.EXPERIMENT,
    fig3.EXPERIMENT,
    fig4.EXPERIMENT,
    fig5_cifar.EXPERIMENT,
    fig6.EXPERIMENT,
    fig7.EXPERIMENT,
    poggio2018_rates.EXPERIMENT,
    hessian.EXPERIMENT,
    init_independence.EXPERIMENT,
    poggio_norm_criterion.EXPERIMENT,
    poggio_normalized_dynamics.EXPERIMENT,
    mc2024_fig1.EXPERIMENT,
    mc2024_fig3.EXPERIMENT,
    mc2024_resnet.EXPERIMENT,
    mc2024_fig2.EXPERIMENT,
    mc2024_fig6.EXPERIMENT,
    mc2024_gelu.EXPERIMENT,
    mc2024_alignment.EXPERIMENT,
    mc2024_lower_bound.EXPERIMENT,
    mc2024_constant.EXPERIMENT,
    demo.EXPERIMENT,
    template.EXPERIMENT,
)
"""Every experiment, one line each: a new experiment is a new module plus one line here."""


def experiments() -> dict[str, Experiment]:
    """Name → experiment, sorted by name. An error if two share a name or a view's source is not listed."""
    out: dict[str, Experiment] = {}
    for exp in EXPERIMENTS:
        if exp.name in out:
            raise ValueError(f"two experiments are named {exp.name!r}")
        out[exp.name] = exp
    check_views(out)
    return dict(sorted(out.items()))


def get(name: str) -> Experiment:
    """The experiment called ``name``; a :class:`ConfigError` naming the known ones otherwise."""
    exps = experiments()
    if name not in exps:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(exps)}")
    return exps[name]


__all__ = ["EXPERIMENTS", "Claim", "Control", "Threshold", "Experiment", "Progress", "experiments", "get", "merged_run_batch"]

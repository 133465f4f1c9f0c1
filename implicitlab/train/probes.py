"""Probes: what is measured during training, one value per run.

A probe is a function ``probe(ctx) -> dict[str, Tensor (R,)]``. :func:`implicitlab.train.gd.gradient_descent`
calls every probe at the scheduled steps and writes one table row per run × step. Values of runs
that have diverged are recorded as NaN (their status column says why).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..diagnostics import alignment, layer_norms, normalized_margin, rank_one_ratio
from ..losses import log_loss, loss
from ..models import Ensemble


@dataclass
class ProbeContext:
    """What a probe may look at: the ensemble, the full training data, the loss, the step."""

    model: Ensemble
    X: torch.Tensor
    y: torch.Tensor
    loss: str
    reduction: str
    step: int
    lr: torch.Tensor | None = None  # (R,) step sizes of the runs
    # (R,) the training loss L(θ) at this step's weights (``reduction`` over all of X), when the
    # step's full-batch gradient already computed it (full-batch, not normalized, step < num_steps);
    # None otherwise. A probe that only needs L(θ) can read it instead of a forward pass of its own.
    training_loss: torch.Tensor | None = None


Probe = Callable[[ProbeContext], dict[str, torch.Tensor]]


@torch.no_grad()
def loss_probe(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    """``loss`` and ``log_loss`` on the full training set (exact, from the outputs)."""
    out = ctx.model(ctx.X)
    return {
        "loss": loss(ctx.loss, out, ctx.y, ctx.reduction),
        "log_loss": log_loss(ctx.loss, out, ctx.y, ctx.reduction),
    }


@torch.no_grad()
def norms_probe(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    """Per-layer Frobenius norms ``norm_k`` (k = 1…L), their product and ‖θ‖."""
    norms = layer_norms(ctx.model)
    row = {f"norm_{k + 1}": norms.frobenius[:, k] for k in range(norms.frobenius.shape[1])}
    row["norm_product"] = norms.frobenius_product
    row["param_norm"] = norms.param_norm
    return row


@torch.no_grad()
def margin_probe(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    """Normalized margin (by ∏‖W_k‖_F) on the training set."""
    return {"normalized_margin": normalized_margin(ctx.model, ctx.X, ctx.y)}


@torch.no_grad()
def alignment_probe(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    """min over layers of ‖W_k‖_2/‖W_k‖_F and of |v_{k+1}ᵀu_k|."""
    row = {"rank_one_ratio_min": rank_one_ratio(ctx.model).amin(-1)}
    if ctx.model.arch.depth > 1:
        row["alignment_min"] = alignment(ctx.model).amin(-1)
    return row

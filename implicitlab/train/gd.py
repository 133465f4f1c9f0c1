"""Gradient descent on an ensemble: full-batch GD, mini-batch SGD, normalized GD.

Every run r of the ensemble takes the step θ_r ← θ_r − η_r ∇L_r(θ_r) with its own step size η_r;
all runs advance together as one tensor program. One gradient of Σ_r L_r gives all per-run
gradients at once because the runs share no parameter.

- **Normalized GD** (Nacson et al., AISTATS 2019): η_t = η / L(θ_t), i.e. the step
  θ ← θ − η ∇L/L = θ − η ∇ log L. We differentiate the log-domain loss directly, so the step stays
  exact when L itself has underflowed (L < e^{−745}).
- **Linear networks** (any depth, no activation) use the closed-form backward pass of
  :mod:`implicitlab.train.linear_grad` instead of autograd.
- **Nonlinear chains** (an elementwise activation between layers: GELU, ReLU, smooth ReLU) use the
  written-out backward pass of :mod:`implicitlab.train.chain_grad`: on the CPU with a shared batch
  and small layers, the compiled kernel of :mod:`implicitlab.train.fused_chain` (runs in vector
  lanes); otherwise the batched PyTorch pass (pre-activations kept, σ′ computed beside σ, buffers
  reused across steps). Autograd remains only for a subclass of :class:`~implicitlab.models.Ensemble`
  that overrides ``forward``.
- **Probes** run after the step's gradient is computed, at the same weights, and may read the
  full-batch loss it evaluated (``ProbeContext.training_loss``) instead of a forward pass of their own.
- **Square loss on a linear network** (any depth, no activation): the loss depends on the data only
  through Σ = XᵀX/n, b = XᵀY/n and c = ‖Y‖²/n, R(P) = tr(PΣPᵀ) − 2 tr(Pb) + c with P the end-to-end
  matrix, so a full-batch step costs O(L d³) whatever n is. The probes still evaluate the loss from
  the residuals (exact near an interpolant, where the expanded form cancels).
- **Divergence**: a run whose loss becomes NaN/±inf (or exceeds ``divergence_threshold``) is marked
  diverged at that step, frozen, and recorded with NaN metrics; the other runs go on. Detection
  needs no host synchronisation (masks stay on the device).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..losses import LOSSES, SquareLossStats, check_targets, log_loss
from ..losses import loss as loss_value
from ..models import Ensemble
from ..seeds import derive_seed
from .chain_grad import ChainWorkspace, chain_gradients
from .linear_grad import linear_chain_gradients
from .probes import Probe, ProbeContext, loss_probe


@dataclass
class TrainResult:
    """The tidy table (one row per run × probed step), the trained ensemble and divergence steps."""

    table: pd.DataFrame
    model: Ensemble
    diverged_step: list[int | None]

    @property
    def diverged(self) -> np.ndarray:
        return np.array([s is not None for s in self.diverged_step])


def _check_inputs(model, X, y, loss_name, lr, num_steps, reduction, batch_size) -> torch.Tensor:
    if loss_name not in LOSSES:
        raise ValueError(f"unknown loss {loss_name!r}; choose one of {list(LOSSES)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"unknown reduction {reduction!r}; use 'mean' or 'sum'")
    if X.ndim != 2 or X.shape[1] != model.arch.d_in:
        raise ValueError(f"X must be (n, {model.arch.d_in}), got {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ValueError("the training set is empty")
    if y.ndim == 0 or y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {y.shape[0] if y.ndim else 0} rows for {X.shape[0]} examples")
    check_targets(loss_name, y, (X.shape[0], model.arch.d_out))  # once here, not per step
    if num_steps < 0:
        raise ValueError(f"num_steps must be ≥ 0, got {num_steps}")
    R = model.num_runs
    p = model.weights[0]
    lrs = torch.as_tensor(lr, dtype=p.dtype, device=p.device).reshape(-1)
    if lrs.numel() == 1:
        lrs = lrs.expand(R).clone()
    if lrs.numel() != R:
        raise ValueError(f"{lrs.numel()} step sizes for {R} runs")
    if not bool(torch.isfinite(lrs).all()) or bool((lrs <= 0).any()):
        raise ValueError("step sizes must be positive and finite")
    if batch_size is not None and not (1 <= batch_size <= X.shape[0]):
        raise ValueError(f"batch_size must be in [1, {X.shape[0]}], got {batch_size}")
    return lrs


def gradient_descent(
    model: Ensemble,
    loss: str,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float | Sequence[float] | torch.Tensor,
    num_steps: int,
    reduction: str = "mean",
    normalized: bool = False,
    batch_size: int | None = None,
    batch_seeds: Sequence[int] | None = None,
    probe_steps: Sequence[int] | np.ndarray | None = None,
    probes: Sequence[Probe] = (loss_probe,),
    divergence_threshold: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train every run of ``model`` in place and measure ``probes`` at ``probe_steps``.

    Args:
        model: the ensemble (R runs); its parameters are updated in place.
        loss: ``"square" | "exp" | "logistic" | "ce"`` (see :mod:`implicitlab.losses`).
        X: ``(n, d_in)`` training inputs, on the model's device and dtype.
        y: ``(n,)`` or ``(n, d_out)`` targets: labels in {−1, +1} for ``"exp"``/``"logistic"`` with
            one output (labels in {0, 1} are refused: use ``2*y - 1``), integer class indices ``(n,)``
            for ``"ce"``, real values for ``"square"`` (checked by :func:`implicitlab.losses.check_targets`).
        lr: one step size for all runs or one per run ``(R,)``.
        num_steps: number of updates.
        reduction: ``"mean"`` (default) or ``"sum"`` over examples.
        normalized: step η/L(θ) (normalized GD) instead of η.
        batch_size: None for full-batch GD; else SGD with per-run reshuffling every epoch from
            ``batch_seeds[r]`` (default: the run's seed).
        probe_steps: steps (0…num_steps) at which probes run (default: 0 and num_steps).
        probes: functions of a :class:`ProbeContext` returning ``{name: (R,) tensor}``.
        divergence_threshold: a loss above this also counts as divergence (default: only NaN/inf).
        progress: called as ``progress(step, num_steps)`` about 100 times.

    Returns:
        :class:`TrainResult` with the table (columns ``run, step, diverged`` and the probes').
    """
    loss_name = loss
    lrs = _check_inputs(model, X, y, loss_name, lr, num_steps, reduction, batch_size)
    R, n = model.num_runs, X.shape[0]
    device = lrs.device
    params = list(model.weights)
    wanted = np.unique(np.asarray(probe_steps if probe_steps is not None else [0, num_steps], dtype=np.int64))
    if wanted.size and (wanted.min() < 0 or wanted.max() > num_steps):
        raise ValueError(f"probe steps must lie in [0, {num_steps}]")
    probe_set = set(int(s) for s in wanted)

    written_out = type(model).forward is Ensemble.forward  # a subclass with its own forward: autograd
    linear = model.arch.activation == "none" and written_out
    workspace = ChainWorkspace()
    stats = SquareLossStats(X, y, reduction) if (loss_name == "square" and linear and batch_size is None) else None

    def objective(Xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        out = model(Xb)
        return log_loss(loss_name, out, yb, reduction) if normalized else loss_value(loss_name, out, yb, reduction)

    # SGD batches: per-run permutations, reshuffled every epoch from each run's own generator.
    gens = None
    if batch_size is not None:
        seeds = list(batch_seeds) if batch_seeds is not None else model.seeds
        gens = [torch.Generator().manual_seed(derive_seed(int(s), "batches")) for s in seeds]
        perm = None
        batches_per_epoch = math.ceil(n / batch_size)

    yX = None
    if linear and batch_size is None and loss_name in ("exp", "logistic") and y.ndim == 1:
        yX = y.to(X.dtype).unsqueeze(1) * X  # (n, d): margins are P (yX)ᵀ

    # Divergence bookkeeping without host syncs: `dead` counts the steps a run has spent diverged,
    # so it diverged at step (steps taken − dead). Runs share no parameter, so a NaN stays in its
    # own run; weights are only frozen explicitly when a finite threshold is crossed.
    diverged = torch.zeros(R, dtype=torch.bool, device=device)
    dead = torch.zeros(R, dtype=torch.int64, device=device)
    taken = 0
    neg_lr = (-lrs).view(R, 1, 1)
    records: dict[str, list[torch.Tensor]] = {}
    steps_recorded: list[int] = []
    lr_b = lrs.view(R, 1, 1)
    report_every = max(1, num_steps // 100)

    for step in range(num_steps + 1):
        # The step's gradient is computed before its probes run (both at the same weights), so a
        # probe can reuse the full-batch loss the gradient already evaluated (ctx.training_loss).
        obj = grads = None
        if step < num_steps:
            if gens is not None:
                i = step % batches_per_epoch
                if i == 0:
                    perm = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)  # (R, n)
                idx = perm[:, i * batch_size : (i + 1) * batch_size]  # (R, B)
                Xb, yb = X[idx], y[idx]  # (R, B, d), (R, B[, d_out])
            else:
                Xb, yb = X, y

            if linear:
                obj, grads = linear_chain_gradients(
                    params, model.head, Xb, yb, loss_name, reduction, normalized,
                    stats if Xb is X else None, yX if Xb is X else None,
                )
            elif written_out:
                obj, grads = chain_gradients(
                    params, model.head, Xb, yb, loss_name, reduction, normalized,
                    model.arch.activation, model.arch.eps, workspace=workspace,
                )
            else:
                obj = objective(Xb, yb)  # (R,)
                grads = torch.autograd.grad(obj.sum(), params)
                obj = obj.detach()

        if step in probe_set:
            full_loss = obj if (obj is not None and gens is None and not normalized) else None
            ctx = ProbeContext(model=model, X=X, y=y, loss=loss_name, reduction=reduction, step=step, lr=lrs,
                               training_loss=full_loss)
            with torch.no_grad():
                row: dict[str, torch.Tensor] = {}
                for probe in probes:
                    row.update(probe(ctx))
                if divergence_threshold is not None and "loss" in row:
                    diverged |= ~(row["loss"] <= divergence_threshold)
                for key, value in row.items():
                    value = value.detach().to(torch.float64).reshape(R)
                    records.setdefault(key, []).append(torch.where(diverged, float("nan"), value))
                records.setdefault("diverged", []).append(diverged.clone())
                steps_recorded.append(step)
        if step == num_steps:
            break

        diverged |= ~torch.isfinite(obj)
        with torch.no_grad():
            if divergence_threshold is not None:
                if not normalized:
                    diverged |= obj > divergence_threshold
                frozen = diverged.view(R, 1, 1)
                for W, g in zip(params, grads):
                    W.sub_(torch.where(frozen, torch.zeros_like(g), lr_b * g))
            else:
                for W, g in zip(params, grads):
                    W.addcmul_(g, neg_lr)
        dead += diverged
        taken += 1
        if progress is not None and (step + 1) % report_every == 0:
            progress(step + 1, num_steps)

    table = _to_table(records, steps_recorded, R)
    flags = diverged.cpu().tolist()
    first = (taken - dead).cpu().tolist()
    return TrainResult(table=table, model=model, diverged_step=[int(s) if f else None for s, f in zip(first, flags)])


def _to_table(records: dict[str, list[torch.Tensor]], steps: list[int], R: int) -> pd.DataFrame:
    T = len(steps)
    columns: dict[str, np.ndarray] = {
        "run": np.tile(np.arange(R), T),
        "step": np.repeat(np.asarray(steps, dtype=np.int64), R),
    }
    for key, values in records.items():
        columns[key] = torch.stack(values).cpu().numpy().reshape(T * R)
    return pd.DataFrame(columns)

"""Sharpness inside a PyTorch Lightning ``Trainer`` (the optional extra ``lightning``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

try:
    from lightning.pytorch import Callback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("SharpnessCallback needs PyTorch Lightning: "
                      "pip install -c constraints.txt 'implicitlab[lightning]'") from exc

from ..diagnostics.tracking import SharpnessTracker
from .metrics import as_scalars


class SharpnessCallback(Callback):
    """Top Hessian eigenvalue(s) of the training objective every ``every_n_steps`` optimizer steps or
    ``every_n_epochs`` epochs, through one :class:`~implicitlab.diagnostics.tracking.SharpnessTracker`
    (warm-started between estimates), logged to every logger of the trainer.

    Args:
        X, y: the data set the sharpness is measured on (moved to the module's device at the first estimate).
        loss: a loss name or a callable ``(outputs, targets)``, as for the tracker.
        every_n_steps / every_n_epochs: exactly one of them: after every n-th optimizer step
            (``trainer.global_step % n == 0``) or at the end of every n-th training epoch.
        model: which network to measure — None for the ``LightningModule`` itself (its ``forward``
            is the network), an attribute name (``"net"``), or a callable of the ``LightningModule``.
        prefix: the metric names, ``{prefix}``, ``{prefix}_residual``, … (:func:`as_scalars`).
        tracker_options: passed to :class:`SharpnessTracker` (``k``, ``tol``, ``chunk_size``, …).

    Attributes:
        tracker: the :class:`SharpnessTracker` (None before the first estimate); its
            ``history_frame()`` has one row per estimate, ``step`` = the trainer's global step.

    Example::

        cb = SharpnessCallback(X, y, "ce", every_n_steps=50)
        Trainer(max_steps=1000, callbacks=[cb]).fit(module, loader)
        cb.tracker.history_frame()
    """

    def __init__(self, X: Tensor, y: Tensor, loss, *, every_n_steps: int | None = None,
                 every_n_epochs: int | None = None, model: str | Callable[[nn.Module], nn.Module] | None = None,
                 prefix: str = "sharpness", **tracker_options) -> None:
        super().__init__()
        if (every_n_steps is None) == (every_n_epochs is None):
            raise ValueError("give exactly one of every_n_steps and every_n_epochs")
        every = every_n_steps if every_n_steps is not None else every_n_epochs
        if every < 1:
            raise ValueError(f"every_n_steps / every_n_epochs must be ≥ 1, got {every}")
        self.X, self.y, self.loss = X, y, loss
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self.model, self.prefix, self.tracker_options = model, prefix, tracker_options
        self.tracker: SharpnessTracker | None = None
        self.last_step: int | None = None  # one estimate per optimizer step (gradient accumulation)

    def network(self, pl_module: nn.Module) -> nn.Module:
        """The module whose sharpness is measured (``model`` resolved on ``pl_module``)."""
        if self.model is None:
            return pl_module
        if isinstance(self.model, str):
            return getattr(pl_module, self.model)
        return self.model(pl_module)

    def estimate(self, trainer, pl_module) -> dict[str, float]:
        """One estimate now, logged at the trainer's global step; returns the logged numbers."""
        if self.tracker is None:
            net = self.network(pl_module)
            device = next(net.parameters()).device
            self.tracker = SharpnessTracker(net, self.loss, self.X.to(device), self.y.to(device),
                                            **self.tracker_options)
        step = int(trainer.global_step)
        with torch.enable_grad():
            result = self.tracker(step)
        values = as_scalars(result, prefix=self.prefix)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=step)
        return values

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if self.every_n_steps is not None and step % self.every_n_steps == 0 and step != self.last_step:
            self.last_step = step
            self.estimate(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.estimate(trainer, pl_module)

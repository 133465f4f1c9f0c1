"""Logging from a user's own training loop: CSV, TensorBoard, a PyTorch Lightning callback.

Every logger takes what the trackers return — an :class:`~implicitlab.diagnostics.lanczos.EigenResult`
from :class:`~implicitlab.diagnostics.tracking.SharpnessTracker`, a
:class:`~implicitlab.diagnostics.weight_tracking.MarginNormRecord` from
:class:`~implicitlab.diagnostics.weight_tracking.MarginNormTracker` — or a dict of numbers, and writes
the same names (:func:`~implicitlab.integrations.metrics.as_scalars`): ``sharpness``,
``sharpness_residual``, ``sharpness_error_bound``, ``sharpness_converged``, ``sharpness_num_matvecs``,
``normalized_margin``, ``param_norm``, ….

- :class:`CSVLogger` (``csv_log.py``): one row per ``log`` call; no extra needed.
- :class:`TensorBoardLogger` (``tensorboard.py``): ``torch.utils.tensorboard``; extra ``tensorboard``.
- :class:`SharpnessCallback` (``lightning.py``): sharpness every k steps or epochs inside a Lightning
  ``Trainer``, logged to the trainer's loggers; extra ``lightning``.

The optional ones are imported on first use, so ``import implicitlab.integrations`` needs neither.

Example::

    tracker = SharpnessTracker(model, "ce", X, y)
    with CSVLogger("curvature.csv") as log:
        for step in range(steps):
            ...  # an optimizer step
            if step % 10 == 0:
                log.log(step, tracker(step))
"""

from __future__ import annotations

from ..diagnostics.tracking import SharpnessTracker
from ..diagnostics.weight_tracking import MarginNormRecord, MarginNormTracker
from .csv_log import CSVLogger
from .metrics import as_scalars

__all__ = ["CSVLogger", "MarginNormRecord", "MarginNormTracker", "SharpnessCallback", "SharpnessTracker",
           "TensorBoardLogger", "as_scalars"]


def __getattr__(name: str):
    if name == "TensorBoardLogger":
        from .tensorboard import TensorBoardLogger

        return TensorBoardLogger
    if name == "SharpnessCallback":
        from .lightning import SharpnessCallback

        return SharpnessCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

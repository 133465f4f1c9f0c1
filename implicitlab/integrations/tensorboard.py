"""Tracker results to TensorBoard (``torch.utils.tensorboard``; the optional extra ``tensorboard``)."""

from __future__ import annotations

from pathlib import Path

from .metrics import as_scalars

INSTALL = "pip install -c constraints.txt 'implicitlab[tensorboard]'"


class TensorBoardLogger:
    """Write tracker results as TensorBoard scalars under ``log_dir``.

    Each name of :func:`as_scalars` becomes the scalar tag ``{tag_prefix}{name}`` (default
    ``implicitlab/sharpness``, ``implicitlab/sharpness_residual``, …) at the given step. Give
    ``writer`` to share the ``SummaryWriter`` of your own loop (it is then not closed here).

    Example::

        with TensorBoardLogger("runs/exp1") as tb:
            tb.log(step, tracker(step))
    """

    def __init__(self, log_dir: str | Path | None = None, *, writer=None, tag_prefix: str = "implicitlab/") -> None:
        if writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError(f"TensorBoardLogger needs tensorboard: {INSTALL}") from exc
            if log_dir is None:
                raise ValueError("give log_dir (or a SummaryWriter as writer)")
            writer = SummaryWriter(log_dir=str(log_dir))
            self.owns_writer = True
        else:
            self.owns_writer = False
        self.writer = writer
        self.tag_prefix = tag_prefix

    def log(self, step: int, result, prefix: str = "sharpness") -> dict[str, float]:
        """Add one scalar per number of ``result`` (see :func:`as_scalars`) at ``step``; returns them."""
        values = as_scalars(result, prefix=prefix)
        for name, value in values.items():
            self.writer.add_scalar(f"{self.tag_prefix}{name}", value, global_step=int(step))
        return values

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        """Flush, and close the writer if this logger opened it."""
        self.writer.flush()
        if self.owns_writer:
            self.writer.close()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

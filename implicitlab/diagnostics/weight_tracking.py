"""Margins and norms of one model along its training: what a user puts in a training loop.

:class:`MarginNormTracker` is the companion of
:class:`~implicitlab.diagnostics.tracking.SharpnessTracker` for the weight-space quantities: at each
call it measures :func:`~implicitlab.diagnostics.margin.min_margin`,
:func:`~implicitlab.diagnostics.margin.normalized_margin` and
:func:`~implicitlab.diagnostics.norms.layer_norms` at the model's current parameters, on the data set
given at construction, and keeps one :class:`MarginNormRecord` per call (``history``; as a table,
:meth:`MarginNormTracker.history_frame`). The loggers of :mod:`implicitlab.integrations` take its
records as they take the sharpness tracker's results.

The model's mode is left as it was: the forward pass runs in eval mode (no dropout mask, batch norm
on its running statistics, buffers untouched) and the mode is restored after each call.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Literal

import pandas as pd
import torch
from torch import Tensor, nn

from .margin import min_margin, normalized_margin
from .norms import layer_norms


@dataclass(frozen=True)
class MarginNormRecord:
    """One call of :class:`MarginNormTracker` (floats; per-layer norms as tuples, in :func:`layer_norms`' order).

    Fields: ``step`` (None where none was given), ``min_margin`` min_n y_n f(x_n), ``normalized_margin``
    (the tracker's ``normalization``), ``param_norm`` ‖W‖ over the layer matrices, ``frobenius_product``
    ∏_k ‖W_k‖_F, ``spectral_product`` ∏_k ‖W_k‖_2, ``frobenius`` and ``spectral`` per layer,
    ``wall_time_s`` of the call.
    """

    step: int | None
    min_margin: float
    normalized_margin: float
    param_norm: float
    frobenius_product: float
    spectral_product: float
    frobenius: tuple[float, ...]
    spectral: tuple[float, ...]
    wall_time_s: float

    def scalars(self) -> dict[str, float]:
        """Every number of the record by name, per-layer norms as ``frobenius_1``, …, ``spectral_1``, …
        (what a logger writes)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("step", "frobenius", "spectral", "wall_time_s")}
        for name in ("frobenius", "spectral"):
            out.update({f"{name}_{i + 1}": v for i, v in enumerate(getattr(self, name))})
        return out


def _scalar(t: Tensor, what: str) -> float:
    if t.numel() != 1:
        raise ValueError(f"{what} has {t.numel()} values: MarginNormTracker follows one model, not an ensemble")
    return float(t)


class MarginNormTracker:
    """Margins and layer norms of ``model`` on ``(X, y)``, measured again at each call.

    Args:
        model: a bias-free network whose layers :func:`~implicitlab.diagnostics.weights.layer_weights`
            finds (the normalized margin is scale-invariant only for a positively homogeneous one).
        X: ``(n, …)`` inputs; y: ``(n,)`` labels in {−1, +1} (one output) or class indices.
        normalization: ``"frobenius"`` (default), ``"spectral"`` or ``"param"``, as in
            :func:`~implicitlab.diagnostics.margin.normalized_margin`.

    Example::

        margins = MarginNormTracker(model, X, y)
        for step in range(steps):
            ...  # an optimizer step
            if step % 10 == 0:
                rec = margins(step)   # rec.normalized_margin, rec.param_norm, ...
        margins.history_frame()      # one row per call
    """

    def __init__(self, model: nn.Module, X: Tensor, y: Tensor, *,
                 normalization: Literal["frobenius", "spectral", "param"] = "frobenius") -> None:
        if normalization not in ("frobenius", "spectral", "param"):
            raise ValueError(f"unknown normalization {normalization!r}; choose frobenius, spectral or param")
        if X.shape[0] == 0 or X.shape[0] != y.shape[0]:
            raise ValueError(f"X and y must hold the same, positive number of examples: shapes "
                             f"{tuple(X.shape)} and {tuple(y.shape)}")
        self.model, self.X, self.y, self.normalization = model, X, y, normalization
        self.history: list[MarginNormRecord] = []
        layer_norms(model)  # the layers are found now, not at the first call in the loop

    @torch.no_grad()
    def __call__(self, step: int | None = None) -> MarginNormRecord:
        """Measure at the model's current parameters (eval mode, then the mode restored); appended to ``history``."""
        start = time.perf_counter()
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        try:
            raw = min_margin(self.model, self.X, self.y)
            normalized = normalized_margin(self.model, self.X, self.y, normalization=self.normalization)
            norms = layer_norms(self.model)
        finally:
            for m, training in modes.items():
                m.training = training
        record = MarginNormRecord(
            step=None if step is None else int(step),
            min_margin=_scalar(raw, "min_margin"),
            normalized_margin=_scalar(normalized, "normalized_margin"),
            param_norm=_scalar(norms.param_norm, "param_norm"),
            frobenius_product=_scalar(norms.frobenius_product, "frobenius_product"),
            spectral_product=_scalar(norms.spectral_product, "spectral_product"),
            frobenius=tuple(float(v) for v in norms.frobenius),
            spectral=tuple(float(v) for v in norms.spectral),
            wall_time_s=time.perf_counter() - start,
        )
        self.history.append(record)
        return record

    def history_frame(self) -> pd.DataFrame:
        """The history as a table, one row per call: ``call``, ``step`` (nullable Int64), then the
        columns of :meth:`MarginNormRecord.scalars` and ``wall_time_s``. No rows before the first call."""
        rows = [{"call": i, "step": pd.NA if r.step is None else r.step, **r.scalars(), "wall_time_s": r.wall_time_s}
                for i, r in enumerate(self.history)]
        columns = ["call", "step", "min_margin", "normalized_margin", "param_norm", "frobenius_product",
                   "spectral_product"]
        frame = pd.DataFrame(rows, columns=list(dict.fromkeys(columns + [c for r in rows for c in r])))
        if not rows:
            frame = frame.reindex(columns=columns + ["wall_time_s"])
        frame["call"] = frame["call"].astype("int64")
        frame["step"] = frame["step"].astype("Int64")
        return frame

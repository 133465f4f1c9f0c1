"""Sharpness of one model along its training: one operator, warm-started Lanczos.

:class:`SharpnessTracker` is what a user puts in a training loop to follow the top Hessian
eigenvalue(s) of their own model. It builds one
:class:`~implicitlab.diagnostics.hessian.HessianOperator` (the operator reads the model's current
parameters at each product, and keeps the primal work between the products of one estimate), and
starts each estimate from the previous eigenvectors (:class:`~implicitlab.diagnostics.lanczos.WarmStart`,
which the ensemble's :class:`~implicitlab.diagnostics.ensemble_curvature.SharpnessProbe` uses too):

- ``extrapolate=True`` (default): from the linear extrapolation v_t + (v_t − v_{t−1}) of the last two
  (signs aligned first: an eigenvector has none), which follows a smoothly turning eigenvector to
  second order; the plain previous vector v_t for the second estimate;
- ``extrapolate=False``: from v_t.

What it buys (``benchmarks/sharpness.py``, the Poggio CNN on 1,000 CIFAR-10 images, full-batch GD at
step 0.1, an estimate every step, relative error ≤ 1e-6 against a cold reference): 2.9 products per
estimate extrapolated, 3.8 from the previous vector, 14 cold. The saving depends on how far the
top eigenvector turns between estimates (the benchmark prints it): each estimate still runs
Lanczos to ``tol``, so a warm start changes the cost, never the accuracy test. A start that has
lost the top eigenvector (a crossing of λ₁ and λ₂ between estimates) converges to the other
eigenvalue with a small residual; estimating k = 2 guards against that at twice the price.
"""

from __future__ import annotations

import time

import pandas as pd
from torch import Tensor, nn

from ..seeds import derive_seed
from .hessian import HessianOperator
from .lanczos import EigenResult, WarmStart, check_curvature_dtype, check_eigen_options, lanczos_eigenpairs


class SharpnessTracker:
    """Top-k Hessian eigenvalues of ``model``'s data-set loss, estimated again at each call.

    Args:
        model, loss, X, y, chunk_size, reduction, reuse, check_determinism, params, penalty, mode,
            batch, distributed: as for :class:`~implicitlab.diagnostics.hessian.HessianOperator` (the determinism
            probe runs once, at construction). Each call measures the declared objective
            (``mode="eval"`` by default) whatever mode the training loop left the model in, and
            leaves its mode and buffers as found.
        k, which, tol, criterion, max_matvecs, explicit_residuals: as for
            :func:`~implicitlab.diagnostics.lanczos.lanczos_eigenpairs`; ``criterion`` defaults to
            ``"gap"`` here (the r²/gap estimate of the eigenvalue error).
        extrapolate: start from the extrapolation of the last two eigenvectors (module docstring).

    Attributes:
        operator: the :class:`HessianOperator`; history: one :class:`EigenResult` per call;
        steps: the ``step`` given to each call (None where none was); wall_times: seconds each
        call took; warm: the :class:`~implicitlab.diagnostics.lanczos.WarmStart` (the last two
        eigenvector blocks, signs aligned). :meth:`history_frame` gives the history as a table.

    Example::

        tracker = SharpnessTracker(model, "ce", X, y, reuse="linearized")
        for step in range(steps):
            ...  # an optimizer step
            if step % 10 == 0:
                res = tracker(step)   # res.values[0], res.residuals[0], res.num_matvecs
        tracker.history_frame()       # one row per call: step, value, residual, ...
    """

    def __init__(
        self,
        model: nn.Module,
        loss,
        X,
        y=None,
        *,
        k: int = 1,
        which: str = "LA",
        tol: float = 1e-6,
        criterion: str = "gap",
        max_matvecs: int | None = None,
        explicit_residuals: bool = False,
        extrapolate: bool = True,
        chunk_size: int | None = None,
        reduction: str | None = None,
        reuse: str = "graph",
        check_determinism: bool = True,
        seed: int = 0,
        params=None,
        penalty=None,
        mode: str = "eval",
        batch=None,
        distributed=None,
    ) -> None:
        check_curvature_dtype(model)  # half precision refused before any product
        self.operator = HessianOperator(
            model, loss, X, y, chunk_size=chunk_size, reduction=reduction, reuse=reuse,
            check_determinism=check_determinism, seed=seed, params=params, penalty=penalty, mode=mode,
            batch=batch, distributed=distributed,
        )
        check_eigen_options(self.operator, k=k, which=which, tol=tol, criterion=criterion, max_matvecs=max_matvecs)
        self.k, self.which, self.tol, self.criterion = k, which, tol, criterion
        self.max_matvecs, self.explicit_residuals, self.seed = max_matvecs, explicit_residuals, seed
        self.warm = WarmStart(extrapolate)
        self.history: list[EigenResult] = []
        self.steps: list[int | None] = []
        self.wall_times: list[float] = []

    def start_vector(self) -> Tensor | None:
        """The warm start of the next estimate: ``(D, k)`` or None before the first."""
        return self.warm.vector()

    def __call__(self, step: int | None = None) -> EigenResult:
        """Estimate at the model's current parameters, warm-started; appended to ``history``.

        ``step`` (optional): the training step, recorded in ``steps`` and :meth:`history_frame`.
        """
        start = time.perf_counter()
        res = lanczos_eigenpairs(
            self.operator, k=self.k, which=self.which, tol=self.tol, criterion=self.criterion,
            v0=self.start_vector(), max_matvecs=self.max_matvecs, explicit_residuals=self.explicit_residuals,
            seed=derive_seed(self.seed, "lanczos_start", len(self.history)),
        )
        self.warm.update(res.vectors)
        self.history.append(res)
        self.steps.append(None if step is None else int(step))
        self.wall_times.append(time.perf_counter() - start)
        return res

    def history_frame(self) -> pd.DataFrame:
        """The history as a table, one row per call, in call order.

        Columns (stable; the loggers build on them), for k eigenvalues:

        - ``call``: 0, 1, … (int64);
        - ``step``: the ``step`` passed to the call (nullable ``Int64``; ``<NA>`` where none was);
        - ``value``, ``residual``, ``error_bound``: the top eigenvalue λ₁ (``which``'s first), its
          residual ‖Hv − λv‖ and error bound (float64);
        - ``converged``: every eigenpair of the call passed the stopping test (bool);
        - ``num_matvecs``: products the call used (int64);
        - ``wall_time_s``: seconds the call took (float64);
        - for k ≥ 2, then ``value_2``, ``residual_2``, ``error_bound_2``, … ``value_k``, … (λ_i in
          ``which``'s order).

        An empty history gives the same columns and no rows.
        """
        suffixes = [""] + [f"_{i + 1}" for i in range(1, self.k)]
        columns: dict[str, list] = {"call": [], "step": [], "value": [], "residual": [], "error_bound": [],
                                    "converged": [], "num_matvecs": [], "wall_time_s": []}
        for s in suffixes[1:]:
            columns.update({f"value{s}": [], f"residual{s}": [], f"error_bound{s}": []})
        for i, (res, step, wall) in enumerate(zip(self.history, self.steps, self.wall_times)):
            columns["call"].append(i)
            columns["step"].append(pd.NA if step is None else step)
            columns["converged"].append(res.all_converged)
            columns["num_matvecs"].append(int(res.num_matvecs))
            columns["wall_time_s"].append(float(wall))
            for j, s in enumerate(suffixes):
                columns[f"value{s}"].append(float(res.values[j]))
                columns[f"residual{s}"].append(float(res.residuals[j]))
                columns[f"error_bound{s}"].append(float(res.error_bounds[j]))
        dtypes = {"call": "int64", "step": "Int64", "converged": "bool", "num_matvecs": "int64"}
        return pd.DataFrame({n: pd.Series(v, dtype=dtypes.get(n, "float64")) for n, v in columns.items()})

    @property
    def num_matvecs(self) -> int:
        """Products used by all estimates so far (the determinism probe not included)."""
        return sum(r.num_matvecs for r in self.history)

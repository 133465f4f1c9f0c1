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

from torch import Tensor, nn

from ..seeds import derive_seed
from .hessian import HessianOperator
from .lanczos import EigenResult, WarmStart, check_eigen_options, lanczos_eigenpairs


class SharpnessTracker:
    """Top-k Hessian eigenvalues of ``model``'s data-set loss, estimated again at each call.

    Args:
        model, loss, X, y, chunk_size, reduction, reuse, check_determinism: as for
            :class:`~implicitlab.diagnostics.hessian.HessianOperator` (the determinism probe runs
            once, at construction).
        k, which, tol, criterion, max_matvecs, explicit_residuals: as for
            :func:`~implicitlab.diagnostics.lanczos.lanczos_eigenpairs`; ``criterion`` defaults to
            ``"gap"`` here (the r²/gap estimate of the eigenvalue error).
        extrapolate: start from the extrapolation of the last two eigenvectors (module docstring).

    Attributes:
        operator: the :class:`HessianOperator`; history: one :class:`EigenResult` per call;
        warm: the :class:`~implicitlab.diagnostics.lanczos.WarmStart` (the last two eigenvector
        blocks, signs aligned).

    Example::

        tracker = SharpnessTracker(model, "ce", X, y, reuse="linearized")
        for step in range(steps):
            ...  # an optimizer step
            if step % 10 == 0:
                res = tracker()   # res.values[0], res.residuals[0], res.num_matvecs
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
        reduction: str = "mean",
        reuse: str = "graph",
        check_determinism: bool = True,
        seed: int = 0,
    ) -> None:
        self.operator = HessianOperator(
            model, loss, X, y, chunk_size=chunk_size, reduction=reduction, reuse=reuse,
            check_determinism=check_determinism, seed=seed,
        )
        check_eigen_options(self.operator, k=k, which=which, tol=tol, criterion=criterion, max_matvecs=max_matvecs)
        self.k, self.which, self.tol, self.criterion = k, which, tol, criterion
        self.max_matvecs, self.explicit_residuals, self.seed = max_matvecs, explicit_residuals, seed
        self.warm = WarmStart(extrapolate)
        self.history: list[EigenResult] = []

    def start_vector(self) -> Tensor | None:
        """The warm start of the next estimate: ``(D, k)`` or None before the first."""
        return self.warm.vector()

    def __call__(self) -> EigenResult:
        """Estimate at the model's current parameters, warm-started; appended to ``history``."""
        res = lanczos_eigenpairs(
            self.operator, k=self.k, which=self.which, tol=self.tol, criterion=self.criterion,
            v0=self.start_vector(), max_matvecs=self.max_matvecs, explicit_residuals=self.explicit_residuals,
            seed=derive_seed(self.seed, "lanczos_start", len(self.history)),
        )
        self.warm.update(res.vectors)
        self.history.append(res)
        return res

    @property
    def num_matvecs(self) -> int:
        """Products used by all estimates so far (the determinism probe not included)."""
        return sum(r.num_matvecs for r in self.history)

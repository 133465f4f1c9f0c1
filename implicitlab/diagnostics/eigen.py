"""Sharpness of one model, and the power-iteration baseline.

:func:`sharpness` builds a :class:`~implicitlab.diagnostics.hessian.HessianOperator` for a model's
data-set loss and runs the package's Lanczos (:func:`~implicitlab.diagnostics.lanczos.lanczos_eigenpairs`:
residuals, stopping rules, precision and non-finite policy are described there). An ensemble's
runs are measured at once by :func:`~implicitlab.diagnostics.ensemble_curvature.ensemble_sharpness`,
with the same options and result fields (a leading run dimension).

:func:`power_iteration` is the baseline the benchmark compares with (PyHessian's rule: stop at a
relative change < 1e-3, at most 100 iterations).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .hessian import HessianOperator
from .lanczos import (
    EigenResult,
    basis_dtype,
    check_curvature_dtype,
    check_eigen_options,
    lanczos_eigenpairs,
    operator_dim,
    operator_dtype_device,
    start_rows,
)


def power_iteration(
    A,
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: Tensor | None = None,
    seed: int = 0,
) -> EigenResult:
    """Baseline: PyHessian-style power iteration for the largest-*magnitude* eigenvalue.

    θ_t = v_tᵀ A v_t, v_{t+1} = A v_t / ‖A v_t‖; stops when |θ_t − θ_{t−1}| / (|θ_{t−1}| + 1e-6) < tol
    (PyHessian's rule and defaults: tol = 1e-3, 100 iterations). Returns the last Rayleigh quotient
    with its residual ‖A v_t − θ_t v_t‖ (free: A v_t is at hand); ``converged`` means the
    relative-change rule fired — not that the residual is small.
    """
    dim = operator_dim(A)
    op_dtype, device = operator_dtype_device(A)
    dtype = basis_dtype(op_dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    v = start_rows(v0, None, dim)
    if v is None:
        v = torch.randn(dim, generator=gen, dtype=dtype, device=device)
    elif not bool(torch.isfinite(v).all()) or float(torch.linalg.vector_norm(v)) == 0.0:
        raise ValueError("v0 must be a finite, nonzero vector")
    v = v.reshape(dim).to(dtype=dtype, device=device)
    v = v / torch.linalg.vector_norm(v)
    previous = None
    converged = False
    for it in range(1, max_iter + 1):
        Av = (A @ v.to(op_dtype)).to(dtype=dtype, device=device)
        theta = float(v @ Av)
        residual = float(torch.linalg.vector_norm(Av - theta * v))
        if previous is not None and abs(theta - previous) / (abs(previous) + 1e-6) < tol:
            converged = True
            break
        previous = theta
        if it < max_iter:
            v = Av / torch.linalg.vector_norm(Av)
    return EigenResult(
        values=torch.tensor([theta], dtype=torch.float64),
        vectors=v.reshape(dim, 1),
        residuals=torch.tensor([residual], dtype=torch.float64),
        error_bounds=torch.tensor([residual], dtype=torch.float64),
        converged=torch.tensor([converged]),
        lanczos_residuals=torch.tensor([residual], dtype=torch.float64),
        num_matvecs=it,
        run_matvecs=torch.tensor(it),
        which="LM",
        tol=tol,
        criterion="relative change",
        method="power",
        residual_kind="power",
    )


def sharpness(
    model: torch.nn.Module,
    loss,
    X,
    y=None,
    *,
    k: int = 1,
    tol: float = 1e-6,
    which: str = "LA",
    v0: Tensor | None = None,
    chunk_size: int | None = None,
    max_matvecs: int | None = None,
    criterion: str = "residual",
    reduction: str | None = None,
    explicit_residuals: bool = False,
    check_determinism: bool = True,
    reuse: str = "graph",
    seed: int = 0,
    params=None,
    penalty=None,
    mode: str = "eval",
    batch=None,
    distributed=None,
) -> EigenResult:
    """Sharpness: the top-k Hessian eigenvalues of a model's data-set loss, with residuals.

    Builds a :class:`~implicitlab.diagnostics.hessian.HessianOperator` (``loss`` a name or a
    callable of ``(outputs, targets)`` only; ``X``, ``y``, ``chunk_size``, ``reduction``, ``reuse``,
    ``params`` (a parameter filter: names or a predicate ``(name, tensor) -> bool``), ``penalty``
    (``P(param_dict)``, added once), ``mode`` (``"eval"`` by default, whatever mode the model is
    in; ``"train_batchnorm"``; ``"model"``), ``batch`` (a loader's batch adapter) and ``distributed``
    (data parallelism over ``torch.distributed``: each rank passes its shard of the data and gets
    the same result, bit for bit; :mod:`~implicitlab.diagnostics.distributed`) as there; its
    determinism probe costs two products, not counted in ``num_matvecs``) and runs
    :func:`~implicitlab.diagnostics.lanczos.lanczos_eigenpairs` (``k``, ``which``, ``tol``, ``v0``,
    ``max_matvecs``, ``criterion``, ``explicit_residuals``, ``seed`` as there). To follow a model
    along training use :class:`~implicitlab.diagnostics.tracking.SharpnessTracker`.

    A bfloat16 or float16 model is refused before any product (ValueError naming the dtype:
    :func:`~implicitlab.diagnostics.lanczos.check_curvature_dtype`); pass a float32 or float64 copy.
    A float32 model's residuals and error bounds include the products' rounding floor
    2·ε₃₂·‖H‖ (:mod:`~implicitlab.diagnostics.lanczos`, "Precision"), so they bound the distance to
    an eigenvalue of the exact Hessian, not only of the computed one.

    Example::

        res = sharpness(model, "ce", X, y)           # res.values[0] ± res.residuals[0]
        res = sharpness(model, "ce", X, y, penalty=lambda p: wd * sum((w**2).sum() for w in p.values()))
    """
    check_curvature_dtype(model)
    H = HessianOperator(
        model, loss, X, y, chunk_size=chunk_size, reduction=reduction,
        check_determinism=check_determinism, reuse=reuse, seed=seed,
        params=params, penalty=penalty, mode=mode, batch=batch, distributed=distributed,
    )
    check_eigen_options(H, k=k, which=which, tol=tol, criterion=criterion, max_matvecs=max_matvecs)
    return lanczos_eigenpairs(
        H, k=k, which=which, tol=tol, criterion=criterion, v0=v0, max_matvecs=max_matvecs,
        explicit_residuals=explicit_residuals, seed=seed,
    )

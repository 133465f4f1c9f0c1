"""The determinism probe: is the model one fixed function of its parameters?

A Hessian is one fixed matrix only if the loss is one fixed function of θ. A model in train mode
breaks that silently: dropout draws a new mask at every call, and batch norm normalises with the
statistics of each chunk and updates its running statistics (buffers) as a side effect. Lanczos on
such an "operator" returns numbers, but not eigenvalues of anything (curvlinops runs the same
check before trusting an operator). The operator's objective declares its mode (eval by default:
:mod:`~implicitlab.diagnostics.objective`), so dropout and batch norm only reach the probe with
``mode="model"``; it still catches anything else that is random or stateful (a custom module
drawing random numbers, a forward that writes its buffers, a loader yielding other data).

:func:`check_determinism` applies a product twice to one random vector: the two results must
agree to ``rtol`` (default √ε of the dtype) and the model's buffers must be unchanged (they are
restored either way). A failure raises :class:`NondeterministicHessianError`, naming the
dropout/batch-norm modules in train mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

# module types whose train-mode forward is random (dropout) or depends on the batch (batch norm)
SUSPECT_MODULES = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


class NondeterministicHessianError(RuntimeError):
    """The model is not one fixed function of its parameters (train mode, dropout, batch norm)."""


def suspects_in_train_mode(model: nn.Module) -> list[tuple[str, str]]:
    """``(name, type name)`` of the dropout/batch-norm modules in train mode (name '' for the root)."""
    return [
        (n, type(m).__name__) for n, m in model.named_modules() if isinstance(m, SUSPECT_MODULES) and m.training
    ]


def restore_buffers(model: nn.Module, saved: dict[str, Tensor]) -> list[str]:
    """Copy ``saved`` back into the model's buffers; returns the names of those that had changed."""
    changed = []
    with torch.no_grad():
        for n, b in model.named_buffers():
            if n in saved and not torch.equal(b, saved[n]):
                changed.append(n)
                b.copy_(saved[n])
    return changed


def _suspects_message(model: nn.Module, mode: str | None) -> str:
    if mode not in (None, "model"):  # the objective sets the modes itself: not dropout or batch norm
        return (
            f" The objective is measured in mode {mode!r} (dropout off, batch norm deterministic), so the "
            "cause is elsewhere: a module that draws random numbers or writes its buffers in forward, "
            "or data that differ between passes."
        )
    found = [f"{n or t} ({t})" for n, t in suspects_in_train_mode(model)]
    state = "train" if model.training else "eval"
    return (
        f" The model is in {state} mode; dropout/batch-norm modules in train mode: {found or 'none'}. "
        "Call model.eval() first, or measure a declared objective (mode='eval', the default, or "
        "mode='train_batchnorm')."
    )


def check_determinism(
    matvec: Callable[[Tensor], Tensor],
    model: nn.Module,
    dim: int,
    *,
    dtype: torch.dtype,
    device: torch.device,
    rtol: float | None = None,
    seed: int = 0,
    mode: str | None = None,
) -> None:
    """Raise unless two products ``matvec(v)`` with one random v ``(dim,)`` agree and leave the buffers be.

    Args:
        matvec: v ``(dim,)`` → H v, computed afresh (nothing kept from an earlier call).
        model: the model behind ``matvec``; its buffers are compared before and after, and restored.
        dim, dtype, device: of v (those of the operator).
        rtol: relative tolerance ‖Hv − Hv'‖ ≤ rtol ‖Hv‖ (default √ε of ``dtype``: 1.5e-8 in float64).
        seed: seed of v (a generator of its own; the global RNG is not touched).
        mode: the objective's declared mode (:mod:`~implicitlab.diagnostics.objective`), for the
            message; None or ``"model"``: the model's own mode.

    Raises:
        NondeterministicHessianError: the buffers changed, or the two products differ.
        ValueError: the product is not finite.
    """
    if rtol is None:
        rtol = float(torch.finfo(dtype).eps) ** 0.5
    gen = torch.Generator(device=device).manual_seed(seed)
    v = torch.randn(dim, generator=gen, device=device, dtype=dtype)
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    try:
        first = matvec(v)
        second = matvec(v)
    finally:
        changed = restore_buffers(model, buffers)
    suspects = _suspects_message(model, mode)
    if changed:
        raise NondeterministicHessianError(
            f"computing Hessian-vector products changed the model's buffers {changed}: batch-norm "
            "layers in train mode update their running statistics and normalise with chunk "
            f"statistics, so the Hessian is not one fixed matrix.{suspects} (The buffers have been restored.)"
        )
    if not torch.isfinite(first).all():
        raise ValueError("the Hessian-vector product is not finite (overflow in the loss or the model?)")
    diff = float(torch.linalg.vector_norm(first - second))
    scale = float(torch.linalg.vector_norm(first))
    if diff > rtol * scale:
        raise NondeterministicHessianError(
            "determinism probe failed: two Hessian-vector products with the same vector differ "
            f"(relative difference {diff / max(scale, 1e-300):.2e} > {rtol:.1e}). The model is not one "
            "fixed function of its parameters: in train mode, dropout draws a new mask at each "
            f"call and batch norm uses batch statistics.{suspects}"
        )

"""Losses on outputs and margins, each with an exact log-domain form.

Shapes: ``outputs`` is ``(..., n)`` for a scalar-output model (a trailing output dimension of size
1 is squeezed) or ``(..., n, C)`` for ``"ce"``; leading dimensions (e.g. the run dimension of an
ensemble) are kept, so a reduction returns one value per run.

Targets: ``y ∈ {−1, +1}`` for ``"exp"`` and ``"logistic"``; integer class labels for ``"ce"``;
real values (``(n,)`` or ``(n, C)``) for ``"square"``. Nothing is mapped silently: labels in {0, 1}
for a ±1 loss, targets ``(n, 1)`` for ``"ce"`` or one-hot floats are refused by
:func:`check_targets` with a message saying what was expected (``y = 2*y - 1``, ``y.squeeze(-1)``,
``y.argmax(-1)``).

Conventions (the papers differ; both are selectable through ``reduction``):

- ``"square"``: ℓ = (y − f)², summed over outputs, **no ½** (Marion & Chizat 2024, R(W) = (1/n)Σ…).
- ``"exp"``: ℓ(m) = e^{−m};  ``"logistic"``: ℓ(m) = log(1 + e^{−m});
  ``"ce"``: ℓ = log Σ_j e^{f_j} − f_y = softplus(log Σ_{j≠y} e^{−(f_y − f_j)}).
- ``reduction="mean"`` (default) divides by n; ``"sum"`` is the Soudry et al. / Poggio et al.
  convention L(w) = Σ_n ℓ(y_n wᵀx_n).

Exponential-type losses fall below e^{−745} (float64 underflow) long before gradient descent is
done with them. :func:`log_loss` computes log L from the margins with log-sum-exp and a log-domain
softplus, so it is finite and exact when L = e^{−1000}; normalized GD (step ∝ 1/L, Nacson et al.
2019) uses ∇ log L = ∇L / L, which needs no division by an underflowed number.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

LossName = Literal["square", "exp", "logistic", "ce"]
LOSSES: tuple[str, ...] = ("square", "exp", "logistic", "ce")
EXPONENTIAL_TYPE: frozenset[str] = frozenset({"exp", "logistic", "ce"})

# Below this argument, log(softplus(z)) = z + log1p(-e^z/2 + e^{2z}/3 - …) ≈ z - e^z/2 with a
# relative error under e^{2z} ≈ 4e-18: exact in float64.
_SOFTPLUS_SWITCH = -20.0


def check_loss_name(name: str) -> None:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSSES)}")


def _found(values: torch.Tensor, limit: int = 6) -> str:
    """``{0, 1}``: the distinct values of a label tensor, for a message (at most ``limit`` of them)."""
    u = torch.unique(values.detach().cpu())
    shown = [int(v) if float(v).is_integer() else float(v) for v in u[:limit].tolist()]
    return "{" + ", ".join(map(str, shown)) + (", …}" if u.numel() > limit else "}")


def _per_example_shape(output_shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """(leading shape ``(…, n)``, number of outputs C) of outputs ``(…, n)`` or ``(…, n, C)``."""
    if len(output_shape) == 1:
        return output_shape, 1
    return output_shape[:-1], output_shape[-1]


def _is_suffix(shape: tuple[int, ...], of: tuple[int, ...]) -> bool:
    return 1 <= len(shape) <= len(of) and shape == of[len(of) - len(shape):]


def check_targets(
    name: str,
    targets: torch.Tensor,
    output_shape: tuple[int, ...] | torch.Size | None = None,
    *,
    values: bool = True,
) -> None:
    """Refuse targets that ``name`` would silently misread, with a one-line message saying what was expected.

    Policy (one for every entry point: training, curvature, margins): nothing is mapped silently.

    - ``"exp"``, ``"logistic"`` and ``"margin"`` (the margins of :func:`margins`): labels in {−1, +1},
      shape ``(…, n)``, for a scalar output; class indices in [0, C) for C > 1 outputs. Labels in
      {0, 1} are refused with the mapping to use (``y = 2*y - 1``): class 0 would get margin 0.
    - ``"ce"``: integer class indices in [0, C), shape ``(…, n)`` — not ``(n, 1)``, not one-hot.
    - ``"square"``: finite real targets ``(…, n)`` or ``(…, n, 1)`` for a scalar output,
      ``(…, n, C)`` for C outputs.

    Args:
        name: a loss name (:data:`LOSSES`) or ``"margin"``.
        targets: the labels or targets.
        output_shape: the model's outputs ``(…, n)`` or ``(…, n, C)`` (e.g. ``(R, n, C)`` for an
            ensemble, where targets ``(n,)`` are shared by the runs); None checks dtypes and values only
            (then ``"exp"``/``"logistic"``/``"margin"`` expect ±1 labels).
        values: also check the values (one device synchronisation). False checks shapes and dtypes
            only, which a fake-tensor trace (``make_fx``) can run.
    Raises:
        ValueError: naming what was expected and what was found.
    """
    what = "margins" if name == "margin" else f"the {name!r} loss"
    if name != "margin":
        check_loss_name(name)
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets for {what} must be a tensor, got {type(targets).__name__}")
    if targets.dtype == torch.bool or targets.is_complex():
        raise ValueError(f"targets for {what} must be real numbers or integer labels, got dtype {targets.dtype}")
    shape = tuple(targets.shape)
    lead, C = _per_example_shape(tuple(output_shape)) if output_shape is not None else (None, 1)
    classes = name == "ce" or (name in ("exp", "logistic", "margin") and C > 1)

    if classes:
        if targets.is_floating_point():
            raise ValueError(
                f"{what}{'' if name == 'ce' else f' with {C} outputs'} needs integer class indices of shape (n,), "
                f"got dtype {targets.dtype}"
                + (": for one-hot targets use y.argmax(-1)" if targets.ndim >= 2 else ": use y.long()")
            )
        if output_shape is not None and (len(output_shape) < 2 or not _is_suffix(shape, lead)):
            hint = ": use y.squeeze(-1)" if shape[-1:] == (1,) and _is_suffix(shape[:-1], lead or ()) else ""
            raise ValueError(
                f"{what} needs class indices of shape {lead[-1:] if len(output_shape) >= 2 else '(n,)'} for outputs "
                f"{tuple(output_shape)} (n examples, C classes), got targets of shape {shape}{hint}"
            )
        if values and targets.numel():
            top = C if output_shape is not None else None
            bad = (targets < 0) | (targets >= top) if top is not None else targets < 0
            if bool(bad.any()):
                bound = f"[0, {top})" if top is not None else "[0, C)"
                raise ValueError(f"class indices for {what} must lie in {bound}, got {_found(targets)}")
        return

    if name == "square":
        if output_shape is not None:
            ok = _is_suffix(shape, tuple(output_shape)) or (C == 1 and _is_suffix(shape, lead))
            if not ok:
                want = f"(…, n, {C})" if C > 1 else "(…, n) or (…, n, 1)"
                raise ValueError(
                    f"{what} needs targets of shape {want} for outputs {tuple(output_shape)}, got {shape}"
                )
        if values and targets.is_floating_point() and not bool(torch.isfinite(targets).all()):
            bad = int((~torch.isfinite(targets)).sum())
            raise ValueError(f"targets for {what} hold {bad} non-finite values (NaN or inf)")
        return

    # ±1 labels with a scalar output
    if output_shape is not None and not _is_suffix(shape, lead):
        hint = ": use y.squeeze(-1)" if shape[-1:] == (1,) and _is_suffix(shape[:-1], lead) else ""
        raise ValueError(
            f"{what} needs labels of shape {lead[-1:]} (-1/+1, one per example) for outputs "
            f"{tuple(output_shape)}, got {shape}{hint}"
        )
    if values and targets.numel() and not bool(((targets == 1) | (targets == -1)).all()):
        found = _found(targets)
        binary01 = bool(((targets == 0) | (targets == 1)).all())
        how = ("use y = 2*y - 1" if binary01 else
               "map the two classes to -1 and +1 (for more classes use C outputs and class indices)")
        raise ValueError(f"labels must be -1/+1 for {what}, got {found}: {how}")


def _squeeze_scalar(outputs: torch.Tensor) -> torch.Tensor:
    return outputs.squeeze(-1) if outputs.shape[-1:] == (1,) and outputs.ndim > 1 else outputs


def margins(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Margins ``(..., n)``: ``y·f`` for a scalar output, ``f_y − max_{j≠y} f_j`` for classes.

    Labels are checked first (:func:`check_targets` with ``"margin"``): −1/+1 for a scalar output,
    class indices in [0, C) for C > 1 outputs; anything else is refused, never mapped.
    """
    check_targets("margin", targets, outputs.shape)
    return _margins(outputs, targets)


def _margins(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:func:`margins` without the check (the losses' hot path; their callers check once)."""
    if outputs.ndim >= 2 and outputs.shape[-1] > 1 and targets.dtype in (torch.int64, torch.int32):
        f_y = outputs.gather(-1, _expand_labels(targets, outputs)).squeeze(-1)
        others = outputs.scatter(-1, _expand_labels(targets, outputs), float("-inf"))
        return f_y - others.amax(-1)
    return _squeeze_scalar(outputs) * targets.to(outputs.dtype)


def _expand_labels(targets: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    idx = targets.long().unsqueeze(-1)
    return idx.expand(*outputs.shape[:-1], 1)


def softplus(z: torch.Tensor) -> torch.Tensor:
    """log(1 + e^z), exact for all z, with the exact derivative σ(z) (also at z = 0).

    (``torch.nn.functional.softplus`` switches to the identity above z = 20, a relative error of
    up to 1e-10 that the theory checks would see.)
    """
    pos = torch.clamp(z, min=0.0)  # each branch sees only arguments where it cannot overflow,
    neg = torch.clamp(z, max=0.0)  # so the unselected branch contributes a zero gradient, not NaN
    return torch.where(z > 0, pos + torch.log1p(torch.exp(-pos)), torch.log1p(torch.exp(neg)))


def log_softplus(z: torch.Tensor) -> torch.Tensor:
    """log(log(1 + e^z)), exact for all z including z = −1000 (where softplus underflows)."""
    safe = torch.clamp(z, min=_SOFTPLUS_SWITCH)
    tail = torch.clamp(z, max=_SOFTPLUS_SWITCH)
    return torch.where(
        z > _SOFTPLUS_SWITCH,
        torch.log(softplus(safe)),
        tail - 0.5 * torch.exp(tail),
    )


def _ce_log_others(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """a_n = log Σ_{j≠y} e^{f_j − f_y}, so that ce_n = softplus(a_n)."""
    idx = _expand_labels(targets, outputs)
    shifted = outputs - outputs.gather(-1, idx)
    return torch.logsumexp(shifted.scatter(-1, idx, float("-inf")), dim=-1)


def loss_terms(name: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example losses ``(..., n)``.

    Shapes and dtypes of the targets are checked (:func:`check_targets`, ``values=False``: no device
    synchronisation, safe under a trace); their values are checked once by the callers that own
    the data (``gradient_descent``, the Hessian operator, the margins).
    """
    check_loss_name(name)
    check_targets(name, targets, outputs.shape, values=False)
    if name == "square":
        t = targets.to(outputs.dtype)
        if t.ndim >= 2 and t.shape[-1] == outputs.shape[-1] > 1:  # (…, n, C) vector targets
            return ((outputs - t) ** 2).sum(-1)
        if t.ndim >= 1 and t.shape[-1] == 1 and outputs.shape[-1] == 1:
            t = t.squeeze(-1)
        return (_squeeze_scalar(outputs) - t) ** 2  # scalar targets (…, n)
    if name == "exp":
        return torch.exp(-_margins(outputs, targets))
    if name == "logistic":
        return softplus(-_margins(outputs, targets))
    return softplus(_ce_log_others(outputs, targets))


def log_loss_terms(name: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log ℓ_n ``(..., n)``, computed without forming ℓ_n for exponential-type losses."""
    check_loss_name(name)
    check_targets(name, targets, outputs.shape, values=False)
    if name == "exp":
        return -_margins(outputs, targets)
    if name == "logistic":
        return log_softplus(-_margins(outputs, targets))
    if name == "ce":
        return log_softplus(_ce_log_others(outputs, targets))
    return torch.log(loss_terms(name, outputs, targets))


def _reduce(terms: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return terms.mean(-1)
    if reduction == "sum":
        return terms.sum(-1)
    raise ValueError(f"unknown reduction {reduction!r}; use 'mean' or 'sum'")


def loss(name: str, outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The reduced loss, one value per leading index (per run for an ensemble)."""
    return _reduce(loss_terms(name, outputs, targets), reduction)


def log_loss(name: str, outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """log L, finite and exact for exponential-type losses far below float64's underflow.

    log L = logsumexp_n(log ℓ_n) − [log n if mean]. For ``"square"`` this is log of the loss
    (−inf at an exact interpolant).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"unknown reduction {reduction!r}; use 'mean' or 'sum'")
    terms = log_loss_terms(name, outputs, targets)
    out = torch.logsumexp(terms, dim=-1)
    if reduction == "mean":
        out = out - math.log(terms.shape[-1])
    return out


class SquareLossStats:
    """Sufficient statistics of the square loss for linear networks.

    For a linear network with end-to-end matrix P ``(R, d_out, d)`` the square loss depends on the
    data only through Σ = XᵀX/n, b = XᵀY/n and c = ‖Y‖²/n (without the 1/n for ``reduction="sum"``):
    R(P) = tr(PΣPᵀ) − 2 tr(Pb) + c, so a loss, gradient or Hessian–vector product costs O(L d³)
    whatever n is. Training (:mod:`implicitlab.train.gd`) and the ensemble curvature
    (:mod:`implicitlab.diagnostics.ensemble_curvature`) both use it. Near an interpolant the
    expanded form cancels; evaluate the loss from the residuals where that matters.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, reduction: str):
        n = X.shape[0]
        Y = y.reshape(n, -1).to(X.dtype)  # (n, d_out)
        scale = 1.0 / n if reduction == "mean" else 1.0
        self.sigma = scale * X.T @ X  # (d, d)
        self.b_t = scale * (X.T @ Y).T  # (d_out, d)
        self.c = scale * (Y**2).sum()

    def times_sigma(self, P: torch.Tensor) -> torch.Tensor:
        """P Σ as one GEMM over all runs (a broadcast matmul would copy Σ per run)."""
        return (P.reshape(-1, P.shape[-1]) @ self.sigma).reshape(P.shape)

    def loss(self, P: torch.Tensor) -> torch.Tensor:
        """P ``(R, d_out, d)`` → per-run loss ``(R,)``."""
        quad = (self.times_sigma(P) * P).sum((-1, -2))
        lin = (P * self.b_t).sum((-1, -2))
        return quad - 2.0 * lin + self.c

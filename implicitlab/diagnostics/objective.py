"""The data-set objective a curvature is taken of: loss resolution, checks and chunking.

For a model f(θ; x) with trainable parameters θ ∈ R^D (flattened in ``named_parameters`` order),
data {(x_n, y_n)}_{n=1..N} and a loss, :class:`DatasetObjective` is

    R(θ) = (1/N) Σ_n ℓ(f(θ; x_n), y_n)        (``reduction="mean"``, the default)

evaluated chunk by chunk: the data are cut into chunks of at most ``chunk_size`` examples, and
for chunk c with n_c examples and batch-mean loss R_c, R = Σ_c (n_c / N) R_c, so memory is that of
one chunk whatever N. ``reduction="sum"`` gives Σ_n ℓ_n (= N × the mean one), Soudry et al.'s
convention.

Conventions of the named losses (they are :mod:`implicitlab.losses`, so that training and
curvature use one definition):

- ``"square"``: ℓ = ‖f(x) − y‖², summed over outputs, **no ½** — Marion & Chizat (2024),
  R(W) = (1/n) Σ_i (y_i − W_L⋯W_1 x_i)². (PyTorch's ``MSELoss`` would also divide by the number of
  outputs; with one output the two agree.)
- ``"exp"``: ℓ = exp(−y f), y ∈ {±1}, scalar output;  ``"logistic"``: ℓ = softplus(−y f);
- ``"ce"``: cross-entropy with integer labels, ``(B, C)`` logits;
- a callable ``loss(outputs, targets) -> scalar``: the *mean* over the batch (PyTorch's convention).

Checks (no silent wrong answer): all trainable parameters share one floating dtype and one device
(the objective's); data are moved to that device and floating data cast to that dtype; an empty
data set and mismatched X/y lengths are errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Union

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .. import losses as _losses

LossSpec = Union[str, Callable[[Tensor, Tensor], Tensor]]

DEFAULT_CHUNK_SIZE = 256  # examples per chunk: bounds memory; CPU-cache friendly (raise it on a GPU)


def check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"unknown reduction {reduction!r}; use 'mean' or 'sum'")


def resolve_loss(loss: LossSpec) -> Callable[[Tensor, Tensor], Tensor]:
    """The batch-mean loss ``(outputs, targets) -> scalar`` for a loss name or callable."""
    if callable(loss):
        return loss
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a name or a callable, got {type(loss).__name__}")
    _losses.check_loss_name(loss)
    name = loss

    def batch_mean(outputs: Tensor, targets: Tensor) -> Tensor:
        if name in ("exp", "logistic") and outputs.reshape(outputs.shape[0], -1).shape[1] != 1:
            raise ValueError(f"loss {name!r} needs one output per example, got outputs {tuple(outputs.shape)}")
        if name == "ce" and (outputs.ndim != 2 or targets.is_floating_point()):
            raise ValueError("loss 'ce' needs (B, C) logits and integer labels (B,)")
        if name == "square":
            per_out, per_target = outputs[0].numel(), targets[0].numel() if targets.ndim else 1
            if per_out != per_target:
                raise ValueError(
                    f"loss 'square' needs as many targets as outputs per example: outputs "
                    f"{tuple(outputs.shape)}, targets {tuple(targets.shape)}"
                )
            outputs, targets = outputs.reshape(outputs.shape[0], -1), targets.reshape(targets.shape[0], -1)
        return _losses.loss(name, outputs, targets, "mean")

    return batch_mean


def trainable_parameters(model: nn.Module) -> tuple[list[str], list[Tensor]]:
    """Names and tensors of the parameters with ``requires_grad``; one dtype and device, or an error."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters (none with requires_grad=True)")
    names, params = zip(*named)
    dtypes = {p.dtype for p in params}
    devices = {p.device for p in params}
    if len(dtypes) > 1 or len(devices) > 1:
        where = ", ".join(f"{n}: {p.dtype} on {p.device}" for n, p in named)
        raise ValueError(
            "the model's parameters sit on several dtypes/devices "
            f"({sorted(map(str, dtypes))}, {sorted(map(str, devices))}); the Hessian operator needs "
            f"one of each — move the model with model.to(device, dtype). Parameters: {where}"
        )
    if not params[0].is_floating_point():
        raise ValueError(f"parameters must be floating point, got {params[0].dtype}")
    return list(names), list(params)


def check_data(X, y) -> tuple[object, int | None]:
    """Validate ``(X, y)`` tensors or a loader; returns the data and N (None for a loader)."""
    if isinstance(X, Tensor):
        if y is None:
            raise ValueError("y is required when X is a tensor")
        y = torch.as_tensor(y)
        if y.ndim == 0 or X.ndim == 0 or X.shape[0] != y.shape[0]:
            raise ValueError(
                f"X and y must hold the same number of examples: shapes {tuple(X.shape)} and {tuple(y.shape)}"
            )
        if X.shape[0] == 0:
            raise ValueError("the data set is empty (X has 0 examples)")
        return (X, y), int(X.shape[0])
    if y is not None:
        raise ValueError("pass y only with a tensor X; a loader yields (X, y) batches itself")
    if not isinstance(X, Iterable):
        raise TypeError(f"X must be a tensor or an iterable of (X, y) batches, got {type(X).__name__}")
    return X, None


def iterate_chunks(data, chunk_size: int, device: torch.device, dtype: torch.dtype) -> Iterator[tuple[Tensor, Tensor]]:
    """``(X_c, y_c)`` chunks of ≤ ``chunk_size`` examples on ``device``; floating data cast to ``dtype``."""

    def move(t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device=device)

    batches = [data] if isinstance(data, tuple) else data
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"a data loader must yield (X, y) pairs, got {type(batch).__name__}")
        Xb, yb = batch
        # balanced: ⌈n/⌈n/chunk_size⌉⌉ examples per chunk (1000 at 256 → 4 × 250, not 3 × 256 + 232),
        # so chunks share one shape as often as possible (one trace for the linearized program)
        n = int(Xb.shape[0])
        size = -(-n // max(1, -(-n // chunk_size)))
        for start in range(0, n, size):
            yield move(Xb[start : start + size]), move(yb[start : start + size])


class DatasetObjective:
    """R(θ) of a model, a loss and a data set, chunk by chunk (module docstring).

    Args:
        model: any ``nn.Module``; its parameters with ``requires_grad`` are the variables θ, in
            ``named_parameters()`` order (frozen ones, and buffers, are constants).
        loss: ``"square"``, ``"exp"``, ``"logistic"``, ``"ce"`` or a callable
            ``loss(outputs, targets) -> scalar`` returning the batch mean.
        X: inputs ``(N, ...)``, or an iterable of ``(X_b, y_b)`` batches (a ``DataLoader``; it is
            iterated once per pass, so it must yield the same examples each time).
        y: targets ``(N, ...)`` when ``X`` is a tensor; ``None`` for a loader.
        chunk_size: at most this many examples per forward pass (default 256); loader batches
            larger than this are split. Changes memory and speed, not the result.
        reduction: ``"mean"`` (default) or ``"sum"`` over the N examples.

    Attributes:
        names, shapes, numels: the trainable parameters'; dim: D = Σ numels; dtype, device: those
        of the parameters; num_examples: N (None for a loader until a pass has counted it).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossSpec,
        X: Tensor | Iterable,
        y: Tensor | None = None,
        *,
        chunk_size: int | None = None,
        reduction: str = "mean",
    ) -> None:
        chunk_size = DEFAULT_CHUNK_SIZE if chunk_size is None else int(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        self.model = model
        check_reduction(reduction)
        self.loss_fn = resolve_loss(loss)
        self.reduction = reduction
        self.chunk_size = chunk_size
        self.names, params = trainable_parameters(model)
        self.shapes = [p.shape for p in params]
        self.numels = [p.numel() for p in params]
        self.dtype: torch.dtype = params[0].dtype
        self.device: torch.device = params[0].device
        self.dim = sum(self.numels)
        self.data, self.num_examples = check_data(X, y)

    def chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The data as ``(X_c, y_c)`` chunks on the objective's device, ≤ ``chunk_size`` each."""
        return iterate_chunks(self.data, self.chunk_size, self.device, self.dtype)

    def params(self) -> dict[str, Tensor]:
        """The model's current trainable parameters θ by name, detached."""
        current = dict(self.model.named_parameters())
        return {n: current[n].detach() for n in self.names}

    def constants(self) -> dict[str, Tensor]:
        """The model's frozen parameters and buffers by name, detached."""
        trainable = set(self.names)
        fixed = {n: p.detach() for n, p in self.model.named_parameters() if n not in trainable}
        fixed.update({n: b.detach() for n, b in self.model.named_buffers()})
        return fixed

    def state(self) -> list[Tensor]:
        """Everything R depends on besides the data: all parameters (frozen ones included) and
        buffers, detached (the train/eval mode aside)."""
        return [t.detach() for t in self.model.parameters()] + [b.detach() for b in self.model.buffers()]

    def chunk_loss(self, params: dict[str, Tensor], Xc: Tensor, yc: Tensor) -> Tensor:
        """R_c at ``params`` (θ by name): the batch-mean loss of one chunk."""
        return self.loss_fn(functional_call(self.model, params, (Xc,)), yc)

    def tangents(self, V: Tensor) -> dict[str, Tensor]:
        """The rows of ``V`` ``(m, D)`` cut into parameter-shaped tangents ``(m, *shape)``, by name."""
        parts = torch.split(V, self.numels, dim=1)
        return {n: p.reshape(V.shape[0], *s) for n, p, s in zip(self.names, parts, self.shapes)}

    def loss_and_gradient(self) -> tuple[float, Tensor]:
        """R(θ) and its flat gradient ∇R ``(D,)`` at the model's current parameters, chunked."""
        params = self.params()
        value_and_grad = torch.func.grad_and_value(self.chunk_loss)
        total_g = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        total_l = torch.zeros((), dtype=self.dtype, device=self.device)
        count = 0
        for Xc, yc in self.chunks():
            n_c = int(Xc.shape[0])
            g, value = value_and_grad(params, Xc, yc)
            total_g += n_c * torch.cat([g[n].reshape(-1) for n in self.names])
            total_l += n_c * value.detach()
            count += n_c
        if count == 0:
            raise ValueError("the data set is empty (the loader yielded no examples)")
        scale = 1.0 if self.reduction == "sum" else 1.0 / count
        return float(total_l * scale), total_g * scale

"""The data-set objective a curvature is taken of: loss resolution, checks and chunking.

For a model f(θ; x) with parameters θ ∈ R^D (the trainable ones, or those a ``params`` filter
selects, flattened in ``named_parameters`` order), data {(x_n, y_n)}_{n=1..N}, a loss and an
optional ``penalty``, :class:`DatasetObjective` is

    R(θ) = (1/N) Σ_n ℓ(f(θ; x_n), y_n) + P(θ)        (``reduction="mean"``, the named losses' default)
    R(θ) = Σ_n ℓ(f(θ; x_n), y_n) + P(θ)              (``reduction="sum"``, Soudry et al.'s convention)

evaluated chunk by chunk: the data are cut into chunks of at most ``chunk_size`` examples, and
for chunk c with n_c examples and batch-mean loss R_c, the data term is Σ_c (n_c / N) R_c, so
memory is that of one chunk whatever N. The penalty P is added once, to the full-data objective.

Conventions of the named losses (they are :mod:`implicitlab.losses`, so that training and
curvature use one definition):

- ``"square"``: ℓ = ‖f(x) − y‖², summed over outputs, **no ½** — Marion & Chizat (2024),
  R(W) = (1/n) Σ_i (y_i − W_L⋯W_1 x_i)². (PyTorch's ``MSELoss`` would also divide by the number of
  outputs; with one output the two agree.)
- ``"exp"``: ℓ = exp(−y f), y ∈ {±1}, scalar output;  ``"logistic"``: ℓ = softplus(−y f);
- ``"ce"``: cross-entropy with integer labels, ``(B, C)`` logits;
- a callable ``loss(outputs, targets) -> scalar``: a function of the model's outputs and the
  targets **only** (a term that reads the module's parameters, such as weight decay written into
  the loss, is not seen by the functional call: pass it as ``penalty``). It must sum or average
  per-example terms over the batch: which one is detected before any product, on the first chunk
  and a split of it (a sum is additive over the split, a mean is the size-weighted average of its
  parts); anything else is refused as not decomposable. With ``reduction=None`` (default) the
  objective follows the callable (a sum over the batch gives the sum over the data set); an
  explicit ``reduction`` that disagrees with it is refused.

``penalty``: a callable of the parameter dict (name → tensor, every parameter of the model by its
``named_parameters`` name: the variables θ and the held-fixed ones) returning a scalar, e.g.
``lambda p: wd * sum((w**2).sum() for w in p.values())``.

``params``: the parameters the curvature is taken over — a list of names, or a predicate
``(name, tensor) -> bool`` over the trainable parameters; the others are held fixed (the Hessian
is the block of the selected ones). Default: every parameter with ``requires_grad``.

``mode``: the objective measured, whatever mode the model is in when it is called (its mode and
buffers are left as found):

- ``"eval"`` (default): every module in eval mode (dropout off, batch norm with its running
  statistics);
- ``"train_batchnorm"``: dropout off, batch norm normalising with the statistics of the *full*
  data set (one chunk of N examples; the running statistics are neither read nor updated);
- ``"model"``: the model's own mode at each call (train-mode dropout or batch norm is then refused
  by the determinism probe).

Checks, all before any product (no silent wrong answer): the parameters share one floating dtype
and one device (the objective's); data are moved to that device and floating data cast to that
dtype; an empty data set, mismatched X/y lengths and NaN/inf values in X or y are errors; a data
loader must be re-iterable (a ``DataLoader`` or a list of batches, not a generator) and yield the
same examples on every pass (no random sampler, no dropped last batch); a batch that is not an
``(X, y)`` pair needs a ``batch`` adapter, e.g. ``batch=lambda b: (b["x"], b["y"])``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Union

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import DataLoader, SequentialSampler

from .. import losses as _losses

LossSpec = Union[str, Callable[[Tensor, Tensor], Tensor]]
ParamFilter = Union[Iterable[str], Callable[[str, Tensor], bool], None]
Penalty = Callable[[dict[str, Tensor]], Tensor]

MODES = ("eval", "train_batchnorm", "model")

DEFAULT_CHUNK_SIZE = 256  # examples per chunk: bounds memory; CPU-cache friendly (raise it on a GPU)


def check_reduction(reduction: str | None) -> None:
    if reduction not in ("mean", "sum", None):
        raise ValueError(f"unknown reduction {reduction!r}; use 'mean', 'sum' or None (the loss's own)")


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


def trainable_parameters(model: nn.Module, params: ParamFilter = None) -> tuple[list[str], list[Tensor]]:
    """Names and tensors of the variables θ: the parameters with ``requires_grad``, or those of them
    ``params`` selects (a list of names, or a predicate ``(name, tensor) -> bool``); one floating
    dtype and one device, or an error."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is not None:
        if callable(params):
            named = [(n, p) for n, p in named if params(n, p)]
            if not named:
                raise ValueError("the params predicate selected no trainable parameter")
        else:
            if isinstance(params, str):
                raise TypeError(f"params must be a list of names or a predicate, got the string {params!r}")
            wanted = list(params)
            every = dict(model.named_parameters())
            unknown = [n for n in wanted if n not in every]
            if unknown:
                raise ValueError(f"params names no parameter of the model: {unknown}; its parameters: {list(every)}")
            frozen = [n for n in wanted if not every[n].requires_grad]
            if frozen:
                raise ValueError(f"params selects frozen parameters (requires_grad=False): {frozen}")
            keep = set(wanted)
            named = [(n, p) for n, p in named if n in keep]  # named_parameters order
            if not named:
                raise ValueError("params is empty: select at least one parameter")
    if not named:
        raise ValueError("the model has no trainable parameters (none with requires_grad=True)")
    names, tensors = zip(*named)
    dtypes = {p.dtype for p in tensors}
    devices = {p.device for p in tensors}
    if len(dtypes) > 1 or len(devices) > 1:
        where = ", ".join(f"{n}: {p.dtype} on {p.device}" for n, p in named)
        raise ValueError(
            "the model's parameters sit on several dtypes/devices "
            f"({sorted(map(str, dtypes))}, {sorted(map(str, devices))}); the Hessian operator needs "
            f"one of each — move the model with model.to(device, dtype). Parameters: {where}"
        )
    if not tensors[0].is_floating_point():
        raise ValueError(f"parameters must be floating point, got {tensors[0].dtype}")
    return list(names), list(tensors)


def check_finite(t, what: str) -> None:
    """Raise naming ``what``, the count and the first row if the floating tensor ``t`` holds NaN or inf."""
    if not isinstance(t, Tensor) or not t.is_floating_point() or t.numel() == 0:
        return
    for bad, kind in ((torch.isnan(t), "NaN"), (torch.isinf(t), "infinite")):
        count = int(bad.sum())
        if count:
            row = int(bad.reshape(t.shape[0], -1).any(1).nonzero()[0, 0]) if t.ndim else 0
            raise ValueError(f"{what} contains {count} {kind} value{'s' if count > 1 else ''} (first at row {row})")


def check_loader(data) -> None:
    """Refuse data that would not be the same data set on every pass (a loader is iterated once per
    product): one-shot iterators, random samplers and dropped last batches."""
    if isinstance(data, Iterator):
        raise TypeError(
            f"the data must be re-iterable (a DataLoader, a list of (X, y) batches): got a "
            f"{type(data).__name__}, which is used up after one pass (a curvature needs one pass per product)"
        )
    if not isinstance(data, DataLoader):
        return
    sampler = data.sampler
    if not isinstance(sampler, SequentialSampler) and hasattr(data.dataset, "__len__"):
        raise ValueError(
            f"the DataLoader samples at random (sampler {type(sampler).__name__}, e.g. shuffle=True): it "
            "yields a different sequence on every pass, and a curvature takes one pass per product — "
            "build it with shuffle=False (the order does not change the objective)"
        )
    if data.drop_last and data.batch_size and hasattr(data.dataset, "__len__"):
        dropped = len(data.dataset) % data.batch_size
        if dropped:
            raise ValueError(
                f"the DataLoader drops its last {dropped} examples (drop_last=True, batch_size="
                f"{data.batch_size}, {len(data.dataset)} examples): the objective would leave them out — "
                "build it with drop_last=False"
            )


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
        check_finite(X, "X")
        check_finite(y, "y")
        return (X, y), int(X.shape[0])
    if y is not None:
        raise ValueError("pass y only with a tensor X; a loader yields (X, y) batches itself")
    if not isinstance(X, Iterable):
        raise TypeError(f"X must be a tensor or an iterable of (X, y) batches, got {type(X).__name__}")
    check_loader(X)
    return (list(X) if isinstance(X, tuple) else X), None  # a tuple of batches: a list (a tuple is (X, y))


def as_pair(batch, adapter: Callable | None) -> tuple[Tensor, Tensor]:
    """A loader's batch as ``(X_b, y_b)``: through ``adapter`` if given, else it must be a pair."""
    if adapter is not None:
        batch = adapter(batch)
    if isinstance(batch, dict) and adapter is None:
        raise TypeError(
            f"a data loader yielded a dict batch (keys {list(batch)}); pass an adapter, e.g. "
            f"batch=lambda b: (b[{next(iter(batch), 'x')!r}], b[...]), that returns (X, y)"
        )
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"a data loader must yield (X, y) pairs (or pass batch=...), got {type(batch).__name__}")
    return batch[0], batch[1]


def iterate_chunks(
    data, chunk_size: int, device: torch.device, dtype: torch.dtype, batch: Callable | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(X_c, y_c)`` chunks of ≤ ``chunk_size`` examples on ``device``; floating data cast to
    ``dtype``; a loader's batches through the ``batch`` adapter (:func:`as_pair`)."""

    def move(t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device=device)

    batches = [data] if isinstance(data, tuple) else (as_pair(b, batch) for b in data)
    for Xb, yb in batches:
        # balanced: ⌈n/⌈n/chunk_size⌉⌉ examples per chunk (1000 at 256 → 4 × 250, not 3 × 256 + 232),
        # so chunks share one shape as often as possible (one trace for the linearized program)
        n = int(Xb.shape[0])
        size = -(-n // max(1, -(-n // chunk_size)))
        for start in range(0, n, size):
            yield move(Xb[start : start + size]), move(yb[start : start + size])


@contextmanager
def declared_mode(model: nn.Module, mode: str):
    """Run the model in the objective's ``mode`` (module docstring); every module's train/eval flag
    (and batch norm's ``track_running_stats``) is restored on exit."""
    if mode == "model":
        yield
        return
    modules = list(model.modules())
    training = [m.training for m in modules]
    norms = [m for m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracking = [m.track_running_stats for m in norms]
    try:
        for m in modules:
            m.training = False
        if mode == "train_batchnorm":  # batch statistics, no running statistics read or updated
            for m in norms:
                m.training, m.track_running_stats = True, False
        yield
    finally:
        for m, t in zip(modules, training):
            m.training = t
        for m, t in zip(norms, tracking):
            m.track_running_stats = t


def detect_reduction(loss_fn: Callable[[Tensor, Tensor], Tensor], outputs: Tensor, targets: Tensor) -> str:
    """``"sum"`` or ``"mean"``: how ``loss_fn`` reduces over the batch, from ``outputs`` ``(B, ...)``
    and ``targets`` (B ≥ 2) and a split of them, in float64; an error for anything else."""
    outputs = outputs.detach().to(torch.float64)
    targets = targets.to(torch.float64) if targets.is_floating_point() else targets
    n = int(outputs.shape[0])
    half = n // 2
    gen = torch.Generator(device=outputs.device).manual_seed(0)
    shifted = outputs + torch.randn(outputs.shape, generator=gen, dtype=outputs.dtype, device=outputs.device)
    found = set()
    for out in (outputs, shifted):  # the shifted outputs: a loss that is 0 at the data tells nothing
        values = []
        for part in (slice(0, n), slice(0, half), slice(half, n)):
            v = loss_fn(out[part], targets[part])
            if not isinstance(v, Tensor) or v.numel() != 1:
                shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
                raise ValueError(f"the loss callable must return a scalar (a sum or mean over the batch), got {shape}")
            values.append(float(v))
        whole, first, second = values
        as_sum, as_mean = first + second, (half * first + (n - half) * second) / n
        tol = 1e-6 * (abs(first) + abs(second)) + 1e-300
        is_sum, is_mean = abs(whole - as_sum) <= tol, abs(whole - as_mean) <= tol
        if not (is_sum or is_mean):
            raise ValueError(
                f"loss callable is neither a sum nor a mean over the batch: on {n} examples it gives "
                f"{whole:.6g}, on a split of them {first:.6g} ({half}) and {second:.6g} ({n - half}); a sum "
                f"would give {as_sum:.6g}, a mean {as_mean:.6g}. A loss must be a function of "
                "(outputs, targets) that sums or averages per-example terms"
            )
        if is_sum != is_mean:
            found.add("sum" if is_sum else "mean")
    if len(found) > 1:
        raise ValueError("loss callable is neither a sum nor a mean over the batch (it behaves as both on different outputs)")
    return found.pop() if found else "mean"


class DatasetObjective:
    """R(θ) of a model, a loss and a data set, chunk by chunk (module docstring).

    Args:
        model: any ``nn.Module``; its parameters with ``requires_grad`` (or those ``params``
            selects) are the variables θ, in ``named_parameters()`` order (the others, and buffers,
            are constants).
        loss: ``"square"``, ``"exp"``, ``"logistic"``, ``"ce"`` or a callable
            ``loss(outputs, targets) -> scalar`` of the outputs and targets only, summing or
            averaging over the batch (detected; module docstring).
        X: inputs ``(N, ...)``, or a re-iterable of batches (a ``DataLoader`` without shuffling or
            dropped batches, a list; iterated once per pass).
        y: targets ``(N, ...)`` when ``X`` is a tensor; ``None`` for a loader.
        chunk_size: at most this many examples per forward pass (default 256); loader batches
            larger than this are split. Changes memory and speed, not the result.
        reduction: ``"mean"`` or ``"sum"`` over the N examples; ``None`` (default): ``"mean"`` for a
            named loss, the callable's own for a callable (an explicit value that disagrees with
            the callable is refused).
        params: a list of parameter names or a predicate ``(name, tensor) -> bool``: the variables
            (the others held fixed); default all trainable parameters.
        penalty: ``P(param_dict) -> scalar``, added once to R (module docstring).
        mode: ``"eval"`` (default), ``"train_batchnorm"`` or ``"model"`` (module docstring).
        batch: adapter ``batch -> (X_b, y_b)`` for a loader whose batches are not pairs (dicts).

    Attributes:
        names, shapes, numels: the variables'; dim: D = Σ numels; dtype, device: those of the
        variables; num_examples: N (counted at construction, also for a loader); reduction: the
        one in force; loss_reduction: how the loss reduces over a batch (``"mean"`` or ``"sum"``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossSpec,
        X: Tensor | Iterable,
        y: Tensor | None = None,
        *,
        chunk_size: int | None = None,
        reduction: str | None = None,
        params: ParamFilter = None,
        penalty: Penalty | None = None,
        mode: str = "eval",
        batch: Callable | None = None,
    ) -> None:
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        check_reduction(reduction)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
        if penalty is not None and not callable(penalty):
            raise TypeError(f"penalty must be a callable of the parameter dict, got {type(penalty).__name__}")
        if batch is not None and not callable(batch):
            raise TypeError(f"batch must be a callable batch -> (X, y), got {type(batch).__name__}")
        self.model = model
        self.mode = mode
        self.penalty = penalty
        self.batch = batch
        self.names, tensors = trainable_parameters(model, params)
        self.shapes = [p.shape for p in tensors]
        self.numels = [p.numel() for p in tensors]
        self.dtype: torch.dtype = tensors[0].dtype
        self.device: torch.device = tensors[0].device
        self.dim = sum(self.numels)
        self.data, self.num_examples = check_data(X, y)
        if not isinstance(self.data, tuple):
            self.num_examples = self._scan_loader(loss)
        if mode == "train_batchnorm":
            if not isinstance(self.data, tuple):
                raise ValueError(
                    "mode='train_batchnorm' normalises with the statistics of the full data set: pass "
                    "the data as tensors X, y (not a loader)"
                )
            if chunk_size is not None and int(chunk_size) < self.num_examples:
                raise ValueError(
                    f"mode='train_batchnorm' normalises with the statistics of the full data set, in one "
                    f"chunk: chunk_size={chunk_size} < N = {self.num_examples}; leave chunk_size unset"
                )
            chunk_size = self.num_examples
        self.chunk_size = DEFAULT_CHUNK_SIZE if chunk_size is None else int(chunk_size)
        self.loss_fn = resolve_loss(loss)
        if isinstance(loss, str) and isinstance(self.data, tuple):  # label values once (shapes: per chunk)
            _losses.check_targets(loss, self.data[1])
        self.loss_reduction = "mean" if isinstance(loss, str) else self._probe_loss()
        if isinstance(loss, str) or reduction is None:
            self.reduction = reduction or self.loss_reduction
        elif reduction != self.loss_reduction:
            raise ValueError(
                f"the loss callable is a {self.loss_reduction} over the batch but reduction={reduction!r} "
                f"was asked: pass reduction={self.loss_reduction!r} (or None to follow the loss), or "
                f"make the loss a {reduction}"
            )
        else:
            self.reduction = reduction
        if penalty is not None:
            value = self.penalty_value(self.params())
            if not isinstance(value, Tensor) or value.numel() != 1 or not bool(torch.isfinite(value).all()):
                raise ValueError(f"the penalty must return a finite scalar tensor, got {value!r}")

    def _scan_loader(self, loss: LossSpec) -> int:
        """One pass over a loader before any product: pairs, finite values, label values, N."""
        count = 0
        for i, b in enumerate(self.data):
            Xb, yb = as_pair(b, self.batch)
            Xb, yb = torch.as_tensor(Xb), torch.as_tensor(yb)
            if Xb.ndim == 0 or yb.ndim == 0 or Xb.shape[0] != yb.shape[0]:
                raise ValueError(
                    f"batch {i} of the loader: X and y must hold the same number of examples, shapes "
                    f"{tuple(Xb.shape)} and {tuple(yb.shape)}"
                )
            check_finite(Xb, f"X of batch {i} of the loader")
            check_finite(yb, f"y of batch {i} of the loader")
            if isinstance(loss, str):
                _losses.check_targets(loss, yb)
            count += int(Xb.shape[0])
        if count == 0:
            raise ValueError("the data set is empty (the loader yielded no examples)")
        return count

    def _probe_loss(self) -> str:
        """How a loss callable reduces over the batch (:func:`detect_reduction`), on the first
        examples (at least 2, up to one chunk), before any product; the buffers are restored."""
        outs, targets, n = [], [], 0
        buffers = {k: b.detach().clone() for k, b in self.model.named_buffers()}
        try:
            with torch.no_grad():
                for Xc, yc in self.chunks():
                    outs.append(self.outputs(self.params(), Xc))
                    targets.append(yc)
                    n += int(Xc.shape[0])
                    if n >= 2:
                        break
        finally:
            with torch.no_grad():
                for k, b in self.model.named_buffers():
                    if k in buffers:
                        b.copy_(buffers[k])
        if n < 2:
            return "mean"  # one example: a sum and a mean agree
        try:
            outputs, target = torch.cat(outs), torch.cat(targets)
        except RuntimeError:  # batches of different shapes: the first one only
            outputs, target = outs[0], targets[0]
        return detect_reduction(self.loss_fn, outputs, target) if outputs.shape[0] >= 2 else "mean"

    def chunks(self, dtype: torch.dtype | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """The data as ``(X_c, y_c)`` chunks on the objective's device, ≤ ``chunk_size`` each;
        floating data in ``dtype`` (default the objective's)."""
        return iterate_chunks(self.data, self.chunk_size, self.device, dtype or self.dtype, self.batch)

    def params(self) -> dict[str, Tensor]:
        """The model's current variables θ by name, detached."""
        current = dict(self.model.named_parameters())
        return {n: current[n].detach() for n in self.names}

    def constants(self) -> dict[str, Tensor]:
        """The model's other parameters and buffers by name, detached."""
        variables = set(self.names)
        fixed = {n: p.detach() for n, p in self.model.named_parameters() if n not in variables}
        fixed.update({n: b.detach() for n, b in self.model.named_buffers()})
        return fixed

    def state(self) -> list[Tensor]:
        """Everything R depends on besides the data: all parameters (frozen ones included) and
        buffers, detached (the train/eval mode aside)."""
        return [t.detach() for t in self.model.parameters()] + [b.detach() for b in self.model.buffers()]

    def mode_key(self) -> tuple:
        """What of the model's train/eval flags R depends on: nothing but ``mode``, except for
        ``mode="model"`` (then the model's own flag)."""
        return (self.mode, self.model.training if self.mode == "model" else None)

    def outputs(self, params: dict[str, Tensor], Xc: Tensor) -> Tensor:
        """f(θ; X_c) at ``params`` (θ by name; constants may be included), in the declared mode.
        Trainable parameters left out by a ``params`` filter enter detached (constants, no graph)."""
        held = {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad and n not in params}
        with declared_mode(self.model, self.mode):
            return functional_call(self.model, {**held, **params} if held else params, (Xc,))

    def chunk_loss(self, params: dict[str, Tensor], Xc: Tensor, yc: Tensor) -> Tensor:
        """R_c at ``params`` (θ by name): the batch-mean loss of one chunk (no penalty)."""
        value = self.loss_fn(self.outputs(params, Xc), yc)
        return value / Xc.shape[0] if self.loss_reduction == "sum" else value

    def penalty_value(self, params: dict[str, Tensor]) -> Tensor:
        """P at ``params`` (θ by name; the other parameters at their current values); 0 without a penalty."""
        if self.penalty is None:
            return torch.zeros((), dtype=self.dtype, device=self.device)
        every = {n: params[n] if n in params else p.detach() for n, p in self.model.named_parameters()}
        return self.penalty(every)

    def tangents(self, V: Tensor) -> dict[str, Tensor]:
        """The rows of ``V`` ``(m, D)`` cut into parameter-shaped tangents ``(m, *shape)``, by name."""
        parts = torch.split(V, self.numels, dim=1)
        return {n: p.reshape(V.shape[0], *s) for n, p, s in zip(self.names, parts, self.shapes)}

    def loss_and_gradient_sums(self) -> tuple[float, Tensor, int]:
        """Σ_c n_c R_c, Σ_c n_c ∇R_c ``(D,)`` over the chunks and N (no penalty, not normalised):
        what data-parallel ranks add up (:mod:`~implicitlab.diagnostics.distributed`)."""
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
        return float(total_l), total_g, count

    def add_penalty(self, value: float, gradient: Tensor) -> tuple[float, Tensor]:
        """``(value + P(θ), gradient + ∇P(θ))``: the penalty added once, to the data term."""
        if self.penalty is None:
            return value, gradient
        g, p = torch.func.grad_and_value(self.penalty_value)(self.params())
        return value + float(p.detach()), gradient + torch.cat([g[n].reshape(-1) for n in self.names])

    def loss_and_gradient(self) -> tuple[float, Tensor]:
        """R(θ) and its flat gradient ∇R ``(D,)`` at the model's current parameters, chunked
        (the penalty included)."""
        total_l, total_g, count = self.loss_and_gradient_sums()
        scale = 1.0 if self.reduction == "sum" else 1.0 / count
        return self.add_penalty(total_l * scale, total_g * scale)

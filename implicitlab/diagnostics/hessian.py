"""The Hessian of a data-set loss as a matrix-free operator: ``H @ v`` for any ``nn.Module``.

For a model f(θ; x) with trainable parameters θ ∈ R^D (flattened in ``named_parameters`` order),
data {(x_n, y_n)}_{n=1..N} and a loss, :class:`HessianOperator` represents

    H = ∇²_θ R(θ),   R(θ) = (1/N) Σ_n ℓ(f(θ; x_n), y_n)        (``reduction="mean"``, the default)

and multiplies it with vectors without forming it. Conventions of the named losses (they are
:mod:`implicitlab.losses`, so that training and curvature use one definition):

- ``"square"``: ℓ = ‖f(x) − y‖², summed over outputs, **no ½** — Marion & Chizat (2024),
  R(W) = (1/n) Σ_i (y_i − W_L⋯W_1 x_i)². (PyTorch's ``MSELoss`` would also divide by the number of
  outputs; with one output the two agree.)
- ``"exp"``: ℓ = exp(−y f), y ∈ {±1}, scalar output;  ``"logistic"``: ℓ = softplus(−y f);
- ``"ce"``: cross-entropy with integer labels, ``(B, C)`` logits;
- a callable ``loss(outputs, targets) -> scalar``: the *mean* over the batch (PyTorch's convention).

``reduction="sum"`` gives the Hessian of Σ_n ℓ_n (= N × the mean one), Soudry et al.'s convention.

How a product is computed (Pearlmutter 1994; the forward-over-reverse order is the one
``torch.func`` recommends for Hessians): the data are cut into chunks of at most ``chunk_size``
examples; for chunk c with n_c examples and batch-mean loss R_c,

    H v = Σ_c (n_c / N) · ∇²R_c v,    ∇²R_c v = d/dt ∇R_c(θ + t v) |_{t=0}    (jvp of grad)

so memory is that of one chunk whatever N. ``backend="autograd"`` computes ∇²R_c v as the gradient
of ⟨∇R_c, v⟩ (double backward) instead; ``"auto"`` uses ``torch.func`` and falls back to double
backward for models that ``torch.func`` cannot transform.

The operator reads the model's *current* parameters at each product, so one operator follows a
model while it trains (a sharpness probe is built once and warm-started from step to step).

Checks at construction (no silent wrong answer):

- all trainable parameters share one floating dtype and one device (the operator's dtype/device);
  data are moved to that device, and floating data are cast to that dtype;
- the determinism probe: two products with the same random vector must agree to
  ``probe_rtol`` (default √ε of the dtype) and leave the model's buffers unchanged — a model in
  train mode with dropout draws a new mask per call, and batch-norm in train mode normalises with
  chunk statistics and updates its running statistics, so neither is one fixed matrix;
- an empty data set, mismatched X/y lengths and non-finite products are errors.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

from .. import losses as _losses

# torch's forward-mode AD registers its jvp decompositions on the first dual tensor, through
# torch.jit.script, which is deprecated and warns (an error under warnings-as-errors, and noise
# for users). Load them here, once, with that one warning silenced.
_load_jvp_decompositions = getattr(torch.autograd.forward_ad, "_maybe_load_decompositions", None)
if _load_jvp_decompositions is not None:  # a private torch hook: absent in some versions
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
        _load_jvp_decompositions()

LossSpec = Union[str, Callable[[Tensor, Tensor], Tensor]]

DEFAULT_CHUNK_SIZE = 256  # examples per chunk: bounds memory; CPU-cache friendly (raise it on a GPU)
_BACKENDS = ("auto", "func", "autograd")
_SUSPECT_MODULES = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


class NondeterministicHessianError(RuntimeError):
    """The model is not one fixed function of its parameters (train mode, dropout, batch norm)."""


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
        for start in range(0, Xb.shape[0], chunk_size):
            yield move(Xb[start : start + chunk_size]), move(yb[start : start + chunk_size])


class HessianOperator:
    """The D × D Hessian of the data-set loss, applied matrix-free: ``H @ v``.

    Args:
        model: any ``nn.Module``; its parameters with ``requires_grad`` are the variables, in
            ``named_parameters()`` order (frozen ones are constants).
        loss: ``"square"``, ``"exp"``, ``"logistic"``, ``"ce"`` (see the module docstring) or a
            callable ``loss(outputs, targets) -> scalar`` returning the batch mean.
        X: inputs ``(N, ...)``, or an iterable of ``(X_b, y_b)`` batches (a ``DataLoader``; it is
            iterated once per product, so it must yield the same examples each time).
        y: targets ``(N, ...)`` when ``X`` is a tensor; ``None`` for a loader.
        chunk_size: at most this many examples per forward pass (default 256); loader batches
            larger than this are split. Changes memory and speed, not the result.
        reduction: ``"mean"`` (default) or ``"sum"`` over the N examples.
        backend: ``"auto"`` (``torch.func``, double backward if that fails), ``"func"`` or
            ``"autograd"``.
        check_determinism: run the determinism probe (two products) at construction.
        probe_rtol: relative tolerance of the probe (default √ε of the dtype: 1.5e-8 in float64).
        seed: seed of the probe's random vector.

    Attributes:
        shape: ``(D, D)``; dtype, device: those of the parameters; num_matvecs: products so far
        (the probe's two included); backend: the backend in use once the first product ran.
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
        backend: str = "auto",
        check_determinism: bool = True,
        probe_rtol: float | None = None,
        seed: int = 0,
    ) -> None:
        if backend not in _BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {list(_BACKENDS)}")
        chunk_size = DEFAULT_CHUNK_SIZE if chunk_size is None else int(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        self.model = model
        check_reduction(reduction)
        self.loss_fn = resolve_loss(loss)
        self.reduction = reduction
        self.chunk_size = chunk_size
        self.backend = backend
        self._names, params = trainable_parameters(model)
        self._shapes = [p.shape for p in params]
        self._numels = [p.numel() for p in params]
        self.dtype: torch.dtype = params[0].dtype
        self.device: torch.device = params[0].device
        self.dim = sum(self._numels)
        self.shape = (self.dim, self.dim)
        self.num_matvecs = 0
        self.columns_per_pass = 32  # columns of H @ V batched in one vmapped pass (memory × this)
        self._data, self.num_examples = check_data(X, y)
        if check_determinism:
            self._probe(probe_rtol, seed)

    def chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The data as ``(X_c, y_c)`` chunks on the operator's device, ≤ ``chunk_size`` each."""
        return iterate_chunks(self._data, self.chunk_size, self.device, self.dtype)

    # ------------------------------------------------------------------------- products ---
    def _params(self) -> dict[str, Tensor]:
        current = dict(self.model.named_parameters())
        return {n: current[n].detach() for n in self._names}

    def _unflatten(self, v: Tensor) -> dict[str, Tensor]:
        parts = torch.split(v, self._numels)
        return {n: p.view(s) for n, p, s in zip(self._names, parts, self._shapes)}

    def _chunk_loss(self, params: dict[str, Tensor], Xc: Tensor, yc: Tensor) -> Tensor:
        return self.loss_fn(functional_call(self.model, params, (Xc,)), yc)

    def _hvp_func(self, params, tangent, Xc, yc) -> dict[str, Tensor]:
        grad_fn = grad(self._chunk_loss)
        return jvp(lambda p: grad_fn(p, Xc, yc), (params,), (tangent,))[1]

    def _hvp_autograd(self, params, tangent, Xc, yc) -> dict[str, Tensor]:
        leaves = {n: p.requires_grad_(True) for n, p in params.items()}  # detached copies
        with torch.enable_grad():
            value = self._chunk_loss(leaves, Xc, yc)
            grads = torch.autograd.grad(value, list(leaves.values()), create_graph=True, allow_unused=True)
            dot = sum((g * tangent[n]).sum() for n, g in zip(leaves, grads) if g is not None)
            if not isinstance(dot, Tensor) or not dot.requires_grad:  # loss is linear in θ
                return {n: torch.zeros_like(p) for n, p in leaves.items()}
            hv = torch.autograd.grad(dot, list(leaves.values()), allow_unused=True)
        return {n: torch.zeros_like(leaves[n]) if h is None else h for n, h in zip(leaves, hv)}

    def _chunk_hvp(self, params, tangent, Xc, yc) -> dict[str, Tensor]:
        if self.backend == "autograd":
            return self._hvp_autograd(params, tangent, Xc, yc)
        if self.backend == "func":
            return self._hvp_func(params, tangent, Xc, yc)
        try:  # "auto": decide on the first product
            out = self._hvp_func(params, tangent, Xc, yc)
            self.backend = "func"
        except (RuntimeError, NotImplementedError):
            out = self._hvp_autograd(params, tangent, Xc, yc)
            self.backend = "autograd"
        return out

    def _chunk_hvps(self, params, tangents, Xc, yc, m: int) -> dict[str, Tensor]:
        """∇²R_c v for m tangents at once (leading dimension m): vmapped when ``torch.func`` allows."""
        if m == 1:
            hv = self._chunk_hvp(params, {n: t[0] for n, t in tangents.items()}, Xc, yc)
            return {n: h.unsqueeze(0) for n, h in hv.items()}
        if self.backend == "func":
            try:
                return torch.func.vmap(lambda t: self._hvp_func(params, t, Xc, yc))(tangents)
            except (RuntimeError, NotImplementedError):  # a model vmap cannot batch: one at a time
                pass
        rows = [self._chunk_hvp(params, {n: t[i] for n, t in tangents.items()}, Xc, yc) for i in range(m)]
        return {n: torch.stack([r[n] for r in rows]) for n in self._names}

    def _products(self, V: Tensor) -> Tensor:
        """H vᵢ for the rows vᵢ of ``V`` ``(m, D)`` (operator device and dtype) → ``(m, D)``."""
        m = V.shape[0]
        params = self._params()
        parts = torch.split(V, self._numels, dim=1)
        tangents = {n: p.reshape(m, *s) for n, p, s in zip(self._names, parts, self._shapes)}
        total = torch.zeros(m, self.dim, dtype=self.dtype, device=self.device)
        count = 0
        for Xc, yc in self.chunks():
            n_c = int(Xc.shape[0])
            hv = self._chunk_hvps(params, tangents, Xc, yc, m)
            total += n_c * torch.cat([hv[n].reshape(m, -1) for n in self._names], dim=1)
            count += n_c
        if count == 0:
            raise ValueError("the data set is empty (the loader yielded no examples)")
        self.num_examples = count
        self.num_matvecs += m
        return total if self.reduction == "sum" else total / count

    def _matvec(self, v: Tensor) -> Tensor:
        return self._products(v.unsqueeze(0))[0]

    def matvec(self, v: Tensor) -> Tensor:
        """H v for ``v`` ``(D,)``, or H V for ``(D, m)`` (m products, vmapped over blocks of columns)."""
        if not isinstance(v, Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(v).__name__}; use to_scipy() for numpy")
        if v.ndim not in (1, 2) or v.shape[0] != self.dim:
            raise ValueError(f"expected a vector ({self.dim},) or matrix ({self.dim}, m), got {tuple(v.shape)}")
        v = v.to(device=self.device, dtype=self.dtype)
        if v.ndim == 1:
            return self._matvec(v)
        step = self.columns_per_pass
        blocks = [self._products(v[:, j : j + step].T) for j in range(0, v.shape[1], step)]
        return torch.cat(blocks, dim=0).T if blocks else torch.zeros_like(v)

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v)

    def to_scipy(self):
        """A float64 ``scipy.sparse.linalg.LinearOperator`` view (for ``eigsh`` and friends)."""
        from scipy.sparse.linalg import LinearOperator

        def apply(x: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
            return self.matvec(t).detach().to("cpu", torch.float64).numpy()

        return LinearOperator(self.shape, matvec=apply, rmatvec=apply, matmat=apply, dtype=np.float64)

    # ----------------------------------------------------------------------- gradient ---
    def loss_and_gradient(self) -> tuple[float, Tensor]:
        """The data-set loss and its flat gradient ``(D,)``, chunked like the products.

        (For the cost comparison "one product vs one gradient"; not counted in ``num_matvecs``.)
        """
        params = self._params()
        value_and_grad = torch.func.grad_and_value(self._chunk_loss)
        total_g = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        total_l = torch.zeros((), dtype=self.dtype, device=self.device)
        count = 0
        for Xc, yc in self.chunks():
            n_c = int(Xc.shape[0])
            g, value = value_and_grad(params, Xc, yc)
            total_g += n_c * torch.cat([g[n].reshape(-1) for n in self._names])
            total_l += n_c * value.detach()
            count += n_c
        if count == 0:
            raise ValueError("the data set is empty (the loader yielded no examples)")
        scale = 1.0 if self.reduction == "sum" else 1.0 / count
        return float(total_l * scale), total_g * scale

    # -------------------------------------------------------------------- determinism ---
    def _probe(self, rtol: float | None, seed: int) -> None:
        if rtol is None:
            rtol = float(torch.finfo(self.dtype).eps) ** 0.5
        gen = torch.Generator(device=self.device).manual_seed(seed)
        v = torch.randn(self.dim, generator=gen, device=self.device, dtype=self.dtype)
        buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        try:
            first = self._matvec(v)
            second = self._matvec(v)
        finally:
            changed = self._restore_buffers(buffers)
        suspects = self._suspect_modules()
        if changed:
            raise NondeterministicHessianError(
                f"computing Hessian-vector products changed the model's buffers {changed}: batch-norm "
                "layers in train mode update their running statistics and normalise with chunk "
                f"statistics, so the Hessian is not one fixed matrix.{suspects} Call model.eval() "
                "first (the buffers have been restored)."
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
                f"call and batch norm uses batch statistics.{suspects} Call model.eval() first."
            )

    def _restore_buffers(self, saved: dict[str, Tensor]) -> list[str]:
        changed = []
        with torch.no_grad():
            for n, b in self.model.named_buffers():
                if n in saved and not torch.equal(b, saved[n]):
                    changed.append(n)
                    b.copy_(saved[n])
        return changed

    def _suspect_modules(self) -> str:
        found = [
            f"{n or type(m).__name__} ({type(m).__name__})"
            for n, m in self.model.named_modules()
            if isinstance(m, _SUSPECT_MODULES) and m.training
        ]
        mode = "train" if self.model.training else "eval"
        return f" The model is in {mode} mode; dropout/batch-norm modules in train mode: {found or 'none'}."

    def __repr__(self) -> str:
        return (
            f"HessianOperator(dim={self.dim}, dtype={self.dtype}, device={self.device}, "
            f"backend={self.backend!r}, chunk_size={self.chunk_size}, num_examples={self.num_examples}, "
            f"num_matvecs={self.num_matvecs})"
        )


def hessian_vector_product(model: nn.Module, loss: LossSpec, X, y, v: Tensor, **kwargs) -> Tensor:
    """One product H v ``(D,)`` (no determinism probe); see :class:`HessianOperator` for arguments."""
    kwargs.setdefault("check_determinism", False)
    return HessianOperator(model, loss, X, y, **kwargs) @ v

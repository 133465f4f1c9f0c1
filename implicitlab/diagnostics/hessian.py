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

**Reuse across products** (``reuse``). Every product at the same θ repeats the same forward and
first backward pass; only the tangent part depends on v, and Lanczos asks for many products at
one θ. So the first product at a given θ does the primal work once per chunk and keeps it:

- ``"graph"`` (default): ∇R_c with ``create_graph=True`` and its autograd graph; each product is
  one backward pass ∇²R_c v = ∂⟨∇R_c, v⟩/∂θ through it (``retain_graph=True``) — PyHessian's way.
  Costs nothing to set up (one gradient per θ).
- ``"linearized"``: a forward-over-reverse program traced once per chunk shape and split into a
  primal part, run once per θ, and a tangent part, run per product
  (:mod:`implicitlab.diagnostics.linearized`). The cheapest products on convolutional nets (about
  1.8–2.1 gradients on the benchmark CNN on a CPU, against 2.6–3.0 for ``"graph"`` and 3.1–3.6
  recomputed; ``benchmarks/sharpness.py``), for a trace of a few seconds per chunk shape: the
  choice for following sharpness along training. Checked once against a recomputed product.
  Falls back to ``"graph"`` (saying why in ``reuse_status``) for models it cannot trace.
- ``"none"``: recompute every product with ``backend``.

What is kept holds the activations of the whole data set, so it is kept only while it stays
under ``graph_memory`` bytes (default 1 GiB; autograd's saved tensors, or the boundary values,
counted as they are built); past it ``"linearized"`` falls back to ``"graph"`` (about 2.5× less
memory on the benchmark CNN: 186 MB against 456 MB for 1,000 float64 images) and ``"graph"`` to
recomputing every product. The kept state is
rebuilt whenever the model's parameters, buffers or train/eval mode differ from those it was
built at (compared by value, so ``p.data`` edits are seen too). The determinism probe never
reuses anything.

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
from .linearized import TangentProgram

# torch's forward-mode AD registers its jvp decompositions on the first dual tensor, through
# torch.jit.script, which is deprecated and warns (an error under warnings-as-errors, and noise
# for users). Load them here, once, with that one warning silenced.
_load_jvp_decompositions = getattr(torch.autograd.forward_ad, "_maybe_load_decompositions", None)
if _load_jvp_decompositions is not None:  # a private torch hook: absent in some versions
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
        _load_jvp_decompositions()

LossSpec = Union[str, Callable[[Tensor, Tensor], Tensor]]

DEFAULT_GRAPH_MEMORY = 2**30  # bytes of saved tensors the reused gradient graphs may hold
DEFAULT_CHUNK_SIZE = 256  # examples per chunk: bounds memory; CPU-cache friendly (raise it on a GPU)
_BACKENDS = ("auto", "func", "autograd")
_REUSE = ("graph", "linearized", "none")
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
        # balanced: ⌈n/⌈n/chunk_size⌉⌉ examples per chunk (1000 at 256 → 4 × 250, not 3 × 256 + 232),
        # so chunks share one shape as often as possible (one trace for the linearized program)
        n = int(Xb.shape[0])
        size = -(-n // max(1, -(-n // chunk_size)))
        for start in range(0, n, size):
            yield move(Xb[start : start + size]), move(yb[start : start + size])


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
        reuse: what is kept between products at the same parameters: ``"graph"`` (default),
            ``"linearized"`` or ``"none"`` (module docstring).
        graph_memory: bytes the kept state may hold (default 1 GiB); beyond it, recompute.

    Attributes:
        shape: ``(D, D)``; dtype, device: those of the parameters; num_matvecs: products so far
        (the probe's two included); backend: the backend in use once the first product ran;
        reuse_status: ``reuse``'s value in force, or ``"none: <reason>"`` / ``"graph: <reason>"``
        after a fallback; graph_bytes: bytes the kept state holds (0 when nothing is kept).
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
        reuse: str = "graph",
        graph_memory: int = DEFAULT_GRAPH_MEMORY,
    ) -> None:
        if backend not in _BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {list(_BACKENDS)}")
        if reuse not in _REUSE:
            raise ValueError(f"unknown reuse {reuse!r}; choose one of {list(_REUSE)}")
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
        self.reuse = reuse
        self.reuse_status = reuse
        self.graph_memory = int(graph_memory)
        self.graph_bytes = 0
        self._programs: dict[tuple, TangentProgram] = {}
        self._verified = False
        self._graphs: list[_ChunkGraph | _LinearizedChunk] | None = None
        self._graph_state: list[Tensor] | None = None
        self._graph_training: bool | None = None
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

    def _tangents(self, V: Tensor) -> dict[str, Tensor]:
        """The rows of ``V`` ``(m, D)`` cut into parameter-shaped tangents ``(m, *shape)``, by name."""
        parts = torch.split(V, self._numels, dim=1)
        return {n: p.reshape(V.shape[0], *s) for n, p, s in zip(self._names, parts, self._shapes)}

    def _products(self, V: Tensor, reuse: bool = True) -> Tensor:
        """H vᵢ for the rows vᵢ of ``V`` ``(m, D)`` (operator device and dtype) → ``(m, D)``."""
        m = V.shape[0]
        tangents = self._tangents(V)
        total = torch.zeros(m, self.dim, dtype=self.dtype, device=self.device)
        count = 0
        graphs = self._current_graphs() if reuse and not self.reuse_status.startswith("none") else None
        if graphs is not None:
            for graph in graphs:
                total += graph.n * graph.hvps(tangents, m)
                count += graph.n
        else:
            params = self._params()
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

    def _matvec(self, v: Tensor, reuse: bool = True) -> Tensor:
        return self._products(v.unsqueeze(0), reuse)[0]

    # ------------------------------------------------------------------- graph reuse ---
    def _state(self) -> list[Tensor]:
        """Everything the function of θ depends on besides θ's trainable part: all parameters
        (frozen ones included) and buffers, by value."""
        return [t.detach() for t in self.model.parameters()] + [b.detach() for b in self.model.buffers()]

    def _state_unchanged(self) -> bool:
        if self._graph_state is None or self._graph_training != self.model.training:
            return False
        now = self._state()
        return len(now) == len(self._graph_state) and all(
            a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
            for a, b in zip(now, self._graph_state)
        )

    def release_graphs(self) -> None:
        """Drop the kept state (graphs or boundary values, and their memory); the next product
        rebuilds it."""
        self._graphs, self._graph_state, self.graph_bytes = None, None, 0

    def _current_graphs(self) -> list[_ChunkGraph | _LinearizedChunk] | None:
        """The kept per-chunk state at the current parameters: kept already, or built now.

        None when reuse is off. Past ``graph_memory`` bytes, or for a model it cannot handle, the
        linearized program falls back to ``"graph"`` for good, and the graph to recomputing;
        ``reuse_status`` says why."""
        if self._graphs is not None and self._state_unchanged():
            return self._graphs
        self.release_graphs()
        linearized = self.reuse_status == "linearized"
        try:
            graphs = self._build_linearized() if linearized else self._build_graphs()
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
            if isinstance(err, ValueError) and "empty" in str(err):
                raise
            if not linearized:  # not twice differentiable by autograd
                self.reuse_status = f"none: building the gradient graph failed ({type(err).__name__}: {err})"
                return None
            self.reuse_status = f"graph: the linearized program failed ({type(err).__name__}: {err})"
            return self._current_graphs()
        if graphs is None:  # over budget
            return self._current_graphs() if linearized else None
        if not graphs:
            raise ValueError("the data set is empty (the loader yielded no examples)")
        if linearized and not self._verified and not self._verify(graphs):
            return self._current_graphs()
        self._graphs = graphs
        self.graph_bytes = sum(g.saved_bytes for g in graphs)
        self._graph_state = [t.clone() for t in self._state()]
        self._graph_training = self.model.training
        return graphs

    def _over_budget(self, used: int, chunks: int) -> bool:
        """Past ``graph_memory``: a linearized program falls back to the (smaller) kept graph, a
        kept graph to recomputing every product."""
        if used <= self.graph_memory:
            return False
        linearized = self.reuse_status == "linearized"
        self.reuse_status = (
            f"{'graph' if linearized else 'none'}: the kept state exceeds graph_memory = {self.graph_memory} "
            f"bytes ({used} bytes after {chunks} chunks"
            + ("; the linearized program keeps ~2.5× a graph's bytes)" if linearized
               else "); every product is recomputed")
        )
        return True

    def _build_graphs(self) -> list[_ChunkGraph] | None:
        params = self._params()
        graphs: list[_ChunkGraph] = []
        used = 0
        for Xc, yc in self.chunks():
            graphs.append(_ChunkGraph.build(self, params, Xc, yc))
            used += graphs[-1].saved_bytes
            if self._over_budget(used, len(graphs)):
                return None
        return graphs

    def _build_linearized(self) -> list[_LinearizedChunk] | None:
        params = self._params()
        everything = {**self._constants(), **params}
        chunks: list[_LinearizedChunk] = []
        used = 0
        for Xc, yc in self.chunks():
            # the trace freezes Python-level choices: the shapes and the train/eval mode
            key = (tuple(Xc.shape), Xc.dtype, tuple(yc.shape), yc.dtype, self.model.training)
            if key not in self._programs:
                tangents = {n: torch.zeros_like(p) for n, p in params.items()}
                self._programs[key] = TangentProgram(
                    lambda q, Xb, yb: self.loss_fn(functional_call(self.model, q, (Xb,)), yb),
                    self._names, list(self._constants()), (everything, tangents, Xc, yc),
                )
            program = self._programs[key]
            boundary = program.bind(everything, Xc, yc)
            size = sum(b.numel() * b.element_size() for b in boundary if isinstance(b, Tensor))
            chunks.append(_LinearizedChunk(self._names, program, boundary, int(Xc.shape[0]), size))
            used += size
            if self._over_budget(used, len(chunks)):
                return None
        return chunks

    def _constants(self) -> dict[str, Tensor]:
        """The model's frozen parameters and buffers by name: inputs of the linearized program."""
        trainable = set(self._names)
        fixed = {n: p.detach() for n, p in self.model.named_parameters() if n not in trainable}
        fixed.update({n: b.detach() for n, b in self.model.named_buffers()})
        return fixed

    def _verify(self, chunks: list[_LinearizedChunk]) -> bool:
        """One product through the linearized program against a recomputed one (√ε relative)."""
        gen = torch.Generator(device=self.device).manual_seed(12345)
        v = torch.randn(1, self.dim, generator=gen, device=self.device, dtype=self.dtype)
        tangents = self._tangents(v)
        fast = sum(c.n * c.hvps(tangents, 1) for c in chunks)
        slow = self._products(v, reuse=False) * (1.0 if self.reduction == "sum" else self.num_examples)
        self.num_matvecs -= 1  # the check is not the caller's product
        tol = float(torch.finfo(self.dtype).eps) ** 0.5
        diff = float(torch.linalg.vector_norm(fast - slow))
        if diff > tol * float(torch.linalg.vector_norm(slow)):
            self.reuse_status = f"graph: the linearized product disagreed with a recomputed one ({diff:.2e})"
            return False
        self._verified = True
        return True
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
            first = self._matvec(v, reuse=False)
            second = self._matvec(v, reuse=False)
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
            f"backend={self.backend!r}, reuse={self.reuse_status!r}, chunk_size={self.chunk_size}, "
            f"num_examples={self.num_examples}, num_matvecs={self.num_matvecs})"
        )


class _ChunkGraph:
    """One chunk's gradient ∇R_c(θ) with its autograd graph kept, for repeated products at θ.

    ``leaves`` are copies of θ (so in-place updates of the model cannot corrupt the graph);
    ``hvps`` is one backward pass of ⟨∇R_c, v⟩ per tangent, batched over m tangents with
    ``is_grads_batched`` (vmap over the backward) when autograd allows it.
    """

    def __init__(self, names, leaves, grads, n: int, saved_bytes: int) -> None:
        self.names, self.leaves, self.n, self.saved_bytes = names, leaves, n, saved_bytes
        # gradients that do not depend on θ (a loss linear in those parameters) add nothing to H v
        self.live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self.grads = [grads[i] for i in self.live]
        self.batched = True

    @classmethod
    def build(cls, op: HessianOperator, params: dict[str, Tensor], Xc: Tensor, yc: Tensor) -> _ChunkGraph:
        leaves = [params[n].clone().requires_grad_(True) for n in op._names]
        seen: dict[tuple, int] = {}

        def pack(t: Tensor) -> Tensor:  # count each saved storage once
            try:
                key = (t.untyped_storage().data_ptr(), t.device)
                seen.setdefault(key, t.untyped_storage().nbytes())
            except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. sparse)
                seen[(id(t), t.device)] = t.numel() * t.element_size()
            return t

        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            value = op._chunk_loss(dict(zip(op._names, leaves)), Xc, yc)
            grads = torch.autograd.grad(value, leaves, create_graph=True, allow_unused=True)
        return cls(op._names, leaves, list(grads), int(Xc.shape[0]), sum(seen.values()))

    def hvps(self, tangents: dict[str, Tensor], m: int) -> Tensor:
        """∇²R_c vᵢ for the m tangents (leading dimension m) → ``(m, D)``."""
        out = [torch.zeros((m, *leaf.shape), dtype=leaf.dtype, device=leaf.device) for leaf in self.leaves]
        if self.live:
            outputs = [tangents[self.names[i]] for i in self.live]
            if m > 1 and self.batched:
                try:
                    hv = self._backward(outputs, batched=True)
                except (RuntimeError, NotImplementedError):  # an op vmap cannot batch: one at a time
                    self.batched = False
            if m == 1 or not self.batched:
                rows = [self._backward([t[j] for t in outputs], batched=False) for j in range(m)]
                hv = [None if rows[0][i] is None else torch.stack([r[i] for r in rows]) for i in range(len(rows[0]))]
            out = [o if h is None else h for o, h in zip(out, hv)]
        return torch.cat([o.reshape(m, -1) for o in out], dim=1)

    def _backward(self, outputs: list[Tensor], batched: bool) -> tuple:
        return torch.autograd.grad(
            self.grads, self.leaves, grad_outputs=outputs, retain_graph=True, allow_unused=True,
            is_grads_batched=batched,
        )


class _LinearizedChunk:
    """One chunk's boundary values at θ and the tangent program that turns v into ∇²R_c v."""

    def __init__(self, names, program: TangentProgram, boundary: list[Tensor], n: int, saved_bytes: int) -> None:
        self.names, self.program, self.boundary, self.n, self.saved_bytes = names, program, boundary, n, saved_bytes
        self.batched = True

    def hvps(self, tangents: dict[str, Tensor], m: int) -> Tensor:
        """∇²R_c vᵢ for the m tangents (leading dimension m) → ``(m, D)``."""
        inputs = [tangents[n] for n in self.names]
        if m > 1 and self.batched:
            try:
                out = torch.func.vmap(lambda *t: self.program.apply(self.boundary, list(t)))(*inputs)
                return torch.cat([o.reshape(m, -1) for o in out], dim=1)
            except (RuntimeError, NotImplementedError):  # an op vmap cannot batch: one at a time
                self.batched = False
        rows = []
        for j in range(m):
            out = self.program.apply(self.boundary, [t[j] for t in inputs])
            rows.append(torch.cat([o.reshape(-1) for o in out]))
        return torch.stack(rows)


def hessian_vector_product(model: nn.Module, loss: LossSpec, X, y, v: Tensor, **kwargs) -> Tensor:
    """One product H v ``(D,)`` (no determinism probe); see :class:`HessianOperator` for arguments."""
    kwargs.setdefault("check_determinism", False)
    kwargs.setdefault("reuse", "none")  # one product: nothing to reuse
    return HessianOperator(model, loss, X, y, **kwargs) @ v

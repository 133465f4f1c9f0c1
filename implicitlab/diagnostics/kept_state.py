"""What Hessian-vector products at one θ share: the kept autograd graph, the linearized program,
and the memory budget they live under.

Every product ∇²R v at the same θ repeats the same forward and first backward pass; only the
tangent part depends on v, and Lanczos asks for many products at one θ. So the first product at a
given θ does the primal work once per chunk and keeps it (:class:`KeptState`), in one of two forms
(``reuse``):

- ``"graph"``: ∇R_c with ``create_graph=True`` and its autograd graph (:class:`ChunkGraph`);
  each product is one backward pass ∇²R_c v = ∂⟨∇R_c, v⟩/∂θ through it (``retain_graph=True``)
  — PyHessian's way. Costs nothing to set up (one gradient per θ).
- ``"linearized"``: a forward-over-reverse program traced once per chunk shape and split into a
  primal part, run once per θ, and a tangent part, run per product
  (:mod:`implicitlab.diagnostics.linearized`; :class:`LinearizedChunk`). The cheapest products
  on convolutional nets (about 1.8–2.1 gradients on the benchmark CNN on a CPU, against 2.6–3.0
  for ``"graph"`` and 3.1–3.6 recomputed; ``benchmarks/sharpness.py``), for a trace of a few
  seconds per chunk shape: the choice for following sharpness along training. Checked once
  against a recomputed product. Falls back to ``"graph"`` (saying why in ``status``) for models
  it cannot trace.

**Memory budget.** What is kept holds the activations of the whole data set, so it is kept only
while it stays under ``graph_memory`` bytes (default 1 GiB; autograd's saved tensors, or the
boundary values, counted as they are built); past it ``"linearized"`` falls back to ``"graph"``
(about 2.5× less memory on the benchmark CNN: 186 MB against 456 MB for 1,000 float64 images) and
``"graph"`` to recomputing every product (status ``"none: <reason>"``).

**Staleness.** The kept state is rebuilt whenever the model's parameters or buffers differ from
those it was built at (compared by value, so ``p.data`` edits are seen too), or, for the objective's
``mode="model"``, the model's train/eval mode (the other modes do not read it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .linearized import TangentProgram
from .objective import DatasetObjective

DEFAULT_GRAPH_MEMORY = 2**30  # bytes of saved tensors the reused gradient graphs may hold
REUSE_MODES = ("graph", "linearized", "none")


class ChunkGraph:
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
    def build(cls, objective: DatasetObjective, params: dict[str, Tensor], Xc: Tensor, yc: Tensor) -> ChunkGraph:
        leaves = [params[n].clone().requires_grad_(True) for n in objective.names]
        seen: dict[tuple, int] = {}

        def pack(t: Tensor) -> Tensor:  # count each saved storage once
            try:
                key = (t.untyped_storage().data_ptr(), t.device)
                seen.setdefault(key, t.untyped_storage().nbytes())
            except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. sparse)
                seen[(id(t), t.device)] = t.numel() * t.element_size()
            return t

        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            value = objective.chunk_loss(dict(zip(objective.names, leaves)), Xc, yc)
            grads = torch.autograd.grad(value, leaves, create_graph=True, allow_unused=True)
        return cls(objective.names, leaves, list(grads), int(Xc.shape[0]), sum(seen.values()))

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


class LinearizedChunk:
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


class KeptState:
    """The per-chunk state kept between products at one θ, rebuilt when θ moves (module docstring).

    Args:
        objective: the data-set objective the products are of.
        reuse: ``"graph"``, ``"linearized"`` or ``"none"``.
        graph_memory: bytes the kept state may hold; beyond it, fall back (module docstring).
        reference: v ``(1, D)`` → Σ_c n_c ∇²R_c v ``(1, D)`` recomputed from scratch (the
            ``reduction="sum"`` scale): the one product a new linearized program is checked against.

    Attributes:
        status: ``reuse``'s value in force, or ``"none: <reason>"`` / ``"graph: <reason>"`` after a
            fallback (for good); nbytes: bytes kept now (0 when nothing is); chunks: the kept
            :class:`ChunkGraph` / :class:`LinearizedChunk` list, or None; programs: the traced
            linearized programs, keyed by chunk shape, dtype and the objective's mode.
    """

    def __init__(
        self,
        objective: DatasetObjective,
        reuse: str,
        graph_memory: int,
        reference: Callable[[Tensor], Tensor],
    ) -> None:
        if reuse not in REUSE_MODES:
            raise ValueError(f"unknown reuse {reuse!r}; choose one of {list(REUSE_MODES)}")
        self.objective = objective
        self.status = reuse
        self.graph_memory = int(graph_memory)
        self.reference = reference
        self.nbytes = 0
        self.chunks: list[ChunkGraph | LinearizedChunk] | None = None
        self.programs: dict[tuple, TangentProgram] = {}
        self._verified = False
        self._state: list[Tensor] | None = None
        self._mode: tuple | None = None

    def release(self) -> None:
        """Drop the kept state (graphs or boundary values, and their memory); the next product
        rebuilds it."""
        self.chunks, self._state, self.nbytes = None, None, 0

    def _unchanged(self) -> bool:
        if self._state is None or self._mode != self.objective.mode_key():
            return False
        now = self.objective.state()
        return len(now) == len(self._state) and all(
            a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
            for a, b in zip(now, self._state)
        )

    def current(self) -> list[ChunkGraph | LinearizedChunk] | None:
        """The kept per-chunk state at the current parameters: kept already, or built now.

        None when reuse is off. Past ``graph_memory`` bytes, or for a model it cannot handle, the
        linearized program falls back to ``"graph"`` for good, and the graph to recomputing;
        ``status`` says why."""
        if self.chunks is not None and self._unchanged():
            return self.chunks
        self.release()
        linearized = self.status == "linearized"
        try:
            chunks = self._build_linearized() if linearized else self._build_graphs()
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
            if isinstance(err, ValueError) and "empty" in str(err):
                raise
            if not linearized:  # not twice differentiable by autograd
                self.status = f"none: building the gradient graph failed ({type(err).__name__}: {err})"
                return None
            self.status = f"graph: the linearized program failed ({type(err).__name__}: {err})"
            return self.current()
        if chunks is None:  # over budget
            return self.current() if linearized else None
        if not chunks:
            raise ValueError("the data set is empty (the loader yielded no examples)")
        if linearized and not self._verified and not self._verify(chunks):
            return self.current()
        self.chunks = chunks
        self.nbytes = sum(c.saved_bytes for c in chunks)
        self._state = [t.clone() for t in self.objective.state()]
        self._mode = self.objective.mode_key()
        return chunks

    def _over_budget(self, used: int, chunks: int) -> bool:
        """Past ``graph_memory``: a linearized program falls back to the (smaller) kept graph, a
        kept graph to recomputing every product."""
        if used <= self.graph_memory:
            return False
        linearized = self.status == "linearized"
        self.status = (
            f"{'graph' if linearized else 'none'}: the kept state exceeds graph_memory = {self.graph_memory} "
            f"bytes ({used} bytes after {chunks} chunks"
            + ("; the linearized program keeps ~2.5× a graph's bytes)" if linearized
               else "); every product is recomputed")
        )
        return True

    def _build_graphs(self) -> list[ChunkGraph] | None:
        params = self.objective.params()
        graphs: list[ChunkGraph] = []
        used = 0
        for Xc, yc in self.objective.chunks():
            graphs.append(ChunkGraph.build(self.objective, params, Xc, yc))
            used += graphs[-1].saved_bytes
            if self._over_budget(used, len(graphs)):
                return None
        return graphs

    def _build_linearized(self) -> list[LinearizedChunk] | None:
        obj = self.objective
        params = obj.params()
        everything = {**obj.constants(), **params}
        chunks: list[LinearizedChunk] = []
        used = 0
        for Xc, yc in obj.chunks():
            # the trace freezes Python-level choices: the shapes and the train/eval mode
            key = (tuple(Xc.shape), Xc.dtype, tuple(yc.shape), yc.dtype, obj.mode_key())
            if key not in self.programs:
                tangents = {n: torch.zeros_like(p) for n, p in params.items()}
                self.programs[key] = TangentProgram(
                    obj.chunk_loss, obj.names, list(obj.constants()), (everything, tangents, Xc, yc),
                )
            program = self.programs[key]
            boundary = program.bind(everything, Xc, yc)
            size = sum(b.numel() * b.element_size() for b in boundary if isinstance(b, Tensor))
            chunks.append(LinearizedChunk(obj.names, program, boundary, int(Xc.shape[0]), size))
            used += size
            if self._over_budget(used, len(chunks)):
                return None
        return chunks

    def _verify(self, chunks: list[LinearizedChunk]) -> bool:
        """One product through the linearized program against a recomputed one (√ε relative)."""
        obj = self.objective
        gen = torch.Generator(device=obj.device).manual_seed(12345)
        v = torch.randn(1, obj.dim, generator=gen, device=obj.device, dtype=obj.dtype)
        tangents = obj.tangents(v)
        fast = sum(c.n * c.hvps(tangents, 1) for c in chunks)
        slow = self.reference(v)
        tol = float(torch.finfo(obj.dtype).eps) ** 0.5
        diff = float(torch.linalg.vector_norm(fast - slow))
        if diff > tol * float(torch.linalg.vector_norm(slow)):
            self.status = f"graph: the linearized product disagreed with a recomputed one ({diff:.2e})"
            return False
        self._verified = True
        return True

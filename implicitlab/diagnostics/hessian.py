"""The Hessian of a data-set loss as a matrix-free operator: ``H @ v`` for any ``nn.Module``.

For a model f(θ; x) with parameters θ ∈ R^D (the trainable ones, or those ``params`` selects;
flattened in ``named_parameters`` order), data {(x_n, y_n)}_{n=1..N}, a loss and an optional
penalty P, :class:`HessianOperator` represents

    H = ∇²_θ R(θ),   R(θ) = (1/N) Σ_n ℓ(f(θ; x_n), y_n) + P(θ)        (``reduction="mean"``)

and multiplies it with vectors without forming it. R — the conventions of the named losses
(``"square"`` has no ½), loss callables (a sum or a mean over the batch, detected),
``reduction="sum"``, the penalty, the parameter filter, the declared ``mode`` (eval by default,
whatever mode the model is in; its mode and buffers are left as found) and the chunking of the
data — is :class:`~implicitlab.diagnostics.objective.DatasetObjective`.

How a product is computed (Pearlmutter 1994; the forward-over-reverse order is the one
``torch.func`` recommends for Hessians): for chunk c with n_c examples and batch-mean loss R_c,

    H v = Σ_c (n_c / N) · ∇²R_c v,    ∇²R_c v = d/dt ∇R_c(θ + t v) |_{t=0}    (jvp of grad)

so memory is that of one chunk whatever N; the penalty's ∇²P v is added once. With
``distributed`` (:mod:`~implicitlab.diagnostics.distributed`) each rank's data are one shard of the
data set: the shards' sums Σ_c n_c ∇²R_c v and counts are gathered and added in rank order (N = Σ n_r),
the penalty added once, and every rank holds the same bits. ``backend="autograd"`` computes ∇²R_c v as the gradient
of ⟨∇R_c, v⟩ (double backward) instead; ``"auto"`` uses ``torch.func`` and falls back to double
backward for models that ``torch.func`` cannot transform.

Products at one θ share their primal work (``reuse``: the kept autograd graph by default, or the
linearized program), under a memory budget and rebuilt whenever the parameters, buffers or mode
change — :mod:`implicitlab.diagnostics.kept_state`. The operator reads the model's *current*
parameters at each product, so one operator follows a model while it trains (a sharpness probe is
built once and warm-started from step to step).

Checks at construction (no silent wrong answer): one dtype and device for the parameters;
consistent, finite, non-empty, re-iterable data and a decomposable loss
(:mod:`~implicitlab.diagnostics.objective`); the determinism probe —
two products with one random vector must agree and leave the buffers unchanged
(:mod:`~implicitlab.diagnostics.determinism`; it never reuses anything); non-finite products are
errors. Data parallel, on every rank alike: a rank's bad data or options (named), ranks that differ
in the model, dtype, reduction, mode or penalty, a backend that cannot carry the tensors, and a
determinism probe that fails on some rank's shard (named); per product, ranks whose input vectors
or parameters differ (:mod:`~implicitlab.diagnostics.distributed`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import grad, jvp

from . import determinism
from .distributed import ShardGroup, fingerprint, fingerprint_scale, resolve_group
from .forward_ad import load_jvp_decompositions
from .kept_state import DEFAULT_GRAPH_MEMORY, REUSE_MODES, KeptState
from .objective import DatasetObjective, LossSpec, ParamFilter, Penalty

BACKENDS = ("auto", "func", "autograd")


class HessianOperator:
    """The D × D Hessian of the data-set loss, applied matrix-free: ``H @ v``.

    Args:
        model: any ``nn.Module``; its parameters with ``requires_grad`` are the variables, in
            ``named_parameters()`` order (frozen ones are constants).
        loss: ``"square"``, ``"exp"``, ``"logistic"``, ``"ce"`` (see
            :mod:`~implicitlab.diagnostics.objective`) or a callable ``loss(outputs, targets) -> scalar``
            of the outputs and targets only, summing or averaging over the batch (detected).
        X: inputs ``(N, ...)``, or a re-iterable of ``(X_b, y_b)`` batches (a ``DataLoader``
            without shuffling or dropped batches, a list; iterated once per product).
        y: targets ``(N, ...)`` when ``X`` is a tensor; ``None`` for a loader.
        chunk_size: at most this many examples per forward pass (default 256); loader batches
            larger than this are split. Changes memory and speed, not the result.
        reduction: ``"mean"`` or ``"sum"`` over the N examples; None (default): ``"mean"`` for a
            named loss, the callable's own reduction for a callable.
        params: the variables — a list of parameter names or a predicate ``(name, tensor) -> bool``;
            the others are held fixed and H is the block of the selected ones (default: all
            trainable parameters).
        penalty: ``P(param_dict) -> scalar`` (every parameter by name), added once to R.
        mode: the objective: ``"eval"`` (default), ``"train_batchnorm"`` (full-batch batch-norm
            statistics, dropout off) or ``"model"`` (the model's own mode at each product).
        batch: adapter ``batch -> (X_b, y_b)`` for a loader yielding other batches (dicts).
        backend: ``"auto"`` (``torch.func``, double backward if that fails), ``"func"`` or
            ``"autograd"``.
        check_determinism: run the determinism probe (two products) at construction.
        probe_rtol: relative tolerance of the probe (default √ε of the dtype: 1.5e-8 in float64).
        seed: seed of the probe's random vector.
        reuse: what is kept between products at the same parameters: ``"graph"`` (default),
            ``"linearized"`` or ``"none"`` (:mod:`~implicitlab.diagnostics.kept_state`).
        graph_memory: bytes the kept state may hold (default 1 GiB); beyond it, recompute.
        distributed: data parallelism over ``torch.distributed`` — ``None`` (default): over the
            default process group when one is initialised; ``False``: never; ``True``: the default
            group; or a ``ProcessGroup``. Each rank's ``X``, ``y`` are then its shard of the data
            set (shards may differ in size); every rank must call with the same model, options and
            seed, and gets the same products bit for bit
            (:mod:`~implicitlab.diagnostics.distributed`). Not with ``mode="train_batchnorm"``.

    Attributes:
        shape: ``(D, D)``; dtype, device: those of the parameters; num_matvecs: products so far
        (the probe's two included); backend: the backend in use once the first product ran;
        reuse_status: ``reuse``'s value in force, or ``"none: <reason>"`` / ``"graph: <reason>"``
        after a fallback; graph_bytes: bytes the kept state holds (0 when nothing is kept);
        objective: the :class:`~implicitlab.diagnostics.objective.DatasetObjective`; kept: the
        :class:`~implicitlab.diagnostics.kept_state.KeptState`; group: the
        :class:`~implicitlab.diagnostics.distributed.ShardGroup` (None on one process);
        num_examples: N, all shards together; shard_sizes: n_r of each rank (``[N]`` on one process).
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
        batch=None,
        backend: str = "auto",
        check_determinism: bool = True,
        probe_rtol: float | None = None,
        seed: int = 0,
        reuse: str = "graph",
        graph_memory: int = DEFAULT_GRAPH_MEMORY,
        distributed=None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
        if reuse not in REUSE_MODES:
            raise ValueError(f"unknown reuse {reuse!r}; choose one of {list(REUSE_MODES)}")
        group: ShardGroup | None = resolve_group(distributed)
        self.group = group
        if group is not None and mode == "train_batchnorm":
            raise ValueError(
                "mode='train_batchnorm' normalises with the statistics of the full data set in one chunk, "
                "which a data-parallel operator does not hold on any rank: use mode='eval' (or distributed=False)"
            )

        def build() -> DatasetObjective:
            return DatasetObjective(
                model, loss, X, y, chunk_size=chunk_size, reduction=reduction, params=params, penalty=penalty,
                mode=mode, batch=batch,
            )

        self.objective = objective = build() if group is None else group.agree(build, "checking the data and options")
        self.model = model
        self.loss_fn = objective.loss_fn
        self.reduction = objective.reduction
        self.mode = mode
        self.names = objective.names
        self.chunk_size = objective.chunk_size
        self.backend = backend
        self.dtype: torch.dtype = objective.dtype
        self.device: torch.device = objective.device
        self.dim = objective.dim
        self.shape = (self.dim, self.dim)
        self.num_matvecs = 0
        self.columns_per_pass = 32  # columns of H @ V batched in one vmapped pass (memory × this)
        self.num_examples = objective.num_examples
        self.shard_sizes = [objective.num_examples]
        if group is not None:
            self._check_ranks_agree()
        self.reuse = reuse
        self.kept = KeptState(objective, reuse, graph_memory, self._reference_product)
        if check_determinism and group is None:
            determinism.check_determinism(
                lambda v: self._matvec(v, reuse=False), model, self.dim,
                dtype=self.dtype, device=self.device, rtol=probe_rtol, seed=seed, mode=mode,
            )
        elif check_determinism:  # each rank probes its own shard; a failing shard is named on every rank
            group.agree(lambda: determinism.check_determinism(
                self._shard_matvec, model, self.dim,
                dtype=self.dtype, device=self.device, rtol=probe_rtol, seed=seed, mode=mode,
            ), "the determinism probe (each rank's data shard, two passes)")

    # ------------------------------------------------------------------------- ranks ---
    def _check_ranks_agree(self) -> None:
        """Every rank has the same variables, dtype, reduction, mode and penalty, and the same
        parameter values (fingerprints); the shard sizes give N. Raises on every rank otherwise."""
        obj, group = self.objective, self.group
        signature = (list(zip(obj.names, map(tuple, obj.shapes))), str(self.dtype), self.device.type,
                     obj.reduction, obj.loss_reduction, self.mode, obj.penalty is not None)
        group.check_same(signature, "the model's variables, dtype, device type, reduction, mode and penalty")
        group.comm_device(self.device)  # a backend that cannot carry the tensors: an error now, on every rank
        sizes = group.gather_objects(obj.num_examples, "the shard sizes")
        self.shard_sizes = [int(n) for n in sizes]
        self.num_examples = sum(self.shard_sizes)
        flat = torch.cat([p.reshape(-1) for p in obj.params().values()])
        meta = torch.tensor([*fingerprint(flat), fingerprint_scale(flat)], dtype=torch.float64, device=self.device)
        self._check_fingerprints(group.gather(meta, "the parameters' fingerprints"), 0, "parameters")

    def _check_fingerprints(self, metas: list[Tensor], at: int, what: str) -> None:
        """metas[r][at : at + 3] = (Σ t, Σ i t / n, Σ |t|) of rank r's ``what``: equal to rank 0's to √ε."""
        rtol = float(torch.finfo(self.dtype).eps) ** 0.5
        ref = metas[0][at : at + 3].tolist()
        bad = [r for r, m in enumerate(metas)
               if any(abs(a - b) > rtol * ref[2] + 1e-300 for a, b in zip(m[at : at + 2].tolist(), ref[:2]))]
        if bad:
            raise ValueError(
                f"the ranks' {what} differ: ranks {bad} differ from rank 0 (fingerprints "
                f"{metas[bad[0]][at : at + 2].tolist()} vs {ref[:2]}). Every rank must hold the same model "
                "and pass the same vectors (the same seed on every rank); only the data differ"
            )

    def _shard_matvec(self, v: Tensor) -> Tensor:
        """This rank's shard alone, H_r v = its data term (its own mean for reduction="mean") + ∇²P v,
        recomputed: what the determinism probe applies on each rank (no collective)."""
        total, count = self._local_products(v.unsqueeze(0), reuse=False)
        total = total if self.reduction == "sum" else total / count
        if self.objective.penalty is not None:
            total = total + self._penalty_products(self.objective.tangents(v.unsqueeze(0)), 1)
        return total[0]

    @property
    def reuse_status(self) -> str:
        """``reuse``'s value in force, or ``"none: <reason>"`` / ``"graph: <reason>"`` after a fallback."""
        return self.kept.status

    @property
    def graph_memory(self) -> int:
        """Bytes the kept state may hold."""
        return self.kept.graph_memory

    @property
    def graph_bytes(self) -> int:
        """Bytes the kept state holds now (0 when nothing is kept)."""
        return self.kept.nbytes

    def release_graphs(self) -> None:
        """Drop the kept state (graphs or boundary values, and their memory); the next product
        rebuilds it."""
        self.kept.release()

    def chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The data as ``(X_c, y_c)`` chunks on the operator's device, ≤ ``chunk_size`` each."""
        return self.objective.chunks()

    # ------------------------------------------------------------------------- products ---
    def _hvp_func(self, params, tangent, Xc, yc) -> dict[str, Tensor]:
        load_jvp_decompositions()  # forward mode: torch's jvp decompositions, loaded quietly
        grad_fn = grad(self.objective.chunk_loss)
        return jvp(lambda p: grad_fn(p, Xc, yc), (params,), (tangent,))[1]

    def _hvp_autograd(self, params, tangent, Xc, yc) -> dict[str, Tensor]:
        leaves = {n: p.requires_grad_(True) for n, p in params.items()}  # detached copies
        with torch.enable_grad():
            value = self.objective.chunk_loss(leaves, Xc, yc)
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
        return {n: torch.stack([r[n] for r in rows]) for n in self.objective.names}

    def _penalty_products(self, tangents: dict[str, Tensor], m: int) -> Tensor:
        """∇²P vᵢ for the m tangents (leading dimension m) → ``(m, D)``: vmapped jvp of grad, or
        double backward one at a time for a penalty ``torch.func`` cannot transform."""
        params, names, P = self.objective.params(), self.objective.names, self.objective.penalty_value
        hvp = lambda t: jvp(grad(P), (params,), (t,))[1]
        try:
            load_jvp_decompositions()
            out = torch.func.vmap(hvp)(tangents)
        except (RuntimeError, NotImplementedError):
            rows = []
            for i in range(m):
                leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
                with torch.enable_grad():
                    g = torch.autograd.grad(P(leaves), list(leaves.values()), create_graph=True, allow_unused=True)
                    dot = sum((gi * tangents[n][i]).sum() for n, gi in zip(names, g) if gi is not None and gi.requires_grad)
                    hv = (torch.autograd.grad(dot, list(leaves.values()), allow_unused=True)
                          if isinstance(dot, Tensor) else [None] * len(names))
                rows.append({n: torch.zeros_like(params[n]) if h is None else h for n, h in zip(names, hv)})
            out = {n: torch.stack([r[n] for r in rows]) for n in names}
        return torch.cat([out[n].reshape(m, -1) for n in names], dim=1)

    def _local_products(self, V: Tensor, reuse: bool = True) -> tuple[Tensor, int]:
        """Σ_c n_c ∇²R_c vᵢ over this process's chunks for the rows vᵢ of ``V`` ``(m, D)`` → ``(m, D)``,
        and the number of examples; no collective, not counted."""
        m = V.shape[0]
        names = self.objective.names
        tangents = self.objective.tangents(V)
        total = torch.zeros(m, self.dim, dtype=self.dtype, device=self.device)
        count = 0
        kept = self.kept.current() if reuse and not self.reuse_status.startswith("none") else None
        if kept is not None:
            for chunk in kept:
                total += chunk.n * chunk.hvps(tangents, m)
                count += chunk.n
        else:
            params = self.objective.params()
            for Xc, yc in self.chunks():
                n_c = int(Xc.shape[0])
                hv = self._chunk_hvps(params, tangents, Xc, yc, m)
                total += n_c * torch.cat([hv[n].reshape(m, -1) for n in names], dim=1)
                count += n_c
        if count == 0:
            raise ValueError("the data set is empty (the loader yielded no examples)")
        return total, count

    def _reduce(self, V: Tensor, total: Tensor, count: int) -> tuple[Tensor, int]:
        """The shards' sums added in rank order (the same bits on every rank) and N; the ranks'
        inputs V and parameters are compared through their fingerprints on the way."""
        group, m = self.group, V.shape[0]
        flat = torch.cat([p.reshape(-1) for p in self.objective.params().values()])
        meta = torch.tensor([count, *fingerprint(V), fingerprint_scale(V), *fingerprint(flat), fingerprint_scale(flat)],
                            dtype=torch.float64, device=self.device)
        if self.dtype == torch.float64:  # one collective: the products with their metadata
            parts = group.gather(torch.cat([total.reshape(-1), meta]), "Hessian-product")
            metas, products = [p[-7:] for p in parts], [p[:-7].reshape(m, self.dim) for p in parts]
        else:
            metas = group.gather(meta, "Hessian-product metadata")
            products = group.gather(total, "Hessian-product")
        self._check_fingerprints(metas, 1, "input vectors")
        self._check_fingerprints(metas, 4, "parameters")
        summed = products[0].clone()
        for p in products[1:]:
            summed += p
        sizes = [int(mt[0]) for mt in metas]
        self.shard_sizes = sizes
        return summed, sum(sizes)

    def _products(self, V: Tensor, reuse: bool = True, penalty: bool = True) -> Tensor:
        """H vᵢ for the rows vᵢ of ``V`` ``(m, D)`` (operator device and dtype) → ``(m, D)``
        (without ∇²P for ``penalty=False``); over every rank's shard when distributed."""
        m = V.shape[0]
        total, count = self._local_products(V, reuse)
        if self.group is not None:
            total, count = self._reduce(V, total, count)
        self.num_examples = count
        self.num_matvecs += m
        total = total if self.reduction == "sum" else total / count
        tangents = self.objective.tangents(V)
        if penalty and self.objective.penalty is not None:
            total = total + self._penalty_products(tangents, m)
        return total

    def _matvec(self, v: Tensor, reuse: bool = True) -> Tensor:
        return self._products(v.unsqueeze(0), reuse)[0]

    def _reference_product(self, v: Tensor) -> Tensor:
        """Σ_c n_c ∇²R_c v for v ``(1, D)`` over this process's chunks, recomputed and not counted:
        what the kept state's linearized program is checked against (no collective)."""
        return self._local_products(v, reuse=False)[0]

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

    def loss_and_gradient(self) -> tuple[float, Tensor]:
        """The data-set loss and its flat gradient ``(D,)``, chunked like the products.

        (For the cost comparison "one product vs one gradient"; not counted in ``num_matvecs``.)
        Over every rank's shard when distributed (sums gathered in rank order, the penalty once).
        """
        if self.group is None:
            return self.objective.loss_and_gradient()
        value, grad_sum, count = self.objective.loss_and_gradient_sums()
        payload = torch.cat([grad_sum, torch.tensor([value, count], dtype=grad_sum.dtype, device=self.device)])
        total = self.group.sum_in_rank_order(payload, "loss-and-gradient")
        scale = 1.0 if self.reduction == "sum" else 1.0 / float(total[-1])
        value, grad_total = float(total[-2]) * scale, total[:-2] * scale
        return self.objective.add_penalty(value, grad_total)

    def __repr__(self) -> str:
        return (
            f"HessianOperator(dim={self.dim}, dtype={self.dtype}, device={self.device}, "
            f"backend={self.backend!r}, reuse={self.reuse_status!r}, mode={self.mode!r}, chunk_size={self.chunk_size}, "
            f"num_examples={self.num_examples}, num_matvecs={self.num_matvecs})"
        )


def hessian_vector_product(model: nn.Module, loss: LossSpec, X, y, v: Tensor, **kwargs) -> Tensor:
    """One product H v ``(D,)`` (no determinism probe); see :class:`HessianOperator` for arguments."""
    kwargs.setdefault("check_determinism", False)
    kwargs.setdefault("reuse", "none")  # one product: nothing to reuse
    return HessianOperator(model, loss, X, y, **kwargs) @ v

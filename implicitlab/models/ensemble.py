"""R independent runs of one architecture held as one batched model.

Layer k of all runs is one tensor ``(R, out_k, in_k)``; a forward pass is a chain of batched
matrix products and one gradient of Σ_r L_r gives every run its own gradient (the runs share no
parameter, so ∂(Σ_r L_r)/∂θ_r = ∇L_r(θ_r) exactly). Thousands of small runs then cost a few
kernel launches per step instead of thousands.

Each run has its own seed (initialisation), init scale and — in :mod:`implicitlab.train.gd` — step
size. Run r initialises from the same :meth:`Architecture.init` call as a single
:class:`LayeredNet`, so it is the same run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .architecture import Architecture, activate
from .layered import LayeredNet


class Ensemble(nn.Module):
    """R runs of ``arch``; parameters ``weights[k]`` of shape ``(R, out_k, in_k)``.

    Args:
        arch: the shared architecture.
        weights: per layer, the stacked weights of all runs ``(R, out, in)``.
        head: fixed output matrices ``(R, d_out, d)`` (residual nets) or None.
        seeds, init_scales: per run, kept for the results table.
    """

    def __init__(
        self,
        arch: Architecture,
        weights: list[torch.Tensor],
        head: torch.Tensor | None = None,
        seeds: Sequence[int] | None = None,
        init_scales: Sequence[float] | None = None,
    ):
        super().__init__()
        self.arch = arch
        self.weights = nn.ParameterList([nn.Parameter(w.detach().clone()) for w in weights])
        if head is not None:
            self.register_buffer("head", head.detach().clone())
        else:
            self.head = None
        R = self.num_runs
        self.seeds = list(seeds) if seeds is not None else list(range(R))
        self.init_scales = list(init_scales) if init_scales is not None else [float("nan")] * R

    @classmethod
    def create(
        cls,
        arch: Architecture,
        init_scales: Sequence[float],
        seeds: Sequence[int],
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> "Ensemble":
        """Initialise run r exactly as ``LayeredNet.create(arch, init_scales[r], seeds[r])``."""
        if len(init_scales) != len(seeds):
            raise ValueError(f"{len(init_scales)} init scales for {len(seeds)} seeds")
        if len(seeds) == 0:
            raise ValueError("an ensemble needs at least one run")
        per_run = [arch.init(s, seed, dtype=dtype, device=device) for s, seed in zip(init_scales, seeds)]
        weights = [torch.stack([w[k] for w, _ in per_run]) for k in range(arch.depth)]
        head = torch.stack([h for _, h in per_run]) if per_run[0][1] is not None else None
        return cls(arch, weights, head, seeds=seeds, init_scales=init_scales)

    @classmethod
    def stack(cls, models: Sequence[LayeredNet]) -> "Ensemble":
        """Hold several single models of one architecture as an ensemble."""
        arch = models[0].arch
        if any(m.arch != arch for m in models):
            raise ValueError("all models of an ensemble must share one architecture")
        weights = [torch.stack([m.weights[k].detach() for m in models]) for k in range(arch.depth)]
        head = torch.stack([m.head for m in models]) if models[0].head is not None else None
        return cls(arch, weights, head)

    @property
    def num_runs(self) -> int:
        return self.weights[0].shape[0]

    def member(self, r: int) -> LayeredNet:
        """Run r as an independent single model (a copy)."""
        head = self.head[r] if self.head is not None else None
        return LayeredNet(self.arch, [w[r] for w in self.weights], head)

    def layer_weights(self) -> list[torch.Tensor]:
        return list(self.weights)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """X ``(n, d_in)`` shared by all runs, or ``(R, n, d_in)`` per run → ``(R, n, d_out)``."""
        h = X
        last = len(self.weights) - 1
        for k, W in enumerate(self.weights):
            h = torch.matmul(h, W.transpose(-1, -2))  # (R, n, out_k)
            if k < last:
                h = activate(h, self.arch.activation, self.arch.eps)
        if self.head is not None:
            h = torch.matmul(h, self.head.transpose(-1, -2))  # (R, n, d_out)
        return h

    def end_to_end(self) -> torch.Tensor:
        """The product [head] W_L ⋯ W_1 ``(R, d_out, d_in)`` of a linear network.

        Multiplies from the output side, so each product is (d_out × d)(d × d): L small bmm's.
        """
        if self.arch.activation != "none":
            raise ValueError("end_to_end is defined for linear networks only (activation='none')")
        ws = list(self.weights)
        P = ws[-1] if self.head is None else torch.matmul(self.head, ws[-1])  # (R, d_out, d)
        for W in reversed(ws[:-1]):
            P = torch.matmul(P, W)
        return P

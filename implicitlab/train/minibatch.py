"""Mini-batch SGD of a classifier ``nn.Module`` on in-memory tensors, and its evaluation.

The training loop of the CIFAR-10 experiments of Poggio et al. 2018 (Figs 1, 2, 5), for any
classifier mapping a batch ``(B, ...)`` to logits ``(B, K)`` on the mean cross-entropy:

- **Training** (:func:`fit`, :func:`run_epoch`, :func:`make_optimizer`): plain SGD (optionally with
  momentum; no weight decay, no augmentation) on the mean cross-entropy of a batch; an epoch is a
  seeded permutation of the n indices cut into batches, each batch gathered by index from the
  device tensor with one ``index_select`` (:func:`gather_rows`; ``x[idx]``'s advanced indexing is
  5–8× slower on the CPU), in its layout (channels-last images stay channels-last). With
  ``batch_size=None`` an epoch is one step of full-batch gradient descent: the gradient of the mean
  loss over all n examples (:func:`full_batch_gradient`), accumulated over chunks of ``chunk_size``
  examples (memory only: the step is the same up to float rounding).
- **Evaluation** (:func:`evaluate`): classification error, mean cross-entropy (with its spread) and
  the confusion matrix, batched, in ``eval()`` mode, without gradients.

Batch orders come from a CPU ``torch.Generator`` (the same order on any device); the global
generators are never touched. The data are tensors already on the model's device: nothing here
touches numpy or single examples (see ``implicitlab.experiments.poggio2018.cifar`` for how the
CIFAR tensors are prepared).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..losses import loss, loss_terms

__all__ = [
    "Evaluation",
    "evaluate",
    "fit",
    "full_batch_gradient",
    "gather_rows",
    "make_optimizer",
    "run_epoch",
]


def make_optimizer(model: nn.Module, lr: float, momentum: float = 0.0) -> torch.optim.SGD:
    """Plain SGD: no weight decay, no Nesterov; ``lr`` multiplies the gradient of the *mean* batch loss.

    The multi-tensor (``foreach``) implementation on every device: the same update, bit for bit,
    in a few fused calls instead of a Python loop over the parameters (PyTorch's CPU default).
    """
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, foreach=True)


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` along the first dimension, in ``x``'s layout: one ``index_select`` (a row copy) on the
    NHWC view of a channels-last ``(N, C, H, W)`` tensor (``index_select`` on the tensor itself
    returns NCHW, slowly), on ``x`` itself otherwise. ``idx``: ``(B,)`` int64 on ``x``'s device."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).index_select(0, idx).permute(0, 3, 1, 2)
    return x.index_select(0, idx)


@dataclass(frozen=True)
class Evaluation:
    """Error and cross-entropy of a model on a set of ``m`` examples."""

    error: float  # fraction of examples whose arg-max logit is not the label
    loss: float  # mean cross-entropy (nats)
    loss_sd: float  # standard deviation of the per-example cross-entropy (its SE is loss_sd / √m)
    m: int  # number of examples
    confusion: np.ndarray | None = None  # (K, K) int64 counts [true label, predicted class], or None


def _evaluation(wrong, total, total_sq, n: int, confusion: np.ndarray | None = None) -> Evaluation:
    m = max(n, 1)
    mean = float(total) / m
    var = max(float(total_sq) / m - mean * mean, 0.0)
    return Evaluation(float(wrong) / m, mean, float(np.sqrt(var)), n, confusion)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 2_000) -> Evaluation:
    """Classification error, cross-entropy and confusion matrix of ``model`` on ``(x, y)``, batched, in
    ``eval()`` mode (restored afterwards). ``x``: ``(m, C, H, W)``, ``y``: ``(m,)`` int64 in 0..K−1."""
    was_training = model.training
    model.eval()
    wrong = torch.zeros((), dtype=torch.float64, device=x.device)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    total_sq = torch.zeros((), dtype=torch.float64, device=x.device)
    counts = None
    for a, b in _chunks(int(y.shape[0]), batch_size):
        logits = model(x[a:b])  # (B, K)
        k = logits.shape[-1]
        pred = logits.argmax(-1)  # (B,)
        wrong += (pred != y[a:b]).sum()
        terms = loss_terms("ce", logits.double(), y[a:b])  # (B,)
        total += terms.sum()
        total_sq += (terms * terms).sum()
        pairs = torch.bincount(y[a:b] * k + pred, minlength=k * k)  # (K·K,)
        counts = pairs if counts is None else counts + pairs
    model.train(was_training)
    confusion = None if counts is None else counts.view(k, k).cpu().numpy().astype(np.int64)
    return _evaluation(wrong, total, total_sq, int(y.shape[0]), confusion)


def full_batch_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk_size: int = 10_000) -> Evaluation:
    """Put the gradient of the mean cross-entropy over all of ``(x, y)`` in ``.grad`` (accumulated over
    chunks of ``chunk_size`` examples) and return the error and loss of the current weights, which
    the forward passes give for free. ``x``: ``(n, C, H, W)``, ``y``: ``(n,)`` int64."""
    model.train()
    n = int(y.shape[0])
    wrong = torch.zeros((), dtype=torch.float64, device=x.device)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    total_sq = torch.zeros((), dtype=torch.float64, device=x.device)
    model.zero_grad(set_to_none=True)
    for a, b in _chunks(n, chunk_size):
        logits = model(x[a:b])  # (B, K)
        terms = loss_terms("ce", logits, y[a:b])  # (B,)
        (terms.sum() / n).backward()  # Σ_chunks (sum of losses)/n = the mean over all n
        with torch.no_grad():
            wrong += (logits.argmax(-1) != y[a:b]).sum()
            t64 = terms.detach().double()
            total += t64.sum()
            total_sq += (t64 * t64).sum()
    return _evaluation(wrong, total, total_sq, n)


def run_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int | None,
    generator: torch.Generator | None = None,
    chunk_size: int = 10_000,
) -> Evaluation | None:
    """One epoch: SGD over a seeded permutation in batches of ``batch_size`` (the last one may be
    smaller), or — ``batch_size=None`` — one full-batch GD step on the mean loss over all of ``x``.

    Args:
        x: ``(n, C, H, W)``, y: ``(n,)`` int64, both on the model's device.
        generator: CPU generator for the permutation (SGD only; None: a fresh unseeded one).
        chunk_size: examples per forward/backward pass of the full-batch gradient.

    Returns:
        GD: the training error and loss of the weights *before* the step; SGD: None.
    """
    if batch_size is None:
        before = full_batch_gradient(model, x, y, chunk_size=chunk_size)
        optimizer.step()
        return before
    model.train()
    n = int(y.shape[0])
    order = torch.randperm(n, generator=generator).to(x.device)  # (n,), drawn on the CPU: same on any device
    for a, b in _chunks(n, batch_size):
        idx = order[a:b]  # (B,)
        optimizer.zero_grad(set_to_none=True)
        loss("ce", model(gather_rows(x, idx)), y.index_select(0, idx)).backward()  # mean over the batch
        optimizer.step()
    return None


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int | None,
    lr: float,
    momentum: float = 0.0,
    seed: int = 0,
    chunk_size: int = 10_000,
    progress: Callable[[float], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``(x, y)`` for ``epochs`` epochs of :func:`run_epoch` (SGD, or GD when
    ``batch_size`` is None) with :func:`make_optimizer`'s SGD; batch orders from ``seed``.

    Args:
        x: ``(n, ...)`` inputs, y: ``(n,)`` int64 labels in 0..K−1, both on the model's device.
        epochs, batch_size, lr, momentum, chunk_size: as in :func:`run_epoch` and :func:`make_optimizer`.
        seed: seeds the CPU generator of the batch orders (one generator for all epochs).
        progress: called with ``(epoch + 1) / epochs`` after each epoch.

    Returns:
        ``model``.
    """
    optimizer = make_optimizer(model, lr, momentum)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        run_epoch(model, optimizer, x, y, batch_size=batch_size, generator=gen, chunk_size=chunk_size)
        if progress:
            progress((epoch + 1) / epochs)
    return model

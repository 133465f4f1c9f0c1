"""What the CIFAR-10 experiments of Poggio et al. 2018 (Figs 1, 2, 5) share: data, training, evaluation.

- **Data** (:func:`load_arrays`, :func:`prepare`): CIFAR-10 is read once per run as uint8 arrays
  (``implicitlab.data.vision``, cached), then a class-balanced training subset of size n (nested:
  the subset for n lies inside the one for any larger n, same seed), optionally a fraction of its
  labels redrawn uniformly at random, and a class-balanced test subset (or the whole test split)
  are standardised per channel with the *training subset's* statistics and moved to the device as
  tensors, once. Nothing downstream touches numpy or single examples.
- **Layout** (:func:`preferred_memory_format`): on the CPU the images are stored channels-last
  (NHWC in memory, still indexed ``(N, C, H, W)``); every convolution then runs on NHWC input with
  no layout reorders: ≈ 1.2× per SGD step for the Fig. 1 net at batch 100 in float32, more for
  float64 and the Fig. 5 net (see ``benchmarks/cifar.py``). Only the data carries the layout: the
  model's parameters keep PyTorch's default, and results agree up to float rounding. Other
  devices keep PyTorch's default layout (not measured there).
- **Training** (:func:`fit`, :func:`run_epoch`): plain SGD (optionally with momentum; no weight
  decay, no augmentation) on the mean cross-entropy of a batch; an epoch is a seeded permutation
  of the n indices cut into batches, each batch gathered by index from the device tensor with one
  ``index_select`` (``x[idx]``'s advanced indexing is 5–8× slower on the CPU), in its layout. With
  ``batch_size=None`` an epoch is one step of full-batch gradient descent: the gradient of the
  mean loss over all n examples, accumulated over chunks of ``chunk_size`` examples (memory only:
  the step is the same up to float rounding).
- **Evaluation** (:func:`evaluate`): classification error, mean cross-entropy (with its spread)
  and the confusion matrix, batched, in ``eval()`` mode, without gradients.

Randomness never touches the global generators: the model is initialised inside
``torch.random.fork_rng`` from a seed (on the CPU, then moved, so CPU and CUDA runs start from the
same weights), and batch orders come from a CPU ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...config import dtype_of, require, require_positive
from ...data import (
    balanced_subset,
    load_cifar10,
    randomize_labels,
    resolve_data_root,
    standardize,
)
from ...losses import loss, loss_terms

__all__ = [
    "CifarArrays",
    "CifarTensors",
    "Evaluation",
    "binomial_se",
    "build_model",
    "check_training_fields",
    "evaluate",
    "fit",
    "full_batch_gradient",
    "gather_rows",
    "kaiming_init_",
    "load_arrays",
    "make_optimizer",
    "param_norm",
    "permutation_error_sd",
    "preferred_memory_format",
    "prepare",
    "run_epoch",
]

NUM_CLASSES = 10
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000  # images per split
CHANCE_ERROR = 1 - 1 / NUM_CLASSES  # error of a predictor independent of the labels, balanced classes
FIT_ERROR = 0.01  # "zero training error" in the claims: at most 1% of the training set misclassified (ours)
Z = 2.0  # a difference counts when it exceeds 2 standard errors (one-sided p ≈ 0.023)


@dataclass(frozen=True)
class CifarArrays:
    """CIFAR-10 as loaded: images ``uint8 (N, 32, 32, 3)``, labels ``int64 (N,)``, both splits."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_arrays(data_dir: str | None = None) -> CifarArrays:
    """Both splits of CIFAR-10 from ``data_dir`` (None → ``resolve_data_root``: ``$IMPLICITLAB_DATA``,
    then ``../shared/data``). Raises ``DataError`` naming the path when the data is missing or bad."""
    root = resolve_data_root(data_dir)
    train_images, train_labels = load_cifar10(root, "train")
    test_images, test_labels = load_cifar10(root, "test")
    return CifarArrays(train_images, train_labels, test_images, test_labels)


@dataclass(frozen=True)
class CifarTensors:
    """A training subset and a test set on the device.

    Attributes:
        x: ``(n, 3, 32, 32)`` standardised training images. y: ``(n,)`` int64 training labels
            (partly or wholly random when asked). y_clean: ``(n,)`` the true labels of the subset.
        x_test: ``(m, 3, 32, 32)``, y_test: ``(m,)`` int64 true test labels.
    """

    x: torch.Tensor
    y: torch.Tensor
    y_clean: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.y_test.shape[0])


def preferred_memory_format(device: torch.device | str) -> torch.memory_format:
    """The layout :func:`prepare` stores images in: ``torch.channels_last`` on the CPU (its
    convolutions, oneDNN's for float32 and the native ones for float64, are faster on NHWC input
    for every net and width here), ``torch.contiguous_format`` elsewhere (PyTorch's default: not
    measured on other devices)."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def prepare(
    arrays: CifarArrays,
    n: int,
    *,
    n_test: int | None = None,
    random_label_fraction: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    memory_format: torch.memory_format | None = None,
) -> CifarTensors:
    """The tensors of one run: a balanced training subset of ``n``, a balanced test subset of ``n_test``
    (None: the whole test split), ``random_label_fraction`` of the training labels redrawn.

    Seeds: the training subset uses ``seed`` (so subsets are nested in n), the test subset
    ``seed + 1``, the random labels ``seed + 2``. Standardisation statistics come from the
    training subset and are applied to the test images.

    ``memory_format``: the images' layout in memory (None: :func:`preferred_memory_format`); the
    values and the ``(N, C, H, W)`` indexing do not depend on it.
    """
    if memory_format is None:
        memory_format = preferred_memory_format(device)
    idx = balanced_subset(arrays.train_labels, n, seed=seed, num_classes=NUM_CLASSES)
    y_clean = arrays.train_labels[idx]
    y = randomize_labels(y_clean, random_label_fraction, NUM_CLASSES, seed=seed + 2) if random_label_fraction else y_clean
    if n_test is None:
        test_idx = np.arange(len(arrays.test_labels))
    else:
        test_idx = balanced_subset(arrays.test_labels, n_test, seed=seed + 1, num_classes=NUM_CLASSES)
    train = standardize(arrays.train_images[idx], dtype=dtype, device=device)
    test = standardize(arrays.test_images[test_idx], train.mean, train.std, dtype=dtype, device=device)
    x, x_test = (t.contiguous(memory_format=memory_format) for t in (train.images, test.images))

    def labels(v: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(v), dtype=torch.int64, device=device)

    return CifarTensors(x, labels(y), labels(y_clean), x_test, labels(arrays.test_labels[test_idx]))


# --------------------------------------------------------------------------- model and optimiser


INITS = ("kaiming", "default")


def kaiming_init_(model: nn.Module) -> nn.Module:
    """He-normal weights (He et al. 2015: std √(2/fan_in) before a ReLU, √(1/fan_in) for the last,
    linear layer) and zero biases, in place. Batch-norm layers keep their (1, 0) init."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for i, m in enumerate(layers):
        nn.init.kaiming_normal_(m.weight, nonlinearity="linear" if i == len(layers) - 1 else "relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return model


def check_training_fields(cfg, *, sgd: bool = True) -> None:
    """The checks the three CIFAR configs share (ConfigError on failure): ``lr`` > 0, ``init`` a
    known scheme, ``n_test`` None or a valid test-subset size, ``dtype`` a known name and, for SGD
    configs (``sgd``), ``epochs``/``batch_size`` ≥ 1 and ``momentum`` in [0, 1)."""
    require_positive("lr", cfg.lr)
    if sgd:
        require(cfg.epochs >= 1 and cfg.batch_size >= 1, "epochs and batch_size must be ≥ 1")
        require(0.0 <= cfg.momentum < 1.0, f"momentum must lie in [0, 1), got {cfg.momentum}")
    require(cfg.init in INITS, f"init must be one of {list(INITS)}, got {cfg.init!r}")
    require(cfg.n_test is None or 10 <= cfg.n_test <= CIFAR_TEST,
            f"n_test must be None or in [10, {CIFAR_TEST}], got {cfg.n_test}")
    dtype_of(cfg.dtype)


def build_model(
    factory: Callable[[], nn.Module], seed: int, *, init: str = "kaiming", dtype: torch.dtype, device: torch.device | str
) -> nn.Module:
    """``factory()`` initialised from ``seed`` on the CPU (global RNG untouched), then cast and moved.

    ``init``: ``"kaiming"`` re-draws the weights with :func:`kaiming_init_`; ``"default"`` keeps
    PyTorch's (uniform, variance 1/(3·fan_in), a sixth of He's: behind a ReLU the activations'
    scale shrinks ≈ 2.4× per layer, and the 5-layer Fig. 1 net then sits at chance for tens of
    epochs of SGD).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
        if init == "kaiming":
            kaiming_init_(model)
    return model.to(device=device, dtype=dtype)


def make_optimizer(model: nn.Module, lr: float, momentum: float = 0.0) -> torch.optim.SGD:
    """Plain SGD: no weight decay, no Nesterov; ``lr`` multiplies the gradient of the *mean* batch loss.

    The multi-tensor (``foreach``) implementation on every device: the same update, bit for bit,
    in a few fused calls instead of a Python loop over the parameters (PyTorch's CPU default).
    """
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, foreach=True)


def param_norm(model: nn.Module) -> float:
    """L2 norm of all parameters together, ‖θ‖₂ (weights and biases)."""
    with torch.no_grad():
        return float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in model.parameters())))


# --------------------------------------------------------------------------- training


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


def permutation_error_sd(confusion: np.ndarray) -> float:
    """Standard deviation of the error ``1 − (1/m)·Σ_k C[k, π(k)]`` over uniformly random permutations π
    of the class names, exactly (Hoeffding 1951's combinatorial variance: Var = Σ d²/(K − 1) with d the
    doubly centred matrix C/m).

    A net trained on random labels may still group test images by their true class (similar images,
    similar outputs); which predicted class a true class lands on is then random, and the test
    error's spread is this one, not the binomial one of independent examples.
    """
    c = np.asarray(confusion, dtype=np.float64)
    k = c.shape[0]
    a = c / max(c.sum(), 1.0)
    d = a - a.mean(axis=1, keepdims=True) - a.mean(axis=0, keepdims=True) + a.mean()
    return float(np.sqrt((d * d).sum() / (k - 1)))


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
    data: CifarTensors,
    *,
    epochs: int,
    batch_size: int | None,
    lr: float,
    momentum: float = 0.0,
    seed: int = 0,
    chunk_size: int = 10_000,
    progress: Callable[[float], None] | None = None,
) -> nn.Module:
    """Train ``model`` on ``(data.x, data.y)`` for ``epochs`` epochs (SGD, or GD when ``batch_size`` is
    None); batch orders from ``seed``. Calls ``progress(epoch / epochs)`` after each epoch."""
    optimizer = make_optimizer(model, lr, momentum)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        run_epoch(model, optimizer, data.x, data.y, batch_size=batch_size, generator=gen, chunk_size=chunk_size)
        if progress:
            progress((epoch + 1) / epochs)
    return model


# --------------------------------------------------------------------------- statistics for claims


def binomial_se(error: float, m: int) -> float:
    """Standard error of a classification error measured on ``m`` independent test examples."""
    p = min(max(error, 0.0), 1.0)
    return float(np.sqrt(p * (1 - p) / max(m, 1)))

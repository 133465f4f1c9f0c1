"""What the CIFAR-10 experiments of Poggio et al. 2018 (Figs 1, 2, 5) share: data, models, config checks,
statistics for the claims. They train and evaluate with :mod:`implicitlab.train.minibatch`.

- **Data** (:func:`load_arrays`, :func:`prepare`): CIFAR-10 is read once per run as uint8 arrays
  (:func:`implicitlab.data.load_cifar10`, cached), then a class-balanced training subset of size n
  (nested: the subset for n lies inside the one for any larger n, same seed), optionally a fraction
  of its labels redrawn uniformly at random, and a class-balanced test subset (or the whole test
  split) are standardised per channel with the *training subset's* statistics and moved to the
  device as tensors, once. Nothing downstream touches numpy or single examples.
- **Layout** (:func:`preferred_memory_format`): on the CPU the images are stored channels-last
  (NHWC in memory, still indexed ``(N, C, H, W)``); every convolution then runs on NHWC input with
  no layout reorders: ≈ 1.2× per SGD step for the Fig. 1 net at batch 100 in float32, more for
  float64 and the Fig. 5 net (see ``benchmarks/cifar.py``). Only the data carries the layout: the
  model's parameters keep PyTorch's default, and results agree up to float rounding. Other
  devices keep PyTorch's default layout (not measured there).
- **Models** (:func:`build_model`, :func:`kaiming_init_`, :func:`param_norm`): seeded
  initialisation, He-normal by default; the L2 norm of all parameters that Fig. 5 plots.
- **Config checks** (:func:`check_training_fields`) and **statistics for the claims**
  (:func:`binomial_se`, :func:`permutation_error_sd`, :func:`normal_sf`, :func:`holm`; ``Z``,
  ``Z_95``, ``FIT_ERROR``, ``CHANCE_ERROR``) and the **rule across seeds** (:func:`majority`,
  :func:`seed_rule_claim`: a claim measured on each seed holds when it holds on a majority of them;
  its control is counted the same way).

Randomness never touches the global generators: the model is initialised inside
``torch.random.fork_rng`` from a seed (on the CPU, then moved, so CPU and CUDA runs start from the
same weights).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
from ...seeds import derive_seed
from ..claims import Claim, Control, Relation, compare

__all__ = [
    "CifarArrays",
    "CifarTensors",
    "SeedResult",
    "binomial_se",
    "holm",
    "majority",
    "normal_sf",
    "seed_rule_claim",
    "build_model",
    "check_training_fields",
    "kaiming_init_",
    "load_arrays",
    "param_norm",
    "permutation_error_sd",
    "preferred_memory_format",
    "prepare",
]

NUM_CLASSES = 10
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000  # images per split
CHANCE_ERROR = 1 - 1 / NUM_CLASSES  # error of a predictor independent of the labels, balanced classes
FIT_ERROR = 0.01  # "zero training error" in the claims: at most 1% of the training set misclassified (ours)
Z = 2.0  # a difference counts when it exceeds 2 standard errors (one-sided p ≈ 0.023)
Z_95 = 1.6448536269514722  # one-sided 95% normal quantile: the equivalence (TOST) bounds


@dataclass(frozen=True)
class CifarArrays:
    """CIFAR-10 as loaded: images ``uint8 (N, 32, 32, 3)``, labels ``int64 (N,)``, both splits."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_arrays(data_dir: str | None = None) -> CifarArrays:
    """Both splits of CIFAR-10 from ``data_dir`` (None → ``resolve_data_root``'s default: ``../shared/data``
    if it exists, else ``./data``). Raises ``DataError`` naming the path when the data is missing or bad."""
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
    ``derive_seed(seed, "test_subset")``, the random labels ``derive_seed(seed, "random_labels")``. Standardisation statistics come from the
    training subset and are applied to the test images.

    ``memory_format``: the images' layout in memory (None: :func:`preferred_memory_format`); the
    values and the ``(N, C, H, W)`` indexing do not depend on it.
    """
    if memory_format is None:
        memory_format = preferred_memory_format(device)
    idx = balanced_subset(arrays.train_labels, n, seed=seed, num_classes=NUM_CLASSES)
    y_clean = arrays.train_labels[idx]
    y = randomize_labels(y_clean, random_label_fraction, NUM_CLASSES, seed=derive_seed(seed, "random_labels")) if random_label_fraction else y_clean
    if n_test is None:
        test_idx = np.arange(len(arrays.test_labels))
    else:
        test_idx = balanced_subset(arrays.test_labels, n_test, seed=derive_seed(seed, "test_subset"), num_classes=NUM_CLASSES)
    train = standardize(arrays.train_images[idx], dtype=dtype, device=device)
    test = standardize(arrays.test_images[test_idx], train.mean, train.std, dtype=dtype, device=device)
    x, x_test = (t.contiguous(memory_format=memory_format) for t in (train.images, test.images))

    def labels(v: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(v), dtype=torch.int64, device=device)

    return CifarTensors(x, labels(y), labels(y_clean), x_test, labels(arrays.test_labels[test_idx]))


# --------------------------------------------------------------------------- models and config checks


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


def param_norm(model: nn.Module) -> float:
    """L2 norm of all parameters together, ‖θ‖₂ (weights and biases)."""
    with torch.no_grad():
        return float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in model.parameters())))


# --------------------------------------------------------------------------- statistics for claims


def binomial_se(error: float, m: int) -> float:
    """Standard error of a classification error measured on ``m`` independent test examples."""
    p = min(max(error, 0.0), 1.0)
    return float(np.sqrt(p * (1 - p) / max(m, 1)))


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


def normal_sf(z: float) -> float:
    """One-sided p-value of a standard normal statistic, P(Z ≥ z) (scipy)."""
    from scipy.stats import norm

    return float(norm.sf(z))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order: controls the family-wise
    error of "at least one of these differences is real" at the level they are compared with."""
    p = [float(v) for v in pvalues]
    k = len(p)
    adjusted = [math.nan] * k
    running = 0.0
    for rank, i in enumerate(sorted(range(k), key=lambda j: p[j])):
        running = max(running, min(1.0, (k - rank) * p[i]))
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------------------- the rule across seeds


def majority(k: int) -> int:
    """Seeds a claim must hold on out of ``k``: more than half (2 of 3, 3 of 4, 1 of 1)."""
    return k // 2 + 1


@dataclass(frozen=True)
class SeedResult:
    """One seed's measurement of a claim: ``measured relation bound`` (per-seed bound: its own SEs)."""

    seed: int
    measured: float
    bound: float

    def holds(self, relation: Relation) -> bool:
        return compare(self.measured, relation, self.bound)


def _per_seed(results: Sequence[SeedResult], relation: Relation, fmt: str) -> str:
    return "; ".join(f"seed {r.seed}: {r.measured:{fmt}} {relation} {r.bound:{fmt}} "
                     f"({'holds' if r.holds(relation) else 'fails'})" for r in results)


def seed_rule_claim(
    *, name: str, statement: str, source: str, relation: Relation, results: Sequence[SeedResult],
    basis: str, control_results: Sequence[SeedResult] | None = None, control_setting: str = "",
    control_note: str = "", control_reason: str = "", fmt: str = ".4g", no_data_reason: str = "",
) -> Claim:
    """A prediction measured on each of k seeds, counted: ``measured`` = seeds on which
    ``measured_s relation bound_s`` holds, it must be ≥ :func:`majority` (k). The control, when
    given, is the same per-seed test in the control setting, counted the same way (so the
    framework's "same relation and bound" is the same rule). A seed whose number is not finite
    counts as not holding; no finite seed at all: no data."""
    k = len(results)
    finite = [r for r in results if math.isfinite(r.measured) and math.isfinite(r.bound)]
    measured = float(sum(r.holds(relation) for r in finite)) if finite else math.nan
    need = majority(k) if k else 1
    rule = f"holds on ≥ {need} of {k} seeds" if k > 1 else "one run"
    control = None
    if control_results is not None:
        cf = [r for r in control_results if math.isfinite(r.measured) and math.isfinite(r.bound)]
        control = Control(
            setting=control_setting,
            measured=float(sum(r.holds(relation) for r in cf)) if cf else math.nan,
            note=(control_note + " " if control_note else "") + "Seeds on which it holds there: "
                 + (_per_seed(control_results, relation, fmt) if control_results else "none") + ".",
        )
    return Claim(
        name=name, statement=statement, source=source, measured=measured, relation=">=", bound=float(need),
        basis=f"{basis} Per seed: {_per_seed(results, relation, fmt) if results else 'none'}. Measured: the "
              f"number of seeds on which it holds ({rule}).",
        kind="prediction", control=control, control_reason="" if control is not None else control_reason,
        seeds=k, rule=rule, no_data_reason=no_data_reason or ("no seed could be evaluated" if not finite else ""),
    )

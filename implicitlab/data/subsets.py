"""Subsets and labels of a data set: class-balanced subsets, and random labels (Zhang et al. 2017)
with the mask of the examples they replace. Labels go in as numpy or torch, integer, ``(N,)``."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["balanced_subset", "random_label_mask", "randomize_labels"]


def _labels_array(labels) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    out = np.asarray(labels)
    if out.ndim != 1 or not np.issubdtype(out.dtype, np.integer):
        raise ValueError(f"labels must be a 1-d integer array, got {out.dtype} {out.shape}")
    return out.astype(np.int64, copy=False)


def balanced_subset(labels, n: int, seed: int = 0, *, num_classes: int | None = None) -> np.ndarray:
    """Indices of a class-balanced random subset of size ``n``.

    Each of the K classes gets ``n // K`` examples; the ``n % K`` remaining ones go to the first
    classes, in a seeded random class order, that have an example to spare. Within class k the
    examples are the first ones of a seeded permutation of that class's examples in their order of
    appearance, so (same seed) the subset for n is contained in the subset for any larger n, and two
    copies of a data set whose classes list their examples in the same order (pickle vs image
    folder) give the same images.

    Args:
        labels: ``(N,)`` integer labels.
        n: subset size, 0 ≤ n ≤ reachable (every class must hold its share).
        seed: the random seed.
        num_classes: K; None → the number of distinct labels present (classes absent from
            ``labels`` are then ignored). With K given, labels must lie in 0..K−1.

    Returns:
        ``int64 (n,)`` indices into ``labels``, sorted ascending.

    Raises:
        ValueError: n negative, or n not reachable (a class with fewer examples than its share);
            the message gives the largest reachable n.
    """
    y = _labels_array(labels)
    if num_classes is None:
        classes = np.unique(y)
    else:
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}")
        classes = np.arange(num_classes)
    if n < 0:
        raise ValueError(f"n must be ≥ 0, got {n}")
    if n > 0 and len(classes) == 0:
        raise ValueError(f"no classes to draw {n} examples from")
    if n == 0:
        return np.empty(0, dtype=np.int64)
    k = len(classes)
    members = [np.flatnonzero(y == c) for c in classes]  # each class's examples, in order
    have = np.array([len(m) for m in members])
    base, extra = divmod(n, k)
    rng = np.random.default_rng(seed)
    order = rng.permutation(k)  # classes take the remainder in this order, skipping full ones
    eligible = order[have[order] > base]
    if have.min() < base or len(eligible) < extra:
        reachable = k * int(have.min()) + int((have > have.min()).sum())
        raise ValueError(
            f"a class-balanced subset of {n} needs {base}{'+1' * (extra > 0)} examples per class; "
            f"the smallest class has {int(have.min())} (largest reachable n: {reachable})"
        )
    share = np.full(k, base)
    share[eligible[:extra]] += 1
    picks = [m[rng.permutation(len(m))[:s]] for m, s in zip(members, share)]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def random_label_mask(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    """The examples ``randomize_labels`` redraws: a bool ``(n,)`` mask with exactly
    ``round(fraction · n)`` True entries, chosen by the same seeded draw."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    m = int(round(fraction * n))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:m]] = True
    return mask


def randomize_labels(labels, fraction: float, num_classes: int, seed: int = 0) -> np.ndarray:
    """Labels with a seeded fraction of them replaced by uniformly random ones.

    Exactly ``round(fraction · N)`` examples (``random_label_mask``) get a label drawn uniformly
    from all ``num_classes`` classes — Zhang et al. 2017's convention, so a random label may
    coincide with the true one and about ``fraction · (1 − 1/K)`` of the labels actually change.
    ``fraction = 1`` gives fully random labels. The input is not modified.

    Returns:
        ``int64 (N,)`` labels.
    """
    y = _labels_array(labels)
    if num_classes < 1:
        raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(y))[: int(round(fraction * len(y)))]  # same draw as random_label_mask
    out = y.copy()
    out[chosen] = rng.integers(num_classes, size=len(chosen))
    return out

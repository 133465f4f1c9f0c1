"""Class-balanced subsets and random labels (``implicitlab.data.subsets``)."""

import numpy as np
import pytest

from implicitlab.data import balanced_subset, random_label_mask, randomize_labels


def test_balanced_subset_sizes_reproducibility_nesting():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=2000)
    for n in (0, 1, 7, 10, 95, 500):
        idx = balanced_subset(labels, n, seed=1)
        assert idx.dtype == np.int64 and len(idx) == n == len(np.unique(idx))
        counts = np.bincount(labels[idx], minlength=10)
        assert counts.max() - counts.min() <= (1 if n % 10 else 0) and counts.min() == n // 10
        np.testing.assert_array_equal(idx, balanced_subset(labels, n, seed=1))
    assert not np.array_equal(balanced_subset(labels, 100, seed=1), balanced_subset(labels, 100, seed=2))
    prev = set()
    for n in range(0, 400, 13):  # nested in n for a fixed seed
        cur = set(balanced_subset(labels, n, seed=4).tolist())
        assert prev <= cur
        prev = cur


def test_balanced_subset_reachability():
    labels = np.array([0] * 3 + [1] * 5 + [2] * 5)
    assert np.bincount(labels[balanced_subset(labels, 11, seed=0)]).tolist() == [3, 4, 4]  # remainder skips class 0
    with pytest.raises(ValueError, match=r"largest reachable n: 11"):
        balanced_subset(labels, 12, seed=0)
    assert len(np.unique(labels[balanced_subset(labels, 3, seed=0, num_classes=4)])) == 3  # n < K: distinct classes
    with pytest.raises(ValueError, match="class-balanced subset of 4 needs 1 examples per class; the smallest class has 0"):
        balanced_subset(labels, 4, seed=0, num_classes=4)  # class 3 has no examples
    with pytest.raises(ValueError, match="n must be"):
        balanced_subset(labels, -1)


def test_randomize_labels_exact_fraction_and_seed():
    labels = np.random.default_rng(0).integers(0, 10, size=10_000)
    before = labels.copy()
    for p in (0.0, 0.1, 0.25, 1.0):
        out = randomize_labels(labels, p, 10, seed=3)
        mask = random_label_mask(len(labels), p, seed=3)
        assert out.dtype == np.int64 and mask.sum() == round(p * len(labels))
        np.testing.assert_array_equal(out[~mask], labels[~mask])  # only the chosen ones are redrawn
        np.testing.assert_array_equal(out, randomize_labels(labels, p, 10, seed=3))
    np.testing.assert_array_equal(labels, before)  # input untouched
    assert not np.array_equal(randomize_labels(labels, 0.5, 10, seed=1), randomize_labels(labels, 0.5, 10, seed=2))
    # uniform over all classes (Zhang et al.): a redrawn label keeps its value with probability 1/K
    out = randomize_labels(labels, 1.0, 10, seed=7)
    assert abs((out == labels).mean() - 0.1) < 0.01
    assert np.bincount(out, minlength=10).min() > 900
    with pytest.raises(ValueError, match="fraction"):
        randomize_labels(labels, 1.5, 10)
    with pytest.raises(ValueError, match=r"0..4"):
        randomize_labels(labels, 0.5, 5)

"""``DataError`` and the checks the loaders share (``implicitlab.data.checks``)."""

import numpy as np
import pytest

from implicitlab.data import DataError
from implicitlab.data.checks import SPLITS, as_labels, check_split


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_check_split():
    for split in SPLITS:
        check_split(split)
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test'\), got 'val'"):
        check_split("val")


def test_as_labels_checks_count_range_and_type():
    out = as_labels([3, 0, 9], "f", 3, 10)
    assert out.dtype == np.int64 and out.tolist() == [3, 0, 9]
    assert as_labels(np.zeros((0,), np.uint8), "f", 0, 10).shape == (0,)
    with pytest.raises(DataError, match=r"f: expected 4 labels \(one per image\), got 3"):
        as_labels([3, 0, 9], "f", 4, 10)
    with pytest.raises(DataError, match=r"f: expected labels in 0..9, got 0..10"):
        as_labels([0, 10], "f", 2, 10)
    with pytest.raises(DataError, match=r"f: expected integer labels, got list"):
        as_labels(["a", "b"], "f", 2, 10)

"""scikit-learn's digits as a binary set (``implicitlab.data.tabular``)."""

import numpy as np

from implicitlab.data import digits_binary
from implicitlab.references.svm import svm_max_margin


def test_digits_zero_vs_one_is_standardized_and_separable():
    X, y = digits_binary(0, 1)
    assert X.shape == (360, 52) and y.shape == (360,) and X.dtype == y.dtype == np.float64
    assert set(np.unique(y)) == {-1.0, 1.0}
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(X.std(axis=0), 1, atol=1e-12)
    assert svm_max_margin(X, y).margin > 0  # linearly separable through the origin, as documented

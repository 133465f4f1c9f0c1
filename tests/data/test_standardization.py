"""Per-channel standardisation (``implicitlab.data.standardization``)."""

import numpy as np
import pytest
import torch

from implicitlab.data import standardize


def test_standardize_train_stats_applied_to_test():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(50, 32, 32, 3), dtype=np.uint8)
    test = rng.integers(0, 200, size=(20, 32, 32, 3), dtype=np.uint8)
    x, mean, std = standardize(train)
    assert x.shape == (50, 3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
    ref = train.astype(np.float64) / 255
    np.testing.assert_allclose(mean.numpy(), ref.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), ref.std(axis=(0, 1, 2)), rtol=1e-6)
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-5, rtol=0)
    xt = standardize(test, mean, std, dtype=torch.float64).images
    assert xt.dtype == torch.float64
    expected = (test.astype(np.float64) / 255 - ref.mean(axis=(0, 1, 2))) / ref.std(axis=(0, 1, 2))
    np.testing.assert_allclose(xt.numpy(), expected.transpose(0, 3, 1, 2), rtol=1e-12, atol=1e-12)
    # float input on the [0, 1] scale gives the same
    xf = standardize(torch.from_numpy(ref), dtype=torch.float64).images
    np.testing.assert_allclose(xf.numpy(), standardize(train, dtype=torch.float64).images.numpy(), atol=1e-12)


def test_standardize_grayscale_and_errors():
    mn = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    s = standardize(mn)
    assert s.images.shape == (6, 1, 28, 28) and s.mean.shape == (1,)
    with pytest.raises(ValueError, match="std must be positive"):
        standardize(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="one value per channel"):
        standardize(mn, [0.1, 0.2], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        standardize(np.zeros((4, 4), np.uint8))

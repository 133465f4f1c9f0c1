"""Data tests: the fake data builders (``fake_data``) importable here, and the shared fixtures."""

import sys
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from fake_data import fake_cifar  # noqa: E402


@pytest.fixture
def data():
    """A fake CIFAR-10, seed 0: {"train": (images, labels), "test": …} in official order."""
    return fake_cifar()


@pytest.fixture
def cache(tmp_path):
    """A cache folder of this test's own (never the user's)."""
    return tmp_path / "cache"

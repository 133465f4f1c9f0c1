"""Test setup: one torch thread (2-core machines), a headless matplotlib, float64 tolerances."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# One tolerance table keyed by dtype; loosen inline only, with the reason in a comment.
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.fixture
def tol():
    return TOL

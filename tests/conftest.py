"""Test setup: one torch thread (2-core machines), a headless matplotlib, float64 tolerances."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# One tolerance table keyed by dtype; loosen inline only, with the reason in a comment.
# TOL[dtype] is the relative tolerance between two computations of one quantity that differ only
# in rounding (another summation order, a closed form vs autograd); pair it with an absolute
# tolerance of TOL[dtype] × the quantity's scale for entries near zero. Comparisons that are exact
# up to one rounding may state a tighter bound inline.
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.fixture
def tol() -> dict[torch.dtype, float]:
    """The tolerance table: ``tol[torch.float64]``. (A fixture: with ``--import-mode=importlib``
    test modules cannot import from conftest.)"""
    return TOL

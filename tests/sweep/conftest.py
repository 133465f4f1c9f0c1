"""Sweep tests: make the helper experiments importable here and in spawned / Ray workers.

``sweep_helpers`` defines test experiments; a worker process finds their functions by module name,
so this folder goes on ``sys.path`` (spawned pool workers inherit it; a local Ray gets it as
PYTHONPATH). The fixture below adds them to the experiment list for the tests of this folder
(the package's list itself is fixed: :data:`implicitlab.experiments.EXPERIMENTS`).
"""

import sys
from pathlib import Path

import pytest

import implicitlab.experiments

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import sweep_helpers  # noqa: E402


@pytest.fixture(autouse=True)
def test_experiments(monkeypatch):
    monkeypatch.setattr(implicitlab.experiments, "EXPERIMENTS",
                        implicitlab.experiments.EXPERIMENTS + sweep_helpers.TEST_EXPERIMENTS)

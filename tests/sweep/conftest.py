"""Sweep tests: make the helper experiments importable here and in spawned / Ray workers.

``sweep_helpers`` registers test experiments; a worker process finds it by module name, so this
folder goes on ``sys.path`` (spawned pool workers inherit it; a local Ray gets it as PYTHONPATH).
"""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import sweep_helpers  # noqa: E402,F401  (registers the test experiments)

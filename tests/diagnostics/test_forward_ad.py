"""Forward-mode AD setup: importing implicitlab touches no private torch hook; the decompositions
load quietly where forward mode is used (a fresh interpreter: this one has loaded them already)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys, warnings
import implicitlab
assert "torch._decomp.decompositions_for_jvp" not in sys.modules, "loaded at import"
warnings.simplefilter("error")  # the torch.jit.script deprecation would be an error here
from implicitlab.diagnostics.forward_ad import load_jvp_decompositions
load_jvp_decompositions()
load_jvp_decompositions()  # idempotent
assert "torch._decomp.decompositions_for_jvp" in sys.modules
import torch
torch.func.jvp(torch.sin, (torch.ones(2),), (torch.ones(2),))
"""


def test_decompositions_load_lazily_and_quietly():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

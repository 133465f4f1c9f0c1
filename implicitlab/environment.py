"""The environment a run was made in: versions, device, git commit and dirty flag, code fingerprint."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from .version import __version__


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def code_fingerprint(package: Path | None = None) -> str:
    """SHA-256 (first 16 hex digits) of the package's sources — Python and the C kernel's ``.c``/``.h``
    (paths and bytes): changes with any code change, committed or not, so a stored run can be matched
    to the code that made it."""
    import hashlib

    package = Path(__file__).resolve().parent if package is None else Path(package)
    digest = hashlib.sha256()
    sources = [p for pattern in ("*.py", "*.c", "*.h") for p in package.rglob(pattern)]
    for path in sorted(sources):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def environment(device: torch.device | str = "cpu") -> dict:
    """Package, torch, numpy and Python versions, the device, and the git commit (+ dirty flag)."""


    device = torch.device(device)
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    env = {
        "implicitlab": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "git_commit": commit,
        "git_dirty": (bool(status) if status is not None else None),
        "code_fingerprint": code_fingerprint(),
    }
    if device.type == "cuda":
        env["cuda_device"] = torch.cuda.get_device_name(device)
    return env

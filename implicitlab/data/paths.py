"""Where the data files are and where decoded arrays are cached.

Nothing reads the data root from the environment: it arrives as an argument (the CLI's
``--data-dir`` reaches the loaders through the configs' ``data_dir`` field). The cache folder may be
set by ``$IMPLICITLAB_CACHE`` or ``$XDG_CACHE_HOME``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "resolve_cache_dir", "resolve_data_root"]

CACHE_ENV = "IMPLICITLAB_CACHE"


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else a default.

    The default is ``../shared/data`` relative to the current working directory when that folder
    exists (the layout of this project's machines), else ``./data``. The path is returned as given
    (not resolved, not checked); the loaders check it and name it in their errors.
    """
    if root is not None:
        return Path(root).expanduser()
    shared = Path("..") / "shared" / "data"
    return shared if shared.is_dir() else Path("data")


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where decoded arrays are cached: ``cache_dir`` if given, else ``$IMPLICITLAB_CACHE``, else
    ``$XDG_CACHE_HOME/implicitlab``, else ``~/.cache/implicitlab``.

    The default lies outside the data folder on purpose: data folders are often shared or
    read-only. The folder is created on first write; if it cannot be written, loading still works,
    uncached.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "implicitlab"

"""The restricted unpickler for CIFAR-10's python-pickle batches.

It resolves only the few globals CIFAR batches hold, so a crafted file cannot run code: any other
global raises ``DataError`` before it is looked up.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from .checks import DataError

__all__ = ["CifarUnpickler", "unpickle_batch"]


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles of protocol < 3 use it for bytes, latin-1 only."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode is allowed for latin-1 text only, got {encoding!r}")
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], object]:
    # Taken from the objects numpy itself pickles with, so no numpy.core shim (deprecated in
    # numpy 2) is ever imported, and numpy 1.x and 2.x module names both resolve.
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    scalar = np.int64(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


_BUILTINS = {"bytes": bytes, "bytearray": bytearray, "dict": dict, "list": list, "str": str, "int": int}
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    **_numpy_globals(),
    **{(mod, name): obj for mod in ("builtins", "__builtin__") for name, obj in _BUILTINS.items()},
    ("_codecs", "encode"): _latin1_encode,
}


class CifarUnpickler(pickle.Unpickler):
    """Resolves only what CIFAR batches hold: numpy arrays, dtypes and scalars; dict, list, bytes,
    str, int (and latin-1 ``_codecs.encode``, which protocol-2 pickles written by Python 3 use for
    bytes). Any other global — ``os.system``, ``subprocess.Popen``, ``builtins.eval`` — raises
    ``DataError`` before it is looked up, so nothing named by the file is imported or called.
    Persistent ids are refused by ``pickle.Unpickler`` itself.
    """

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._path}: refusing to unpickle {module}.{name}; a CIFAR-10 batch holds only "
                "numpy arrays, dicts, lists, bytes, str and int"
            ) from None


def unpickle_batch(path: Path) -> dict:
    """The dict held by the CIFAR-10 pickle batch at ``path``, read with ``CifarUnpickler``.

    Raises:
        DataError: an unreadable, truncated or garbled file, a refused global, or not a dict.
    """
    try:
        with open(path, "rb") as f:
            obj = CifarUnpickler(f, path).load()
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"{path}: cannot read the CIFAR-10 batch ({e.strerror or e})") from None
    except Exception as e:  # truncated or garbled: UnpicklingError, EOFError, ValueError, …
        raise DataError(f"{path}: not a readable CIFAR-10 python pickle batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a CIFAR-10 batch (a dict with data and labels), got {type(obj).__name__}")
    return obj

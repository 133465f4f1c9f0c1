"""Image data sets from local files: CIFAR-10 (pickle batches, image folder, zip) and MNIST (IDX).

Nothing here downloads. Where the files are:

- ``resolve_data_root(root)`` — the explicit ``root`` (the CLI's ``--data-dir``), else the
  environment variable ``IMPLICITLAB_DATA``, else ``../shared/data`` relative to the current
  working directory if that folder exists, else ``./data``.
- ``load_cifar10(root, split)`` reads, in this order of preference, what it finds at or under the
  root: the official python-pickle batches (``cifar-10-batches-py/data_batch_1 … 5``,
  ``test_batch``), an image-folder layout ``train/<class>/NNNN.jpg`` / ``test/<class>/…`` as a
  directory, or the same layout inside a zip (such as ``cifar10-jpeg-q75.zip``).
- ``load_mnist(root, split)`` reads the four official IDX files, gzipped or not.

CIFAR-10 is decoded once and cached as ``.npz`` (see ``resolve_cache_dir``); the cache is keyed by
the source files' paths, sizes and modification times and verified against a SHA-256 of its arrays
stored alongside, so an edited source or a corrupt cache is rebuilt, never trusted.

The pickle batches are read with a restricted unpickler (``_CifarUnpickler``) that resolves only
the few globals CIFAR batches hold, so a crafted file cannot run code. Every problem with a file
raises ``DataError`` (a ``ValueError``) with one line naming the path and what was expected.

Arrays: images ``uint8 (N, H, W, C)`` (CIFAR ``(N, 32, 32, 3)``, MNIST ``(N, 28, 28)``), labels
``int64 (N,)``. ``standardize`` turns them into float tensors ``(N, C, H, W)`` for torch.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import os
import pickle
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from zlib import error as zlib_error

import numpy as np
import torch

__all__ = [
    "CIFAR10_CLASSES",
    "DataError",
    "Standardized",
    "balanced_subset",
    "load_cifar10",
    "load_mnist",
    "random_label_mask",
    "randomize_labels",
    "resolve_cache_dir",
    "resolve_data_root",
    "standardize",
]

# CIFAR-10's label order 0–9 (batches.meta); the image-folder layout names its class folders so.
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
DATA_ENV = "IMPLICITLAB_DATA"
CACHE_ENV = "IMPLICITLAB_CACHE"
SPLITS = ("train", "test")
_CACHE_VERSION = 1  # bump when the decoded arrays or the cache layout change
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_CIFAR_SIDE = 32
_CIFAR_ROW = 3 * _CIFAR_SIDE * _CIFAR_SIDE  # 3072 bytes per image in a pickle batch: R, G, B planes


class DataError(ValueError):
    """A missing, truncated or malformed data file; the message names the path and what was expected."""


# --------------------------------------------------------------------------- where the files are


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$IMPLICITLAB_DATA``, else a default.

    The default is ``../shared/data`` relative to the current working directory when that folder
    exists (the layout of this project's machines), else ``./data``. The path is returned as given
    (not resolved, not checked); the loaders check it and name it in their errors.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
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


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


# --------------------------------------------------------------------------- restricted unpickler


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


class _CifarUnpickler(pickle.Unpickler):
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


def _unpickle_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, path).load()
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"{path}: cannot read the CIFAR-10 batch ({e.strerror or e})") from None
    except Exception as e:  # truncated or garbled: UnpicklingError, EOFError, ValueError, …
        raise DataError(f"{path}: not a readable CIFAR-10 python pickle batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a CIFAR-10 batch (a dict with data and labels), got {type(obj).__name__}")
    return obj


def _read_pickle_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle_batch(path)
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: expected keys 'data' and 'labels' in the CIFAR-10 batch, got {sorted(map(str, batch))}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_ROW:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: expected 'data' as uint8 (N, {_CIFAR_ROW}), got {got}")
    labels = _as_labels(labels, path, len(data), len(CIFAR10_CLASSES))
    images = data.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    return np.ascontiguousarray(images), labels


def _as_labels(labels, path, n: int, num_classes: int) -> np.ndarray:
    try:
        out = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: expected integer labels, got {type(labels).__name__}") from None
    if len(out) != n:
        raise DataError(f"{path}: expected {n} labels (one per image), got {len(out)}")
    if n and (out.min() < 0 or out.max() >= num_classes):
        raise DataError(f"{path}: expected labels in 0..{num_classes - 1}, got {out.min()}..{out.max()}")
    return out


# --------------------------------------------------------------------------- CIFAR-10 sources


@dataclass(frozen=True)
class _Source:
    kind: str  # "pickle" | "folder" | "zip"
    path: Path  # the batches directory, the folder holding train/ and test/, or the zip file


def _is_pickle_dir(d: Path) -> bool:
    return (d / "data_batch_1").is_file() or (d / "test_batch").is_file()


def _is_image_folder(d: Path) -> bool:
    return any((d / s / CIFAR10_CLASSES[0]).is_dir() for s in SPLITS)


def _find_cifar_source(root: Path) -> _Source:
    if root.is_file():
        if zipfile.is_zipfile(root):
            return _Source("zip", root)
        raise DataError(f"{root}: expected a CIFAR-10 zip with train/<class>/ and test/<class>/ images, or a folder")
    if not root.is_dir():
        raise DataError(f"{root}: no such file or folder; expected the CIFAR-10 data (pass --data-dir or set ${DATA_ENV})")
    for d in (root, root / "cifar-10-batches-py"):
        if _is_pickle_dir(d):
            return _Source("pickle", d)
    for d in (root, root / "cifar10", root / "cifar10-jpeg-q75", root / "cifar-10"):
        if _is_image_folder(d):
            return _Source("folder", d)
    for name in ("cifar10-jpeg-q75.zip", "cifar10.zip", "cifar-10.zip"):
        if (root / name).is_file():
            return _Source("zip", root / name)
    raise DataError(
        f"{root}: no CIFAR-10 found; expected cifar-10-batches-py/ (data_batch_1…5, test_batch), "
        "an image folder train/<class>/ test/<class>/, or cifar10-jpeg-q75.zip"
    )


def _pickle_files(d: Path, split: str) -> list[Path]:
    if split == "test":
        files = [d / "test_batch"]
    else:
        numbered = {int(m.group(1)): p for p in d.iterdir() if (m := re.fullmatch(r"data_batch_(\d+)", p.name))}
        files = [numbered[k] for k in sorted(numbered)]
        if sorted(numbered) != list(range(1, len(numbered) + 1)):
            raise DataError(f"{d}: expected data_batch_1 … data_batch_N without gaps, found {sorted(numbered)}")
    for f in files:
        if not f.is_file():
            raise DataError(f"{f}: missing; expected the CIFAR-10 {split} batch")
    return files


def _read_pickles(d: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_pickle_batch(f) for f in _pickle_files(d, split)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _natural_key(name: str) -> tuple:
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable zip ({e})") from None


def _folder_entries(source: _Source, split: str, z: zipfile.ZipFile | None = None) -> dict[str, list[str]]:
    """class → its image names for ``split`` (paths in the folder or names in the zip), sorted.
    ``z``: the source zip, already open (its central directory is read once)."""
    per_class: dict[str, list[str]] = {c: [] for c in CIFAR10_CLASSES}
    if source.kind == "folder":
        base = source.path / split
        for c in CIFAR10_CLASSES:
            if (base / c).is_dir():
                per_class[c] = [str(p) for p in (base / c).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES]
    else:
        if z is None:
            with _open_zip(source.path) as opened:
                names = opened.namelist()
        else:
            names = z.namelist()
        for name in names:
            parts = name.split("/")
            # any leading folder is allowed: [prefix/…]split/class/file
            if len(parts) >= 3 and parts[-3] == split and parts[-2] in per_class and not parts[0].startswith("__MACOSX"):
                if not parts[-1].startswith(".") and parts[-1].lower().endswith(_IMAGE_SUFFIXES):
                    per_class[parts[-2]].append(name)
    where = source.path / split if source.kind == "folder" else f"{source.path}:{split}/"
    missing = [c for c, files in per_class.items() if not files]
    if missing:
        raise DataError(f"{where}: expected images for every CIFAR-10 class, none for {', '.join(missing)}")
    return {c: sorted(files, key=_natural_key) for c, files in per_class.items()}


def _decode_image(raw: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.size != (_CIFAR_SIDE, _CIFAR_SIDE):
                raise DataError(f"{where}: expected a 32×32 image, got {img.size[0]}×{img.size[1]}")
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{where}: not a readable image ({e})") from None


def _read_image_folder(source: _Source, split: str, per_class_limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode an image-folder split; images grouped by class in label order, each class sorted by
    file name (numeric stems numerically). ``per_class_limit`` keeps the first files of each class."""
    z = _open_zip(source.path) if source.kind == "zip" else None
    try:
        entries = _folder_entries(source, split, z)
        if per_class_limit is not None:
            entries = {c: files[:per_class_limit] for c, files in entries.items()}
        n = sum(len(f) for f in entries.values())
        images = np.empty((n, _CIFAR_SIDE, _CIFAR_SIDE, 3), dtype=np.uint8)  # (N, 32, 32, 3)
        labels = np.empty(n, dtype=np.int64)
        i = 0
        for label, c in enumerate(CIFAR10_CLASSES):
            for name in entries[c]:
                if z is not None:
                    where = f"{source.path}:{name}"
                    try:
                        raw = z.read(name)
                    except (OSError, zipfile.BadZipFile, EOFError) as e:
                        raise DataError(f"{where}: cannot read from the zip ({e})") from None
                else:
                    where = name
                    raw = Path(name).read_bytes()
                images[i] = _decode_image(raw, where)
                labels[i] = label
                i += 1
    finally:
        if z is not None:
            z.close()
    return images, labels


def _decode_cifar(source: _Source, split: str) -> tuple[np.ndarray, np.ndarray]:
    if source.kind == "pickle":
        return _read_pickles(source.path, split)
    return _read_image_folder(source, split)


def _source_files(source: _Source, split: str) -> list[Path]:
    if source.kind == "pickle":
        return _pickle_files(source.path, split)
    if source.kind == "zip":
        return [source.path]
    return [Path(p) for files in _folder_entries(source, split).values() for p in files]


def _source_key(source: _Source, split: str) -> str:
    """SHA-256 of what identifies a decoded split: format, split, each file's path, size and mtime."""
    h = hashlib.sha256(f"cifar10 v{_CACHE_VERSION} {source.kind} {split}\n".encode())
    for f in _source_files(source, split):
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- the cache


def _arrays_checksum(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (images, labels):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _cache_paths(cache_dir: Path, split: str, key: str) -> tuple[Path, Path]:
    stem = f"cifar10-{split}-{key[:16]}"
    return cache_dir / f"{stem}.npz", cache_dir / f"{stem}.json"


def _read_cache(npz: Path, meta: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays if present, for this key, and matching their stored checksum; else None."""
    try:
        info = json.loads(meta.read_text())
        if info.get("key") != key:
            return None
        with open(npz, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            images, labels = f["images"], f["labels"]
    except Exception:  # absent, truncated, garbled: any failure is a miss, and the cache is rebuilt
        return None
    if _arrays_checksum(images, labels) != info.get("sha256"):
        return None
    return images, labels


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_cache(npz: Path, meta: Path, key: str, source: _Source, images: np.ndarray, labels: np.ndarray) -> None:
    info = {
        "key": key,
        "sha256": _arrays_checksum(images, labels),
        "source": str(source.path),
        "format": source.kind,
        "images": list(images.shape),
        "version": _CACHE_VERSION,
    }
    try:
        npz.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(npz, lambda f: np.savez(f, images=images, labels=labels))
        _write_atomic(meta, lambda f: f.write(json.dumps(info, indent=1).encode()))
    except OSError:
        pass  # an unwritable cache folder costs a decode next time, nothing else


# --------------------------------------------------------------------------- loaders


def load_cifar10(
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 ``split`` ("train": 50,000 images, "test": 10,000) from local files.

    Args:
        root: the data root (see ``resolve_data_root``; None → ``$IMPLICITLAB_DATA`` → default), or
            directly a ``cifar-10-batches-py`` folder, an image folder, or a zip. Looked for, in
            order: pickle batches at ``root`` or ``root/cifar-10-batches-py``; an image folder at
            ``root``, ``root/cifar10`` or ``root/cifar10-jpeg-q75``; ``root/cifar10-jpeg-q75.zip``.
        split: "train" or "test".
        cache_dir: where the decoded arrays are cached (see ``resolve_cache_dir``).
        cache: False reads the source and neither reads nor writes the cache.

    Returns:
        images ``uint8 (N, 32, 32, 3)`` (height, width, RGB) and labels ``int64 (N,)`` in 0..9
        (``CIFAR10_CLASSES`` order). Pickle batches keep the official order (train: batches 1…5
        concatenated; fewer batches are read if fewer exist). An image folder or zip yields the
        images grouped by class in label order, each class's files sorted by name (numeric stems
        numerically) — for ``cifar10-jpeg-q75.zip`` the k-th image of a class is the k-th image of
        that class in the official order, so ``balanced_subset`` picks the same images from both.

    Raises:
        DataError: a missing, unreadable or malformed source, naming the path and what was expected.
    """
    _check_split(split)
    source = _find_cifar_source(resolve_data_root(root))
    if not cache:
        return _decode_cifar(source, split)
    key = _source_key(source, split)
    npz, meta = _cache_paths(resolve_cache_dir(cache_dir), split, key)
    hit = _read_cache(npz, meta, key)
    if hit is not None:
        return hit
    images, labels = _decode_cifar(source, split)
    _write_cache(npz, meta, key, source, images, labels)
    return images, labels


_MNIST_FILES = {"train": ("train-images", "train-labels"), "test": ("t10k-images", "t10k-labels")}
_IDX_MAGIC = {3: 2051, 1: 2049}  # ndim → magic: 0x00000803 images, 0x00000801 labels (uint8)


def _find_mnist_file(root: Path, prefix: str, ndim: int) -> Path:
    names = [f"{prefix}-idx{ndim}-ubyte", f"{prefix}.idx{ndim}-ubyte"]
    for d in (root / "mnist", root / "MNIST" / "raw", root):
        for name in names:
            for candidate in (d / name, d / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    raise DataError(f"{root}: no MNIST file {names[0]}[.gz] here or under mnist/; expected the official IDX files")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib_error) as e:
        what = "a gzipped IDX file" if path.suffix == ".gz" else "an IDX file"
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e}); expected {what}") from None
    header = 4 + 4 * ndim
    magic = _IDX_MAGIC[ndim]
    if len(raw) >= 4 and (got_magic := int.from_bytes(raw[:4], "big")) != magic:
        raise DataError(f"{path}: expected IDX magic number {magic} (uint8, {ndim}-d), got {got_magic}")
    if len(raw) < header:
        raise DataError(f"{path}: truncated; expected a {header}-byte IDX header, got {len(raw)} bytes")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path}: expected {expected} data bytes for shape {dims} after the header, got {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(root: str | os.PathLike | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ("train": 60,000, "test": 10,000) from the official IDX files.

    Args:
        root: the data root (see ``resolve_data_root``); the files ``train-images-idx3-ubyte``,
            ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``
            (each optionally ``.gz``) are looked for in ``root/mnist``, ``root/MNIST/raw`` and ``root``.
        split: "train" or "test".

    Returns:
        images ``uint8 (N, 28, 28)`` and labels ``int64 (N,)`` in 0..9. Not cached: decompressing
        and checking the files takes well under a second.

    Raises:
        DataError: a missing file, a wrong magic number (2051 images, 2049 labels), a length that
        does not match the header's dimensions (a truncated file), or image/label counts that differ.
    """
    _check_split(split)
    root = resolve_data_root(root)
    img_prefix, lab_prefix = _MNIST_FILES[split]
    img_path, lab_path = _find_mnist_file(root, img_prefix, 3), _find_mnist_file(root, lab_prefix, 1)
    images = _read_idx(img_path, 3)
    labels = _read_idx(lab_path, 1)
    if len(images) != len(labels):
        raise DataError(f"{lab_path}: expected {len(images)} labels to match {img_path.name}, got {len(labels)}")
    return images.copy(), _as_labels(labels, lab_path, len(images), 10)


# --------------------------------------------------------------------------- subsets and labels


def _labels_array(labels) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    out = np.asarray(labels)
    if out.ndim != 1 or not np.issubdtype(out.dtype, np.integer):
        raise ValueError(f"labels must be a 1-d integer array, got {out.dtype} {out.shape}")
    return out.astype(np.int64, copy=False)


def balanced_subset(labels, n: int, seed: int = 0, *, num_classes: int | None = None) -> np.ndarray:
    """Indices of a class-balanced random subset of size ``n``.

    Each of the K classes gets ``n // K`` examples; the ``n % K`` remaining ones go to the first
    classes, in a seeded random class order, that have an example to spare. Within class k the examples are the first ones of a
    seeded permutation of that class's examples in their order of appearance, so (same seed) the
    subset for n is contained in the subset for any larger n, and two copies of a data set whose
    classes list their examples in the same order (pickle vs image folder) give the same images.

    Args:
        labels: ``(N,)`` integer labels.
        n: subset size, 0 ≤ n ≤ reachable (every class must hold its share).
        seed: the random seed.
        num_classes: K; None → the number of distinct labels present (classes absent from
            ``labels`` are then ignored). With K given, labels must lie in 0..K−1.

    Returns:
        ``int64 (n,)`` indices into ``labels``, sorted ascending.

    Raises:
        ValueError: n negative, or n not reachable (a class with fewer examples than its share);
            the message gives the largest reachable n.
    """
    y = _labels_array(labels)
    if num_classes is None:
        classes = np.unique(y)
    else:
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}")
        classes = np.arange(num_classes)
    if n < 0:
        raise ValueError(f"n must be ≥ 0, got {n}")
    if n > 0 and len(classes) == 0:
        raise ValueError(f"no classes to draw {n} examples from")
    if n == 0:
        return np.empty(0, dtype=np.int64)
    k = len(classes)
    members = [np.flatnonzero(y == c) for c in classes]  # each class's examples, in order
    have = np.array([len(m) for m in members])
    base, extra = divmod(n, k)
    rng = np.random.default_rng(seed)
    order = rng.permutation(k)  # classes take the remainder in this order, skipping full ones
    eligible = order[have[order] > base]
    if have.min() < base or len(eligible) < extra:
        reachable = k * int(have.min()) + int((have > have.min()).sum())
        raise ValueError(
            f"a class-balanced subset of {n} needs {base}{'+1' * (extra > 0)} examples per class; "
            f"the smallest class has {int(have.min())} (largest reachable n: {reachable})"
        )
    share = np.full(k, base)
    share[eligible[:extra]] += 1
    picks = [m[rng.permutation(len(m))[:s]] for m, s in zip(members, share)]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def random_label_mask(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    """The examples ``randomize_labels`` redraws: a bool ``(n,)`` mask with exactly
    ``round(fraction · n)`` True entries, chosen by the same seeded draw."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    m = int(round(fraction * n))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:m]] = True
    return mask


def randomize_labels(labels, fraction: float, num_classes: int, seed: int = 0) -> np.ndarray:
    """Labels with a seeded fraction of them replaced by uniformly random ones.

    Exactly ``round(fraction · N)`` examples (``random_label_mask``) get a label drawn uniformly
    from all ``num_classes`` classes — Zhang et al. 2017's convention, so a random label may
    coincide with the true one and about ``fraction · (1 − 1/K)`` of the labels actually change.
    ``fraction = 1`` gives fully random labels. The input is not modified.

    Returns:
        ``int64 (N,)`` labels.
    """
    y = _labels_array(labels)
    if num_classes < 1:
        raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(y))[: int(round(fraction * len(y)))]  # same draw as random_label_mask
    out = y.copy()
    out[chosen] = rng.integers(num_classes, size=len(chosen))
    return out


# --------------------------------------------------------------------------- standardisation


def _per_channel(v) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    return torch.as_tensor(np.asarray(v, dtype=np.float64)).reshape(-1)


class Standardized(NamedTuple):
    """``standardize``'s result: images ``(N, C, H, W)``, and the per-channel ``mean``, ``std`` ``(C,)``
    on the [0, 1] pixel scale (float64, CPU, whatever the images' dtype) to apply to another split."""

    images: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def _channel_stats_uint8(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and population std on the [0, 1] scale, from 256-bin histograms
    (integer sums: no float64 copy of the set, no rounding before the final division)."""
    c = images.shape[-1]
    flat = np.ascontiguousarray(images).reshape(-1)
    values = np.arange(256, dtype=np.int64)
    count = flat.size // c
    mean, var = [], []
    for k in range(c):
        hist = np.bincount(flat[k::c], minlength=256).astype(np.int64)
        s1, s2 = int(hist @ values), int(hist @ (values * values))
        mean.append(s1 / count / 255.0)
        var.append((s2 * count - s1 * s1) / count**2 / 255.0**2)  # exact integer numerator
    return np.array(mean), np.sqrt(np.array(var))


def standardize(
    images,
    mean=None,
    std=None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Standardized:
    """Per-channel standardisation to a float tensor ``(N, C, H, W)``.

    Pixels are first scaled to [0, 1] (uint8 / 255; float input is taken as already on that
    scale), then ``(x − mean_c) / std_c``. With ``mean``/``std`` None they are computed from
    ``images`` (population std, exactly, in float64): compute them on the training split and pass
    them for the test split.

    Args:
        images: ``(N, H, W, C)`` (CIFAR) or ``(N, H, W)`` (MNIST, one channel), uint8 or float,
            numpy or torch.
        mean, std: ``(C,)`` per-channel statistics on the [0, 1] scale, or None.
        dtype: output dtype. device: output device (None: where the input is; numpy → CPU).

    Returns:
        ``Standardized(images, mean, std)``: images ``(N, C, H, W)`` in ``dtype`` on ``device``
        (contiguous); mean and std ``(C,)`` float64 on the CPU, so passing them on loses nothing.
    """
    if isinstance(images, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(images))
    elif isinstance(images, torch.Tensor):
        x = images
    else:
        raise TypeError(f"images must be a numpy array or a torch tensor, got {type(images).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(-1)  # (N, H, W, 1)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C) or (N, H, W), got shape {tuple(x.shape)}")
    is_uint8 = x.dtype == torch.uint8
    if not is_uint8 and not x.is_floating_point():
        raise ValueError(f"images must be uint8 or floating point, got {x.dtype}")
    device = x.device if device is None else torch.device(device)
    if mean is None or std is None:
        if is_uint8:
            m, s = _channel_stats_uint8(x.cpu().numpy())
        else:
            xd = x.to(torch.float64)
            m, s = xd.mean(dim=(0, 1, 2)).cpu().numpy(), xd.std(dim=(0, 1, 2), correction=0).cpu().numpy()
        mean = m if mean is None else mean
        std = s if std is None else std
    mean64, std64 = _per_channel(mean), _per_channel(std)
    c = x.shape[-1]
    if mean64.numel() != c or std64.numel() != c:
        raise ValueError(f"mean and std must have one value per channel ({c}), got {mean64.numel()} and {std64.numel()}")
    if not bool((std64 > 0).all()):
        raise ValueError(f"std must be positive per channel, got {std64.tolist()} (a constant channel?)")
    # out = x · a − b with a = 1 / (255·std) (uint8) or 1 / std, and b = mean / std
    scale = (1.0 / ((255.0 if is_uint8 else 1.0) * std64)).to(device=device, dtype=dtype).view(1, c, 1, 1)
    shift = (mean64 / std64).to(device=device, dtype=dtype).view(1, c, 1, 1)
    out = x.to(device=device).permute(0, 3, 1, 2)  # (N, C, H, W), moved before the cast (uint8 is 4× smaller)
    out = out.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)
    out.mul_(scale).sub_(shift)
    return Standardized(out, mean64, std64)

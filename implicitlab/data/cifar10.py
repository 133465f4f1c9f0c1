"""CIFAR-10 from local files: the python-pickle batches, an image folder, or the same folder in a zip.

Nothing here downloads. ``load_cifar10(root, split)`` reads, in this order of preference, what it
finds at or under the root (``paths.resolve_data_root``): the official python-pickle batches
(``cifar-10-batches-py/data_batch_1 … 5``, ``test_batch``, read with the restricted unpickler of
``unpickle.py``), an image-folder layout ``train/<class>/NNNN.jpg`` / ``test/<class>/…`` as a
directory, or the same layout inside a zip (such as ``cifar10-jpeg-q75.zip``). The decoded arrays
are cached (``cache.py``). Every problem with a file raises ``DataError`` naming the path and what
was expected.

Arrays: images ``uint8 (N, 32, 32, 3)`` (height, width, RGB), labels ``int64 (N,)`` in 0..9.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import cache_key, cache_paths, read_cache, write_cache
from .checks import SPLITS, DataError, as_labels, check_split
from .paths import resolve_cache_dir, resolve_data_root
from .unpickle import unpickle_batch

__all__ = ["CIFAR10_CLASSES", "load_cifar10"]

# CIFAR-10's label order 0–9 (batches.meta); the image-folder layout names its class folders so.
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_CIFAR_SIDE = 32
_CIFAR_ROW = 3 * _CIFAR_SIDE * _CIFAR_SIDE  # 3072 bytes per image in a pickle batch: R, G, B planes


# --------------------------------------------------------------------------- pickle batches


def _read_pickle_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = unpickle_batch(path)
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: expected keys 'data' and 'labels' in the CIFAR-10 batch, got {sorted(map(str, batch))}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_ROW:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: expected 'data' as uint8 (N, {_CIFAR_ROW}), got {got}")
    labels = as_labels(labels, path, len(data), len(CIFAR10_CLASSES))
    images = data.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    return np.ascontiguousarray(images), labels


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


# --------------------------------------------------------------------------- which source


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
        raise DataError(f"{root}: no such file or folder; expected the CIFAR-10 data (pass --data-dir or set $IMPLICITLAB_DATA)")
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


# --------------------------------------------------------------------------- image folder and zip


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


# --------------------------------------------------------------------------- the loader


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


def load_cifar10(
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 ``split`` ("train": 50,000 images, "test": 10,000) from local files.

    Args:
        root: the data root (see ``resolve_data_root``; None → the default), or directly a
            ``cifar-10-batches-py`` folder, an image folder, or a zip. Looked for, in order: pickle
            batches at ``root`` or ``root/cifar-10-batches-py``; an image folder at ``root``,
            ``root/cifar10`` or ``root/cifar10-jpeg-q75``; ``root/cifar10-jpeg-q75.zip``.
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
    check_split(split)
    source = _find_cifar_source(resolve_data_root(root))
    if not cache:
        return _decode_cifar(source, split)
    key = cache_key("cifar10", source.kind, split, _source_files(source, split))
    npz, meta = cache_paths(resolve_cache_dir(cache_dir), "cifar10", split, key)
    hit = read_cache(npz, meta, key)
    if hit is not None:
        return hit
    images, labels = _decode_cifar(source, split)
    write_cache(npz, meta, key, images, labels, source=source.path, kind=source.kind)
    return images, labels

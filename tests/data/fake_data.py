"""Tiny fake CIFAR-10 sets, written in tmp_path in each of the three formats the loader reads, and
where the real data files are (``SHARED``, present on this project's machines only).

Imported by the data tests (``conftest.py`` puts this folder on ``sys.path``). Every array is seeded.
"""

import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from implicitlab.data import CIFAR10_CLASSES

N_TRAIN_BATCH = 10  # images per fake train batch (two batches), one per class
N_TEST = 20  # two per class
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data of the checkout


def smooth_images(n, seed):
    """Low-frequency colour images (JPEG-friendly): 4×4 random blocks upsampled to 32×32."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    return np.ascontiguousarray(small.repeat(8, axis=1).repeat(8, axis=2))  # (n, 32, 32, 3)


def fake_cifar(seed=0):
    """{"train": (images, labels), "test": …} in 'official' order (classes interleaved)."""
    rng = np.random.default_rng(seed)
    train_labels = np.concatenate([rng.permutation(10) for _ in range(2)])
    test_labels = np.concatenate([rng.permutation(10) for _ in range(N_TEST // 10)])
    return {
        "train": (smooth_images(2 * N_TRAIN_BATCH, seed + 1), train_labels),
        "test": (smooth_images(N_TEST, seed + 2), test_labels),
    }


class _Py2StylePickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes, as the official cPickle'd CIFAR batches hold them."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def batch_dict(images, labels):
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # (N, 3072): R, G, B planes
    return {b"batch_label": b"fake batch", b"labels": [int(v) for v in labels], b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}  # fmt: skip


def dump_official_style(obj, path):
    """Protocol 2, bytes as py2 str, numpy globals under their numpy 1.x name numpy.core.multiarray."""
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(obj)
    raw = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    path.write_bytes(raw)


def write_pickle_dir(root, data, protocol="official"):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    images, labels = data["train"]
    for b in range(2):
        sl = slice(b * N_TRAIN_BATCH, (b + 1) * N_TRAIN_BATCH)
        batch = batch_dict(images[sl], labels[sl])
        if protocol == "official":
            dump_official_style(batch, d / f"data_batch_{b + 1}")
        else:
            with open(d / f"data_batch_{b + 1}", "wb") as f:
                pickle.dump(batch, f, protocol=protocol)
    batch = batch_dict(*data["test"])
    if protocol == "official":
        dump_official_style(batch, d / "test_batch")
    else:
        with open(d / "test_batch", "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
    return d


def encode(image, fmt):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _folder_items(data, fmt="PNG"):
    """(relative path, encoded bytes): the k-th image of a class in official order → NNNN.ext."""
    ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
    for split, (images, labels) in data.items():
        for c, name in enumerate(CIFAR10_CLASSES):
            for k, i in enumerate(np.flatnonzero(labels == c)):
                yield f"{split}/{name}/{k:04d}.{ext}", encode(images[i], fmt)


def write_folder(root, data, fmt="PNG"):
    for rel, raw in _folder_items(data, fmt):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(raw)
    return root


def write_zip(path, data, fmt="PNG", prefix=""):
    with zipfile.ZipFile(path, "w") as z:
        for rel, raw in _folder_items(data, fmt):
            z.writestr(prefix + rel, raw)
    return path


def class_grouped(images, labels):
    """Official order → the image-folder order: grouped by class, order within a class kept."""
    order = np.argsort(labels, kind="stable")
    return images[order], labels[order]

"""MNIST (``implicitlab.data.mnist``): the IDX files, raw and gzipped, and what is wrong with a bad one.
The fake files are built in tmp_path; one test reads the real test split in ../shared/data when present."""

import gzip
import hashlib
import struct

import numpy as np
import pytest

from implicitlab.data import DataError, load_mnist

from fake_data import SHARED


def _idx(array, magic):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def write_mnist(root, gz, n_train=7, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        for kind, arr, magic, nd in (("images", images, 2051, 3), ("labels", labels, 2049, 1)):
            raw = _idx(arr, magic)
            name = f"{prefix}-{kind}-idx{nd}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (root / name).write_bytes(raw)
        out[split] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_mnist_loads_raw_and_gzipped(tmp_path, gz):
    ref = write_mnist(tmp_path / "mnist", gz)
    for split in ("train", "test"):
        images, labels = load_mnist(tmp_path, split)  # found under root/mnist
        assert images.dtype == np.uint8 and images.shape == ref[split][0].shape
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images, ref[split][0])
        np.testing.assert_array_equal(labels, ref[split][1])


def test_mnist_errors(tmp_path):
    root = tmp_path / "m"
    write_mnist(root, gz=False)
    path = root / "t10k-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: expected 3920 data bytes for shape \(5, 28, 28\) after the header, got 3910"):
        load_mnist(root, "test")
    path.write_bytes(raw[:10])
    with pytest.raises(DataError, match=r"truncated; expected a 16-byte IDX header"):
        load_mnist(root, "test")
    path.write_bytes((root / "t10k-labels-idx1-ubyte").read_bytes())  # labels where images belong
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: expected IDX magic number 2051 .* got 2049"):
        load_mnist(root, "test")
    path.write_bytes(raw)
    (root / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.zeros(4, np.uint8), 2049))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: expected 5 labels"):
        load_mnist(root, "test")
    (root / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"no MNIST file t10k-labels-idx1-ubyte\[.gz\]"):
        load_mnist(root, "test")

    gzroot = tmp_path / "g"
    write_mnist(gzroot, gz=True)
    gzpath = gzroot / "train-images-idx3-ubyte.gz"
    gzpath.write_bytes(gzpath.read_bytes()[:-30])  # a cut-off download
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: cannot read \(EOFError"):
        load_mnist(gzroot, "train")
    gzpath.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: cannot read .*gzipped IDX"):
        load_mnist(gzroot, "train")


# --------------------------------------------------------------------------- the real files, when present

T10K_MD5 = {"t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea", "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}


@pytest.mark.skipif(not (SHARED / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(), reason="no ../shared/data/mnist")
def test_real_mnist_test_split():
    for name, md5 in T10K_MD5.items():
        with gzip.open(SHARED / "mnist" / f"{name}.gz", "rb") as f:
            assert hashlib.md5(f.read()).hexdigest() == md5
    images, labels = load_mnist(SHARED, "test")
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert np.bincount(labels).tolist()[:2] == [980, 1135]  # the official test-set class counts

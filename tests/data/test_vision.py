"""Vision data: CIFAR-10 (pickle, image folder, zip), MNIST IDX, cache, subsets, labels, standardisation.

Every fixture is built here, tiny, in tmp_path. One test reads the real files in ../shared/data
when they are present.
"""

import gzip
import hashlib
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from implicitlab.data import vision
from implicitlab.data.vision import (
    CIFAR10_CLASSES,
    DataError,
    balanced_subset,
    load_cifar10,
    load_mnist,
    random_label_mask,
    randomize_labels,
    resolve_cache_dir,
    resolve_data_root,
    standardize,
)

N_TRAIN_BATCH = 10  # images per fake train batch (two batches), one per class
N_TEST = 20  # two per class


def _smooth_images(n, seed):
    """Low-frequency colour images (JPEG-friendly): 4×4 random blocks upsampled to 32×32."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    return np.ascontiguousarray(small.repeat(8, axis=1).repeat(8, axis=2))  # (n, 32, 32, 3)


def _fake_cifar(seed=0):
    """{"train": (images, labels), "test": …} in 'official' order (classes interleaved)."""
    rng = np.random.default_rng(seed)
    train_labels = np.concatenate([rng.permutation(10) for _ in range(2)])
    test_labels = np.concatenate([rng.permutation(10) for _ in range(N_TEST // 10)])
    return {
        "train": (_smooth_images(2 * N_TRAIN_BATCH, seed + 1), train_labels),
        "test": (_smooth_images(N_TEST, seed + 2), test_labels),
    }


class _Py2StylePickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes, as the official cPickle'd CIFAR batches hold them."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _batch_dict(images, labels):
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # (N, 3072): R, G, B planes
    return {b"batch_label": b"fake batch", b"labels": [int(v) for v in labels], b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}  # fmt: skip


def _dump_official_style(obj, path):
    """Protocol 2, bytes as py2 str, numpy globals under their numpy 1.x name numpy.core.multiarray."""
    import io

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
        batch = _batch_dict(images[sl], labels[sl])
        if protocol == "official":
            _dump_official_style(batch, d / f"data_batch_{b + 1}")
        else:
            with open(d / f"data_batch_{b + 1}", "wb") as f:
                pickle.dump(batch, f, protocol=protocol)
    batch = _batch_dict(*data["test"])
    if protocol == "official":
        _dump_official_style(batch, d / "test_batch")
    else:
        with open(d / "test_batch", "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
    return d


def _encode(image, fmt):
    import io

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
                yield f"{split}/{name}/{k:04d}.{ext}", _encode(images[i], fmt)


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


@pytest.fixture
def data():
    return _fake_cifar()


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


# --------------------------------------------------------------------------- CIFAR-10 formats


@pytest.mark.parametrize("protocol", ["official", 2, 4, 5])
def test_pickle_batches_load_with_official_order(tmp_path, data, cache, protocol):
    write_pickle_dir(tmp_path / "d", data, protocol)
    for split in ("train", "test"):
        images, labels = load_cifar10(tmp_path / "d", split, cache_dir=cache)
        assert images.dtype == np.uint8 and images.shape == data[split][0].shape
        assert labels.dtype == np.int64 and labels.shape == (len(images),)
        np.testing.assert_array_equal(images, data[split][0])
        np.testing.assert_array_equal(labels, data[split][1])
    # the batches folder itself is also a root
    images, _ = load_cifar10(tmp_path / "d" / "cifar-10-batches-py", "test", cache=False)
    np.testing.assert_array_equal(images, data["test"][0])


def test_all_three_formats_give_the_same_images(tmp_path, data, cache):
    write_pickle_dir(tmp_path / "p", data)
    write_folder(tmp_path / "f", data)
    write_zip(tmp_path / "z.zip", data)
    for split in ("train", "test"):
        ref_images, ref_labels = class_grouped(*load_cifar10(tmp_path / "p", split, cache_dir=cache))
        for root in (tmp_path / "f", tmp_path / "z.zip"):
            images, labels = load_cifar10(root, split, cache_dir=cache)
            np.testing.assert_array_equal(labels, ref_labels)  # class order airplane … truck
            np.testing.assert_array_equal(images, ref_images)  # PNG: lossless, exactly equal
        # balanced_subset picks the same images from either order
        idx_p = balanced_subset(load_cifar10(tmp_path / "p", split, cache_dir=cache)[1], 10, seed=3)
        idx_f = balanced_subset(labels, 10, seed=3)
        pimg = load_cifar10(tmp_path / "p", split, cache_dir=cache)[0][idx_p]
        fimg = images[idx_f]
        key = lambda a: sorted(x.tobytes() for x in a)  # noqa: E731
        assert key(pimg) == key(fimg)


def test_jpeg_zip_with_prefix_and_default_name(tmp_path, data, cache):
    write_zip(tmp_path / "cifar10-jpeg-q75.zip", data, fmt="JPEG", prefix="cifar10/")
    images, labels = load_cifar10(tmp_path, "test", cache_dir=cache)  # found by name under the root
    ref_images, ref_labels = class_grouped(*data["test"])
    np.testing.assert_array_equal(labels, ref_labels)
    err = np.abs(images.astype(np.int16) - ref_images.astype(np.int16))
    assert err.mean() < 3 and err.max() < 64  # JPEG q95 of smooth images: a few grey levels


def test_file_names_sorted_numerically(tmp_path, cache):
    data = {"train": _fake_cifar()["train"], "test": _fake_cifar()["test"]}
    images, labels = data["test"]
    for c, name in enumerate(CIFAR10_CLASSES):
        (tmp_path / "test" / name).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(labels == c)):
            (tmp_path / "test" / name / f"{k * 5}.png").write_bytes(_encode(images[i], "PNG"))  # 0.png, 5.png
    got, _ = load_cifar10(tmp_path, "test", cache=False)
    np.testing.assert_array_equal(got, class_grouped(images, labels)[0])


def test_preference_order_pickle_over_folder_over_zip(tmp_path, data, cache):
    other = _fake_cifar(seed=10)
    write_zip(tmp_path / "cifar10-jpeg-q75.zip", other)
    write_folder(tmp_path / "cifar10", data)
    got, _ = load_cifar10(tmp_path, "test", cache=False)
    np.testing.assert_array_equal(got, class_grouped(*data["test"])[0])  # folder beats zip
    write_pickle_dir(tmp_path, other)
    got, _ = load_cifar10(tmp_path, "test", cache=False)
    np.testing.assert_array_equal(got, other["test"][0])  # pickles beat both


# --------------------------------------------------------------------------- the restricted unpickler


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_malicious_pickle_is_refused_without_side_effect(tmp_path, cache, protocol):
    marker = tmp_path / "pwned"
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, f, protocol=protocol)
    with pytest.raises(DataError, match=r"test_batch: refusing to unpickle (posix|nt|os)\.system"):
        load_cifar10(tmp_path, "test", cache_dir=cache)
    assert not marker.exists()
    # sanity: the crafted file does run code under the plain unpickler
    with open(d / "test_batch", "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_builtins_eval_is_refused(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "test_batch").write_bytes(pickle.dumps([_EvalEvil()], protocol=2))
    with pytest.raises(DataError, match=r"refusing to unpickle (__builtin__|builtins)\.eval"):
        load_cifar10(tmp_path, "test", cache=False)


def test_codecs_encode_only_latin1(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    # GLOBAL _codecs.encode, then ("x", "rot13") — an allowed global with a disallowed codec
    raw = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."
    (d / "test_batch").write_bytes(raw)
    with pytest.raises(DataError, match="latin-1"):
        load_cifar10(tmp_path, "test", cache=False)


# --------------------------------------------------------------------------- errors


def test_missing_and_malformed_sources(tmp_path, data):
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        load_cifar10(tmp_path / "nope", "test", cache=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no CIFAR-10 found; expected cifar-10-batches-py"):
        load_cifar10(tmp_path / "empty", "test", cache=False)
    with pytest.raises(ValueError, match="split"):
        load_cifar10(tmp_path, "val")

    d = write_pickle_dir(tmp_path / "p", data)
    raw = (d / "test_batch").read_bytes()
    (d / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="test_batch: not a readable CIFAR-10 python pickle batch"):
        load_cifar10(tmp_path / "p", "test", cache=False)
    (d / "test_batch").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="expected a CIFAR-10 batch"):
        load_cifar10(tmp_path / "p", "test", cache=False)
    (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"expected 'data' as uint8 \(N, 3072\)"):
        load_cifar10(tmp_path / "p", "test", cache=False)
    (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}))
    with pytest.raises(DataError, match=r"labels in 0..9"):
        load_cifar10(tmp_path / "p", "test", cache=False)
    (d / "data_batch_2").rename(d / "data_batch_3")
    with pytest.raises(DataError, match="without gaps"):
        load_cifar10(tmp_path / "p", "train", cache=False)

    f = write_folder(tmp_path / "f", data)
    for p in (f / "test" / "truck").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"test: expected images for every CIFAR-10 class, none for truck"):
        load_cifar10(f, "test", cache=False)
    from PIL import Image

    Image.new("RGB", (31, 32)).save(f / "test" / "truck" / "0000.png")
    with pytest.raises(DataError, match=r"0000.png: expected a 32×32 image, got 31×32"):
        load_cifar10(f, "test", cache=False)
    (f / "test" / "truck" / "0000.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="0000.png: not a readable image"):
        load_cifar10(f, "test", cache=False)
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(DataError, match="bad.zip"):
        load_cifar10(tmp_path / "bad.zip", "test", cache=False)


# --------------------------------------------------------------------------- the cache


def _count_decodes(monkeypatch):
    calls = []
    real = vision._decode_cifar

    def counting(source, split):
        calls.append((source.kind, split))
        return real(source, split)

    monkeypatch.setattr(vision, "_decode_cifar", counting)
    return calls


def test_cache_hit_miss_and_source_change(tmp_path, data, cache, monkeypatch):
    calls = _count_decodes(monkeypatch)
    d = write_pickle_dir(tmp_path, data)
    first = load_cifar10(tmp_path, "test", cache_dir=cache)
    assert len(calls) == 1 and len(list(cache.glob("cifar10-test-*.npz"))) == 1
    info = json.loads(next(cache.glob("cifar10-test-*.json")).read_text())
    assert info["format"] == "pickle" and info["images"] == [N_TEST, 32, 32, 3]
    second = load_cifar10(tmp_path, "test", cache_dir=cache)
    assert len(calls) == 1  # a hit
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    load_cifar10(tmp_path, "train", cache_dir=cache)
    assert len(calls) == 2  # the other split is its own entry
    # an edited source is a miss
    new = _fake_cifar(seed=5)
    (d / "test_batch").unlink()
    _dump_official_style(_batch_dict(*new["test"]), d / "test_batch")
    st = (d / "test_batch").stat()
    os.utime(d / "test_batch", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    images, _ = load_cifar10(tmp_path, "test", cache_dir=cache)
    assert len(calls) == 3
    np.testing.assert_array_equal(images, new["test"][0])
    # cache=False neither reads nor writes
    n_files = len(list(cache.iterdir()))
    load_cifar10(tmp_path, "test", cache_dir=cache, cache=False)
    assert len(calls) == 4 and len(list(cache.iterdir())) == n_files


def test_cache_dir_from_environment(tmp_path, data, monkeypatch):
    write_pickle_dir(tmp_path / "d", data)
    monkeypatch.setenv("IMPLICITLAB_CACHE", str(tmp_path / "envcache"))
    assert resolve_cache_dir() == tmp_path / "envcache"
    assert resolve_cache_dir(tmp_path / "x") == tmp_path / "x"
    load_cifar10(tmp_path / "d", "test")
    assert len(list((tmp_path / "envcache").glob("*.npz"))) == 1
    monkeypatch.delenv("IMPLICITLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == tmp_path / "xdg" / "implicitlab"


@pytest.mark.parametrize("damage", ["npz_bytes", "npz_truncated", "checksum", "meta_garbage", "meta_missing"])
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, data, cache, monkeypatch, damage):
    calls = _count_decodes(monkeypatch)
    write_zip(tmp_path / "c.zip", data)
    ref = load_cifar10(tmp_path / "c.zip", "test", cache_dir=cache)
    npz, meta = next(cache.glob("*.npz")), next(cache.glob("*.json"))
    if damage == "npz_bytes":
        raw = bytearray(npz.read_bytes())
        raw[len(raw) // 2] ^= 0xFF  # inside the image array
        npz.write_bytes(bytes(raw))
    elif damage == "npz_truncated":
        npz.write_bytes(npz.read_bytes()[:1000])
    elif damage == "checksum":
        info = json.loads(meta.read_text())
        info["sha256"] = "0" * 64
        meta.write_text(json.dumps(info))
    elif damage == "meta_garbage":
        meta.write_text("{not json")
    else:
        meta.unlink()
    again = load_cifar10(tmp_path / "c.zip", "test", cache_dir=cache)
    assert len(calls) == 2  # rebuilt
    np.testing.assert_array_equal(again[0], ref[0])
    load_cifar10(tmp_path / "c.zip", "test", cache_dir=cache)
    assert len(calls) == 2  # and the rebuilt cache is trusted again


def test_cached_arrays_checksum_catches_a_silent_array_edit(tmp_path, data, cache, monkeypatch):
    """A valid npz whose arrays differ from what the checksum covers (no zip CRC error) is rebuilt."""
    calls = _count_decodes(monkeypatch)
    write_pickle_dir(tmp_path, data)
    images, labels = load_cifar10(tmp_path, "test", cache_dir=cache)
    npz = next(cache.glob("*.npz"))
    np.savez(npz, images=images, labels=(labels + 1) % 10)
    _, again = load_cifar10(tmp_path, "test", cache_dir=cache)
    assert len(calls) == 2
    np.testing.assert_array_equal(again, labels)


# --------------------------------------------------------------------------- data root


def test_data_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("IMPLICITLAB_DATA", raising=False)
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    assert resolve_data_root() == Path("data")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert resolve_data_root() == Path("..") / "shared" / "data"
    monkeypatch.setenv("IMPLICITLAB_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    with pytest.raises(DataError, match=r"env: no such file or folder"):
        load_cifar10(split="test", cache=False)  # the env root, named in the error


# --------------------------------------------------------------------------- MNIST


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


# --------------------------------------------------------------------------- subsets and labels


def test_balanced_subset_sizes_reproducibility_nesting():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=2000)
    for n in (0, 1, 7, 10, 95, 500):
        idx = balanced_subset(labels, n, seed=1)
        assert idx.dtype == np.int64 and len(idx) == n == len(np.unique(idx))
        counts = np.bincount(labels[idx], minlength=10)
        assert counts.max() - counts.min() <= (1 if n % 10 else 0) and counts.min() == n // 10
        np.testing.assert_array_equal(idx, balanced_subset(labels, n, seed=1))
    assert not np.array_equal(balanced_subset(labels, 100, seed=1), balanced_subset(labels, 100, seed=2))
    prev = set()
    for n in range(0, 400, 13):  # nested in n for a fixed seed
        cur = set(balanced_subset(labels, n, seed=4).tolist())
        assert prev <= cur
        prev = cur


def test_balanced_subset_reachability():
    labels = np.array([0] * 3 + [1] * 5 + [2] * 5)
    assert np.bincount(labels[balanced_subset(labels, 11, seed=0)]).tolist() == [3, 4, 4]  # remainder skips class 0
    with pytest.raises(ValueError, match=r"largest reachable n: 11"):
        balanced_subset(labels, 12, seed=0)
    assert len(np.unique(labels[balanced_subset(labels, 3, seed=0, num_classes=4)])) == 3  # n < K: distinct classes
    with pytest.raises(ValueError, match="class-balanced subset of 4 needs 1 examples per class; the smallest class has 0"):
        balanced_subset(labels, 4, seed=0, num_classes=4)  # class 3 has no examples
    with pytest.raises(ValueError, match="n must be"):
        balanced_subset(labels, -1)


def test_randomize_labels_exact_fraction_and_seed():
    labels = np.random.default_rng(0).integers(0, 10, size=10_000)
    before = labels.copy()
    for p in (0.0, 0.1, 0.25, 1.0):
        out = randomize_labels(labels, p, 10, seed=3)
        mask = random_label_mask(len(labels), p, seed=3)
        assert out.dtype == np.int64 and mask.sum() == round(p * len(labels))
        np.testing.assert_array_equal(out[~mask], labels[~mask])  # only the chosen ones are redrawn
        np.testing.assert_array_equal(out, randomize_labels(labels, p, 10, seed=3))
    np.testing.assert_array_equal(labels, before)  # input untouched
    assert not np.array_equal(randomize_labels(labels, 0.5, 10, seed=1), randomize_labels(labels, 0.5, 10, seed=2))
    # uniform over all classes (Zhang et al.): a redrawn label keeps its value with probability 1/K
    out = randomize_labels(labels, 1.0, 10, seed=7)
    assert abs((out == labels).mean() - 0.1) < 0.01
    assert np.bincount(out, minlength=10).min() > 900
    with pytest.raises(ValueError, match="fraction"):
        randomize_labels(labels, 1.5, 10)
    with pytest.raises(ValueError, match=r"0..4"):
        randomize_labels(labels, 0.5, 5)


# --------------------------------------------------------------------------- standardisation


def test_standardize_train_stats_applied_to_test():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(50, 32, 32, 3), dtype=np.uint8)
    test = rng.integers(0, 200, size=(20, 32, 32, 3), dtype=np.uint8)
    x, mean, std = standardize(train)
    assert x.shape == (50, 3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
    ref = train.astype(np.float64) / 255
    np.testing.assert_allclose(mean.numpy(), ref.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), ref.std(axis=(0, 1, 2)), rtol=1e-6)
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-5, rtol=0)
    xt = standardize(test, mean, std, dtype=torch.float64).images
    assert xt.dtype == torch.float64
    expected = (test.astype(np.float64) / 255 - ref.mean(axis=(0, 1, 2))) / ref.std(axis=(0, 1, 2))
    np.testing.assert_allclose(xt.numpy(), expected.transpose(0, 3, 1, 2), rtol=1e-12, atol=1e-12)
    # float input on the [0, 1] scale gives the same
    xf = standardize(torch.from_numpy(ref), dtype=torch.float64).images
    np.testing.assert_allclose(xf.numpy(), standardize(train, dtype=torch.float64).images.numpy(), atol=1e-12)


def test_standardize_grayscale_and_errors():
    mn = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    s = standardize(mn)
    assert s.images.shape == (6, 1, 28, 28) and s.mean.shape == (1,)
    with pytest.raises(ValueError, match="std must be positive"):
        standardize(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="one value per channel"):
        standardize(mn, [0.1, 0.2], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        standardize(np.zeros((4, 4), np.uint8))


# --------------------------------------------------------------------------- the real files, when present

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
T10K_MD5 = {"t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea", "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}


@pytest.mark.skipif(not (SHARED / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(), reason="no ../shared/data/mnist")
def test_real_mnist_test_split():
    for name, md5 in T10K_MD5.items():
        with gzip.open(SHARED / "mnist" / f"{name}.gz", "rb") as f:
            assert hashlib.md5(f.read()).hexdigest() == md5
    images, labels = load_mnist(SHARED, "test")
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert np.bincount(labels).tolist()[:2] == [980, 1135]  # the official test-set class counts


@pytest.mark.skipif(not (SHARED / "cifar10-jpeg-q75.zip").is_file(), reason="no ../shared/data/cifar10-jpeg-q75.zip")
def test_real_cifar_zip_first_100_test_images():
    source = vision._find_cifar_source(SHARED)
    assert source == vision._Source("zip", SHARED / "cifar10-jpeg-q75.zip")
    images, labels = vision._read_image_folder(source, "test", per_class_limit=10)
    assert images.shape == (100, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 10))
    assert 80 < images.mean() < 160 and images.std() > 30  # natural images, not blanks
    assert len({im.tobytes() for im in images}) == 100

"""CIFAR-10 (``implicitlab.data.cifar10``): pickle batches, image folder, zip; their order, preference
and errors. The fake sets are built in tmp_path (``fake_data``); one test reads the real zip in
../shared/data when it is present.
"""

import pickle

import numpy as np
import pytest

from implicitlab.data import CIFAR10_CLASSES, DataError, balanced_subset, cifar10, load_cifar10

from fake_data import SHARED, class_grouped, encode, fake_cifar, write_folder, write_pickle_dir, write_zip

# --------------------------------------------------------------------------- the three formats


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
    images, labels = fake_cifar()["test"]
    for c, name in enumerate(CIFAR10_CLASSES):
        (tmp_path / "test" / name).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(labels == c)):
            (tmp_path / "test" / name / f"{k * 5}.png").write_bytes(encode(images[i], "PNG"))  # 0.png, 5.png
    got, _ = load_cifar10(tmp_path, "test", cache=False)
    np.testing.assert_array_equal(got, class_grouped(images, labels)[0])


def test_preference_order_pickle_over_folder_over_zip(tmp_path, data, cache):
    other = fake_cifar(seed=10)
    write_zip(tmp_path / "cifar10-jpeg-q75.zip", other)
    write_folder(tmp_path / "cifar10", data)
    got, _ = load_cifar10(tmp_path, "test", cache=False)
    np.testing.assert_array_equal(got, class_grouped(*data["test"])[0])  # folder beats zip
    write_pickle_dir(tmp_path, other)
    got, _ = load_cifar10(tmp_path, "test", cache=False)
    np.testing.assert_array_equal(got, other["test"][0])  # pickles beat both


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


# --------------------------------------------------------------------------- the real files, when present


@pytest.mark.skipif(not (SHARED / "cifar10-jpeg-q75.zip").is_file(), reason="no ../shared/data/cifar10-jpeg-q75.zip")
def test_real_cifar_zip_first_100_test_images():
    source = cifar10._find_cifar_source(SHARED)
    assert source == cifar10._Source("zip", SHARED / "cifar10-jpeg-q75.zip")
    images, labels = cifar10._read_image_folder(source, "test", per_class_limit=10)
    assert images.shape == (100, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 10))
    assert 80 < images.mean() < 160 and images.std() > 30  # natural images, not blanks
    assert len({im.tobytes() for im in images}) == 100

"""The decoded-array cache (``implicitlab.data.cache``), as ``load_cifar10`` uses it: hits, misses
on an edited source, and corrupt entries detected and rebuilt."""

import json
import os

import numpy as np
import pytest

from implicitlab.data import cifar10, load_cifar10

from fake_data import N_TEST, batch_dict, dump_official_style, fake_cifar, write_pickle_dir, write_zip


def _count_decodes(monkeypatch):
    calls = []
    real = cifar10._decode_cifar

    def counting(source, split):
        calls.append((source.kind, split))
        return real(source, split)

    monkeypatch.setattr(cifar10, "_decode_cifar", counting)
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
    new = fake_cifar(seed=5)
    (d / "test_batch").unlink()
    dump_official_style(batch_dict(*new["test"]), d / "test_batch")
    st = (d / "test_batch").stat()
    os.utime(d / "test_batch", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    images, _ = load_cifar10(tmp_path, "test", cache_dir=cache)
    assert len(calls) == 3
    np.testing.assert_array_equal(images, new["test"][0])
    # cache=False neither reads nor writes
    n_files = len(list(cache.iterdir()))
    load_cifar10(tmp_path, "test", cache_dir=cache, cache=False)
    assert len(calls) == 4 and len(list(cache.iterdir())) == n_files


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


def test_write_then_read_and_a_wrong_key_is_a_miss(tmp_path):
    from implicitlab.data.cache import cache_paths, read_cache, write_cache

    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    labels = np.array([3, 1], dtype=np.int64)
    npz, meta = cache_paths(tmp_path / "c", "toy", "test", "ab" * 32)
    assert npz.name == "toy-test-" + "ab" * 8 + ".npz" and meta.suffix == ".json"
    assert read_cache(npz, meta, "ab" * 32) is None  # nothing yet
    write_cache(npz, meta, "ab" * 32, images, labels, source=tmp_path / "src", kind="zip")
    got = read_cache(npz, meta, "ab" * 32)
    np.testing.assert_array_equal(got[0], images)
    np.testing.assert_array_equal(got[1], labels)
    assert got[1].dtype == np.int64
    assert read_cache(npz, meta, "cd" * 32) is None  # another source's key
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted([npz.name, meta.name])  # no temp files left

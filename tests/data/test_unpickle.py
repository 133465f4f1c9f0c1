"""The restricted unpickler (``implicitlab.data.unpickle``): a crafted batch cannot run code.

The first test goes through ``load_cifar10`` (the loader does use the restricted unpickler); the
others call ``unpickle_batch`` directly.
"""

import os
import pickle

import pytest

from implicitlab.data import DataError, load_cifar10
from implicitlab.data.unpickle import unpickle_batch


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
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps([_EvalEvil()], protocol=2))
    with pytest.raises(DataError, match=r"refusing to unpickle (__builtin__|builtins)\.eval"):
        unpickle_batch(path)


def test_codecs_encode_only_latin1(tmp_path):
    path = tmp_path / "test_batch"
    # GLOBAL _codecs.encode, then ("x", "rot13") — an allowed global with a disallowed codec
    raw = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."
    path.write_bytes(raw)
    with pytest.raises(DataError, match="latin-1"):
        unpickle_batch(path)

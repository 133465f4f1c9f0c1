"""derive_seed: one rule for derived seeds, deterministic, distinct across streams and indices."""

import numpy as np
import pytest
import torch

from implicitlab.seeds import derive_seed


def test_matches_an_independent_seedsequence_computation():
    import binascii  # the same CRC-32 as zlib's, from another module

    code = binascii.crc32(b"init")
    state = np.random.SeedSequence([5, code, 1, 3]).generate_state(2, np.uint32)
    expected = ((int(state[1]) << 32) | int(state[0])) & (2**53 - 1)
    assert derive_seed(5, "init", 3) == expected


def test_deterministic_and_in_range():
    a = [derive_seed(s, "batches", i) for s in range(20) for i in range(20)]
    assert a == [derive_seed(s, "batches", i) for s in range(20) for i in range(20)]
    assert all(0 <= v < 2**53 for v in a)
    assert all(float(v) == v for v in a)  # exact in a float64 column
    torch.Generator().manual_seed(max(a))  # accepted by torch
    np.random.default_rng(max(a))  # and by numpy


def test_streams_and_indices_do_not_collide():
    seeds = {(s, name, i): derive_seed(s, name, i)
             for s in range(50) for name in ("init", "data", "batches") for i in range(50)}
    assert len(set(seeds.values())) == len(seeds)
    # the collision ad-hoc arithmetic makes: seed + 1 of run s is the plain seed of run s + 1
    assert derive_seed(0, "data", 1) != derive_seed(1, "data", 0)
    # indices are not concatenated ambiguously: (1, 23) vs (12, 3), and (1,) vs (1, 0)
    assert derive_seed(0, "x", 1, 23) != derive_seed(0, "x", 12, 3)
    assert derive_seed(0, "x", 1) != derive_seed(0, "x", 1, 0)


@pytest.mark.parametrize("args", [(-1, "init"), (0, "init", -2), (1.5, "init"), (True, "init"), (0, "")])
def test_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        derive_seed(*args)


def test_replicate_seed_is_the_config_seed_of_replicate_r():
    from implicitlab.seeds import replicate_seed

    assert [replicate_seed(5, r) for r in range(3)] == [5, 6, 7]  # replicate r of seed=5 is the run seed=5+r
    with pytest.raises(ValueError):
        replicate_seed(-1, 0)

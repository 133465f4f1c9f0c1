"""Seeds: the one rule that derives the seed of a random stream from a run's seed.

A config carries one ``seed``. It seeds the experiment's primary draw directly (its data set or
training subset, so that subsets stay nested across sizes); every other random stream — the
initialisation of run i of an ensemble, batch orders, perturbations, test subsets, random labels,
Lanczos start vectors — is seeded by

    derive_seed(seed, stream, *index)

A *replicate* of an experiment (``repetitions`` runs of its whole pipeline, each with its own data
subset, initialisation and noise) is the same config with seed ``replicate_seed(seed, r) = seed + r``:
replicate r of ``seed=s`` is exactly the run ``--set seed=s+r``, so a replicate can be rerun alone.

a hash of the config's seed, the stream's name and its indices by NumPy's ``SeedSequence``
(O'Neill's PCG seed hashing, the mechanism NumPy recommends for independent streams). Different
names or indices give streams that do not overlap, whatever the seed; ad-hoc arithmetic such as
``seed + 1`` or ``seed * P + 7919 * i`` does not (``seed + 1`` of one run is the plain seed of the
next). Every module that needs a derived seed calls this function; none writes its own formula.
"""

from __future__ import annotations

import zlib

import numpy as np


def derive_seed(seed: int, stream: str, *index: int) -> int:
    """The seed of the random stream ``stream`` (index ``index``) of a run seeded with ``seed``.

    Args:
        seed: the config's seed, a non-negative integer.
        stream: what the stream draws (``"init"``, ``"data"``, ``"batches"``, ``"perturbation"``, …).
        index: non-negative integers that tell streams of one name apart (run i, repetition r).

    Returns:
        An integer in [0, 2⁵³), a valid seed for ``torch.Generator.manual_seed`` and
        ``numpy.random.default_rng``; the same for the same arguments on every platform. 53 bits
        so that a seed stays exact in a float64 table column (one with NaN rows, or read back
        from CSV); two of a run's streams then share a seed with probability ~n²/2⁵⁴.
    """
    values = (seed, *index)
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in values):
        raise ValueError(f"seed and indices must be non-negative integers, got seed={seed!r}, index={index!r}")
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream must be a non-empty name, got {stream!r}")
    entropy = [int(seed), zlib.crc32(stream.encode()), len(index), *(int(i) for i in index)]
    low, high = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return (int(high) << 32 | int(low)) & (2**53 - 1)


def replicate_seed(seed: int, r: int) -> int:
    """The config seed of replicate ``r`` of a config seeded with ``seed``: ``seed + r`` (module docstring)."""
    if isinstance(seed, bool) or isinstance(r, bool) or int(seed) != seed or int(r) != r or seed < 0 or r < 0:
        raise ValueError(f"seed and replicate must be non-negative integers, got {seed!r}, {r!r}")
    return int(seed) + int(r)
